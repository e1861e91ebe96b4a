"""Consensus engines: committee BFT (CTBC) and, later, proof of work (CMBC)."""
