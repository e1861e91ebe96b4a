"""Pure learning code: no network or process I/O (datasets read local files only), deterministic for
a seed, so every replica that re-executes a step gets the same result.

Modules:

- ``datasets``: ``load_dataset`` for digits (scikit-learn), MNIST and Fashion-MNIST (IDX files),
  CIFAR-10/100 (python pickles), as normalised float32 (N, C, H, W) arrays, or a user's loader.
- ``partition``: splitting a training set among clients (iid, Dirichlet label skew, shards).
- ``models``: the CNNs of seed 000 §5.1 (torch) or a user's factory, seeded initialisation, flat
  float32 views.
- ``plugins``: a user's model, dataset or aggregation rule by import path (docs/plugins.md).
- ``training``: local SGD for a task of m batches, evaluation, the centralised baseline (torch).
- ``codec``: byte format of parameter vectors, chunking and hash-checked reassembly (numpy only).
- ``aggregation``: staleness-weighted asynchronous aggregation (seed 000 eq. 2), FedAsync staleness
  functions, FedAvg, and the admission checks on updates (numpy only, byte-identical on replicas).
- ``watermark``: PN watermarks on updates and copy detection (seed 004 Algorithm 2).
- ``contribution``: DBSCAN clustering of the update pool, keep / discard (seed 002 Algorithm 4).
- ``robust``: coordinate-wise median, trimmed mean, Krum and Multi-Krum.
- ``fair``: fair aggregation by contribution and sample counts (seed 002 eq. II.4).
- ``rewards``: reward lists in integer micro-units, conservation checks, the ``Balances`` ledger.
- ``privacy``: local DP noise, dp-accounting's RDP accountant, per-client budgets (seed 004).
- ``dp_training``: local training with per-example clipping and noisy steps (torch).
- ``mining_split``: the training/mining compute split of seed 004 §III-B.

``codec``, ``aggregation``, ``watermark``, ``contribution``, ``robust``, ``fair``, ``rewards``,
``privacy`` and ``mining_split`` never import torch, so chain daemons and validators can use them.
"""
