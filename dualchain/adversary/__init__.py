"""Attacks a researcher can switch on, as pure strategy objects (issue 15).

The transport and process code (client worker, node, committee) only asks a strategy what to do;
the strategies themselves do no I/O and are deterministic for their seed, so an attack can be
replayed identically through every detector.

Modules:

- ``client``: client attacks made by name from a config dict (``make_client_attack``): sign flip,
  scaling, Gaussian noise, label flip and backdoor trigger (training-time data poisoning), lazy
  copying (seed 004 §III-C), free riding, dropping out (seed 000 Fig. 6's bad nodes).
- ``node``: the compromised aggregator of seed 003 §V-E (``w <- w - rho q``, ``q ~ N(0, I)``).
- ``replica``: byzantine CTBC replicas a chain daemon loads from its config
  (``{"strategy": "equivocate"}``: conflicting votes and proposals).
- ``metrics``: precision, recall and false-positive rate of per-update detection decisions.

The detectors live in ``dualchain.learning`` (``watermark``, ``contribution``, ``robust``).
"""
