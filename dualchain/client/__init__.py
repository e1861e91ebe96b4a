"""The client (FL device) process: local training, ML-DSA signed uploads, state reports."""
