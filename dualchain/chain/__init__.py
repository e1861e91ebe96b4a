"""The generic ledger engine: identities (ML-DSA), canonical encoding, transactions and blocks,
Merkle trees, validation, the SQLite block store, the blob store, the mempool, the two consensus
engines (committee BFT, proof of work) and the chain daemon that runs them.

Nothing here knows about federated learning or scheduling: the applications (``dualchain.apps``)
plug in through ``app.py``'s interfaces, and a daemon is handed its application by the
composition root (``dualchain.apps.factory``). ``lint-imports`` checks that nothing here imports
them (pyproject.toml, docs/architecture.md).
"""
