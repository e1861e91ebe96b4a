"""Process runtime shared by every launcher (``dualchain up``, the benches, the integration-test
harness): the supervisor that starts and stops processes (``supervisor``) and the child side of
its die-with-parent contract (``lifeline``). Imports nothing else of dualchain, so deploy, bench
and the tests can all use it without import cycles."""
