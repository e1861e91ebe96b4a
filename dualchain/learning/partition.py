"""Split a labelled training set among federated clients.

``partition`` returns one array of sample indices per client. Schemes:

- ``iid``: a random permutation cut into near-equal parts.
- ``dirichlet``: label skew; for every class a share vector drawn from Dirichlet(alpha) decides how
  that class's samples are split among clients (small alpha: each client sees few classes).
- ``shards``: the pathological non-IID split of McMahan et al.: samples sorted by label, cut into
  ``clients * shards_per_client`` contiguous shards, and each client is dealt ``shards_per_client``
  random shards.

Every scheme is deterministic for a seed, uses every index at most once (in fact exactly once) and
gives each client at least one sample:

- ``iid`` needs ``len(labels) >= clients``; parts differ in size by at most one.
- ``shards`` needs ``len(labels) >= clients * shards_per_client`` so no shard is empty.
- ``dirichlet`` can leave a client empty by chance; each empty client (in id order) then takes one
  sample from the client currently holding the most (lowest id on ties, its highest index). This
  needs ``len(labels) >= clients`` and never empties the donor, since a donor has at least two
  samples whenever some client has none.

Each returned array is sorted ascending: the order carries no information, training shuffles.
"""

from __future__ import annotations

import numpy as np

SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "shards")


def partition(
    labels: np.ndarray,
    clients: int,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """Indices (int64, ascending) of each client's samples; see the module docstring."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if clients < 1:
        raise ValueError(f"clients must be at least 1, got {clients}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    n = labels.shape[0]
    if n < clients:
        raise ValueError(f"{n} samples cannot give each of {clients} clients one sample")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = _iid(n, clients, rng)
    elif scheme == "dirichlet":
        if not alpha > 0:
            raise ValueError(f"dirichlet alpha must be positive, got {alpha}")
        parts = _dirichlet(labels, clients, alpha, rng)
    else:
        if shards_per_client < 1:
            raise ValueError(f"shards_per_client must be at least 1, got {shards_per_client}")
        if n < clients * shards_per_client:
            raise ValueError(
                f"{n} samples cannot fill {clients} x {shards_per_client} non-empty shards"
            )
        parts = _shards(labels, clients, shards_per_client, rng)
    return [np.sort(p).astype(np.int64) for p in parts]


def _iid(n: int, clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(n), clients))


def _dirichlet(
    labels: np.ndarray, clients: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    buckets: list[list[np.ndarray]] = [[] for _ in range(clients)]
    for cls in np.unique(labels):  # ascending, so the draw order is fixed
        idx = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * idx.size).astype(np.int64)
        for client, piece in enumerate(np.split(idx, cuts)):
            buckets[client].append(piece)
    parts = [np.concatenate(b) if b else np.empty(0, np.int64) for b in buckets]
    return _fill_empty(parts)


def _fill_empty(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Give each empty client one sample from the largest client (see the module docstring)."""
    parts = [np.sort(p) for p in parts]
    for client in range(len(parts)):
        if parts[client].size == 0:
            donor = int(np.argmax([p.size for p in parts]))  # first maximum: lowest id
            parts[client] = parts[donor][-1:]
            parts[donor] = parts[donor][:-1]
    return parts


def _shards(
    labels: np.ndarray, clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    # Stable sort: equal labels keep index order, so the shards do not depend on the sort algorithm.
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, clients * shards_per_client)
    dealt = rng.permutation(len(shards)).reshape(clients, shards_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in dealt]
