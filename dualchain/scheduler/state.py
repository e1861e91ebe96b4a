"""Client state and the weighted state vector gamma (seed 000 eq. 8)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DECIMALS = 9  # every float that reaches a decision is rounded to this many places


@dataclass(frozen=True)
class ClientState:
    client: bytes
    rtt_s: float
    completion_s: float
    speed: float  # batches per second
    failure_rate: float  # mu in [0, 1]
    upload_s: float = 0.0  # fixed per-task transfer time (model down + update up)


@dataclass(frozen=True)
class StateWeights:
    """eps1..eps3 of eq. 8; the paper uses 1/3 each."""

    rtt: float = 1 / 3
    completion: float = 1 / 3
    speed: float = 1 / 3

    def __post_init__(self) -> None:
        parts = (self.rtt, self.completion, self.speed)
        if any(p < 0 for p in parts):
            raise ValueError(f"state weights must be >= 0, got {parts}")
        if abs(sum(parts) - 1.0) > 1e-9:
            raise ValueError(f"state weights must sum to 1, got {sum(parts)!r}")


EQUAL_WEIGHTS = StateWeights()  # the paper's choice: eps1 = eps2 = eps3 = 1/3


def _minmax(column: np.ndarray) -> np.ndarray:
    # Raw seconds and batches/s live on different scales; without this the largest unit wins.
    low, high = float(column.min()), float(column.max())
    if high - low <= 0.0:
        return np.zeros_like(column)
    return (column - low) / (high - low)


def gamma(states: Sequence[ClientState], weights: StateWeights = EQUAL_WEIGHTS) -> np.ndarray:
    """Rows (eps1*rtt, eps2*t_fin, eps3*v, mu), one per state in the order given.

    The first three features are min-max normalised across ``states`` before weighting (a
    constant column becomes 0); mu is already in [0, 1] and is used as is."""
    if not states:
        return np.zeros((0, 4))
    raw = np.array([[s.rtt_s, s.completion_s, s.speed] for s in states], dtype=np.float64)
    scaled = np.column_stack([_minmax(raw[:, j]) for j in range(3)])
    eps = np.array([weights.rtt, weights.completion, weights.speed])
    mu = np.array([[s.failure_rate] for s in states], dtype=np.float64)
    return np.round(np.hstack([scaled * eps, mu]), DECIMALS)
