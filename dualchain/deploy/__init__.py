"""Testbeds and their files: the plan of a `dualchain up` testbed (``plan``), its files
(``files``), the launcher that runs it (``up``, ``report``, ``status``, ``state``), container
stacks (``compose``, ``swarm``, ``documents``), certificates, chain testnets, network namespaces
and link emulation, the health probe. The command line is ``dualchain.cli``."""
