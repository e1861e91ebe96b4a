"""Pure scheduling algorithms: state vectors, clustering, join placement, DDMLTS, OLAR, baselines.

No I/O; deterministic for a given seed so every CMBC replica can re-execute them.
"""
