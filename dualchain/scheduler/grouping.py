"""Client groups: dispersion (eq. 9), dynamic clustering (Algorithm 1), newcomer placement
(Algorithm 2) and the choice of the server node that manages each group."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dualchain.scheduler.state import DECIMALS, EQUAL_WEIGHTS, ClientState, StateWeights, gamma

# K + 1 groups replace K only if they cut the mean dispersion to below this fraction. Any
# finer partition lowers dispersion somewhat, so "lower" alone would always run to k_max.
# Halving structureless spread along its main axis leaves about 0.5 (uniform) to 0.6
# (Gaussian) of it; separating real groups leaves far less. 0.4 stays clear of the former.
SPLIT_GAIN = 0.4


def dispersion(gammas: np.ndarray) -> float:
    """Eq. 9 for one group: sqrt(mean ||gamma_i||^2 - ||mean gamma||^2), i.e. the RMS distance
    of the members from their centroid (see docs/scheduling.md for the reading); 0.0 for an
    empty or one-member group."""
    if len(gammas) < 2:
        return 0.0
    spread = np.sum((gammas - gammas.mean(axis=0)) ** 2, axis=1)
    return round(float(np.sqrt(np.mean(spread))), DECIMALS)


@dataclass(frozen=True)
class Grouping:
    """Each group's client ids, sorted; groups ordered by their smallest member id.

    The constructor puts any input into that canonical order, so two replicas that build the
    same partition get equal objects (and the same group indices)."""

    groups: tuple[tuple[bytes, ...], ...]

    def __post_init__(self) -> None:
        canonical = tuple(sorted(tuple(sorted(g)) for g in self.groups))
        members = [c for g in canonical for c in g]
        if any(not g for g in canonical):
            raise ValueError("a group must not be empty")
        if len(set(members)) != len(members):
            raise ValueError("a client is in more than one group")
        object.__setattr__(self, "groups", canonical)

    @property
    def k(self) -> int:
        return len(self.groups)

    def group_of(self, client: bytes) -> int | None:
        for index, members in enumerate(self.groups):
            if client in members:
                return index
        return None


def _partition(labels: np.ndarray) -> list[list[int]]:
    by_label: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        by_label.setdefault(int(label), []).append(row)
    return [rows for _, rows in sorted(by_label.items())]


def _mean_dispersion(g: np.ndarray, parts: list[list[int]]) -> float:
    # Per client, not per group: a plain 1/K mean counts a split-off singleton (dispersion 0
    # by definition) as a whole group and so rewards isolating clients.
    weighted = sum(len(rows) * dispersion(g[rows]) for rows in parts)
    return round(weighted / len(g), DECIMALS)


def cluster(states: Sequence[ClientState], k_max: int, seed: int,
            weights: StateWeights = EQUAL_WEIGHTS, *, split_gain: float = SPLIT_GAIN,
            k_min: int = 0) -> Grouping:
    """Algorithm 1: k-means++ for K = 2, 3, ... up to min(k_max, distinct states). The first K
    (2, or ``k_min`` when larger: the number of server nodes, so that each can manage a group,
    even past k_max) is always taken when the states allow it; each next K is kept only while
    it cuts the mean dispersion to below ``split_gain`` times the previous K's, and the search
    stops at the first K that does not (``split_gain=1.0``: the plain "while it falls" rule,
    which in practice runs to k_max)."""
    if not 0.0 < split_gain <= 1.0:
        raise ValueError(f"split_gain must be in (0, 1], got {split_gain!r}")
    ordered = sorted(states, key=lambda s: s.client)  # input order must not matter
    ids = [s.client for s in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate client ids")
    if not ordered:
        return Grouping(())
    g = gamma(ordered, weights)
    # k-means cannot make more non-empty clusters than there are distinct points.
    distinct = len(np.unique(g, axis=0))
    top = min(max(k_max, k_min), distinct)
    best: list[list[int]] = [list(range(len(ordered)))]
    previous = float("inf")
    # Imported here: scikit-learn takes about 2 s to import, and every chain daemon imports this
    # module while only the few that regroup clients run k-means.
    from sklearn.cluster import KMeans

    for k in range(min(max(2, k_min), top), top + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = KMeans(n_clusters=k, init="k-means++", n_init=4, random_state=seed,
                            algorithm="lloyd").fit_predict(g)
        parts = _partition(labels)
        score = _mean_dispersion(g, parts)
        if not score < split_gain * previous:
            break
        best, previous = parts, score
    return Grouping(tuple(tuple(ids[r] for r in rows) for rows in best))


def place_newcomer(grouping: Grouping, states: Mapping[bytes, ClientState],
                   newcomer: ClientState, weights: StateWeights = EQUAL_WEIGHTS) -> Grouping:
    """Algorithm 2, with squared norms taken about each group's centroid: a group accepts the
    newcomer when d = ||gamma_new - c||^2 lies within [d_min, d_max] of its members' own
    ||gamma_i - c||^2. Of the accepting groups (or of all, if none accepts) the one with the
    nearest centroid gets it; ties go to the earlier group.

    gamma is normalised over every state in ``states`` plus the newcomer, so the newcomer is
    measured on the same scale as the members."""
    if grouping.group_of(newcomer.client) is not None:
        raise ValueError("the newcomer is already in a group")
    if not grouping.groups:
        return Grouping(((newcomer.client,),))
    members = [c for grp in grouping.groups for c in grp]
    missing = [c for c in members if c not in states]
    if missing:
        raise ValueError(f"no state for {len(missing)} group member(s)")
    known = sorted((s for c, s in states.items() if c != newcomer.client),
                   key=lambda s: s.client)
    g = gamma([*known, newcomer], weights)
    row = {s.client: i for i, s in enumerate(known)}
    new = g[-1]
    accepting, everyone = [], []
    for index, grp in enumerate(grouping.groups):
        own = g[[row[c] for c in grp]]
        centre = own.mean(axis=0)
        spread = np.round(np.sum((own - centre) ** 2, axis=1), DECIMALS)
        d = round(float(np.sum((new - centre) ** 2)), DECIMALS)
        everyone.append((d, index))
        if float(spread.min()) <= d <= float(spread.max()):
            accepting.append((d, index))
    target = min(accepting or everyone)[1]
    groups = list(grouping.groups)
    groups[target] = (*groups[target], newcomer.client)
    return Grouping(tuple(groups))


def assign_nodes(grouping: Grouping, nodes: Sequence[bytes]) -> tuple[bytes, ...]:
    """The managing node of each group, in group order: largest groups first (ties: group
    order), each to the node with the fewest clients so far (ties: node id)."""
    pool = sorted(set(nodes))
    if grouping.groups and not pool:
        raise ValueError("no server node to manage the groups")
    load = dict.fromkeys(pool, 0)
    chosen: dict[int, bytes] = {}
    for index in sorted(range(grouping.k), key=lambda i: (-len(grouping.groups[i]), i)):
        node = min(pool, key=lambda n: (load[n], n))
        chosen[index] = node
        load[node] += len(grouping.groups[index])
    return tuple(chosen[i] for i in range(grouping.k))
