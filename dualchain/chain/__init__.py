"""The generic ledger engine: identities (ML-DSA), canonical encoding, transactions and blocks,
Merkle trees, validation, the SQLite block store, the blob store and the mempool.

Nothing here knows about federated learning; chain applications plug in on top.
"""
