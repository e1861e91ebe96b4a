"""The client (FL device) process: registration, tasks, local training, ML-DSA signed uploads,
buffering while disconnected, state reports.

Modules: ``config`` (the JSON config), ``main`` (the process), ``worker`` (the loop),
``policies`` (backoff, buffered-run averaging, clipping, offline windows), ``measure`` (the eq. 8
inputs it reports), ``links`` (its node's and CMBC's RPCs), ``offline`` (while the node is out
of reach), ``trainer`` (its data and the torch side), ``errors``, ``metrics`` (Prometheus)."""
