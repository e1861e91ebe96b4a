"""dualchain: blockchain-based asynchronous federated learning on a dual chain (CTBC + CMBC)."""

__version__ = "0.1.0"
