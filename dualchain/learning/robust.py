"""Robust aggregation baselines: coordinate-wise median, trimmed mean, Krum and Multi-Krum.

Each rule reads the deltas of K updates and returns ``global + robust_delta`` (float32) with the
updates it selected, so an experiment can score a rule's choices like a detector's:

- ``median`` (Yin et al. 2018): per coordinate, the median of the K values (the mean of the two
  middle ones when K is even). Breaks down only when half the updates are Byzantine.
- ``trimmed_mean`` (Yin et al. 2018): per coordinate, drop the ``k = floor(beta K)`` largest and
  ``k`` smallest values and average the rest; ``0 <= beta < 0.5``.
- ``krum`` (Blanchard et al. 2017): for f assumed Byzantine, score each update by the sum of its
  squared distances to its ``K - f - 2`` nearest others; take the update with the lowest score.
  Needs ``K >= 2f + 3``.
- ``multi_krum``: the ``m`` lowest scores (ties to the canonical order), averaged; ``m = K - f``
  by default. ``m = 1`` is Krum.

``selected`` lists the updates a rule used. The coordinate-wise rules make no per-update choice
(every update can supply some coordinates), so they select every update and their precision and
recall as detectors are undefined (``per_update = False``).

Staleness plays no part: the caller passes the updates the round takes (as with ``fedavg``).
Determinism as in ``aggregation``: updates in ``canonical_order``; distances in float64 with numpy
pairwise sums; median and sorting are order statistics (order-independent); the trimmed and Krum
means add in canonical order and are rounded once to float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dualchain.learning.aggregation import Update, canonical_order

ROBUST_RULES: tuple[str, ...] = ("median", "trimmed_mean", "krum", "multi_krum")


@dataclass(frozen=True)
class RobustRule:
    """A robust rule and its parameter: ``beta`` (trimmed mean), ``f`` and ``m`` (Krum family)."""

    name: str = "median"
    beta: float = 0.2
    f: int = 1
    m: int | None = None  # multi_krum: updates averaged; None means K - f

    def __post_init__(self) -> None:
        if self.name not in ROBUST_RULES:
            known = ", ".join(ROBUST_RULES)
            raise ValueError(f"unknown robust rule {self.name!r}; known: {known}")
        if not (math.isfinite(self.beta) and 0 <= self.beta < 0.5):
            raise ValueError(f"trimmed mean beta must be in [0, 0.5), got {self.beta}")
        if isinstance(self.f, bool) or not isinstance(self.f, int) or self.f < 0:
            raise ValueError(f"krum f must be a non-negative integer, got {self.f!r}")
        if self.m is not None and (isinstance(self.m, bool) or not isinstance(self.m, int)):
            raise ValueError(f"multi_krum m must be an integer, got {self.m!r}")
        if self.m is not None and self.m < 1:
            raise ValueError(f"multi_krum m must be at least 1, got {self.m}")


@dataclass(frozen=True, eq=False)
class RobustResult:
    params: np.ndarray  # new global model, float32 flat
    selected: tuple[bytes, ...]  # client ids of the updates used, canonical order
    rejected: tuple[bytes, ...]  # client ids of the updates left out
    per_update: bool  # whether the rule chose among updates (Krum family) or not
    scores: tuple[float, ...]  # Krum scores in canonical order (empty for coordinate rules)


def krum_scores(deltas: Sequence[np.ndarray], f: int) -> list[float]:
    """Blanchard et al.'s score: sum of squared distances to the ``K - f - 2`` nearest others."""
    k = len(deltas)
    if k < 2 * f + 3:
        raise ValueError(f"krum with f={f} needs at least {2 * f + 3} updates, got {k}")
    dist = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            diff = deltas[i] - deltas[j]
            dist[i, j] = dist[j, i] = float(np.sum(diff * diff))
    nearest = k - f - 2
    return [float(math.fsum(sorted(np.delete(dist[i], i).tolist())[:nearest])) for i in range(k)]


def _mean(rows: Sequence[np.ndarray]) -> np.ndarray:
    acc = np.zeros_like(rows[0])
    for r in rows:  # canonical order
        acc += r
    return acc / len(rows)


def robust_aggregate(
    global_params: np.ndarray, updates: Sequence[Update], rule: RobustRule
) -> RobustResult:
    """``global + delta`` with the rule's robust delta of ``updates`` (see the module docstring)."""
    if (
        not isinstance(global_params, np.ndarray)
        or global_params.dtype != np.float32
        or global_params.ndim != 1
    ):
        raise ValueError("global parameters must be a 1-D float32 vector")
    if not updates:
        raise ValueError("robust aggregation needs at least one update")
    ordered = canonical_order(updates, global_params.size)
    ids = [u.client_id for u in ordered]
    deltas = [u.delta.astype(np.float64) for u in ordered]
    k = len(deltas)
    chosen = list(range(k))
    scores: list[float] = []
    if rule.name == "median":
        delta = np.median(np.stack(deltas), axis=0)
    elif rule.name == "trimmed_mean":
        trim = math.floor(rule.beta * k)
        kept_rows = np.sort(np.stack(deltas), axis=0)[trim : k - trim]
        delta = _mean(list(kept_rows))
    else:
        scores = krum_scores(deltas, rule.f)
        m = 1 if rule.name == "krum" else (rule.m if rule.m is not None else k - rule.f)
        if m > k:
            raise ValueError(f"multi_krum m={m} exceeds the {k} updates")
        chosen = sorted(sorted(range(k), key=lambda i: scores[i])[:m])  # stable: ties by order
        delta = _mean([deltas[i] for i in chosen])
    params = global_params.copy()
    np.add(params, delta.astype(np.float32), out=params)
    picked = set(chosen)
    return RobustResult(
        params=params,
        selected=tuple(ids[i] for i in chosen),
        rejected=tuple(ids[i] for i in range(k) if i not in picked),
        per_update=rule.name in ("krum", "multi_krum"),
        scores=tuple(scores),
    )
