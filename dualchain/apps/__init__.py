"""The chain applications: the state machines the two ledgers order blocks for.

- ``ctbc``: the main chain's application: validator registry and committees elected by
  reputation, equivocation evidence, FL model versions re-executed by the committee (``fl``), and
  in single-chain mode the management transactions too.
- ``cmbc``: the management chain's application: client registrations, state reports, anchors,
  node joins, groups and task plans (the DDMLTS scheduler re-run by every replica).
- ``factory``: the composition root that hands a chain daemon its application.

The ledger engine (``dualchain.chain``) knows them only through ``dualchain.chain.app``.
"""
