"""The client's decisions as plain rules: retry backoff, buffered-run averaging, norm clipping,
offline windows (the unit tests call them directly; ``client.worker`` drives them).

**Disconnection (seed 002 Alg. 2).** The client is disconnected when a call to its node fails
with UNAVAILABLE or DEADLINE_EXCEEDED, or while the clock is inside one of its ``offline``
windows; inside a window it contacts nothing at all (neither node nor CMBC: the device has no
network). While disconnected it keeps training: a *buffered run* starts from the client's own
latest local model (its *origin*, descended from global version ``v``; when the run starts with a
task whose upload failed, that task's own starting point, the global model of ``v``) and each
further local task continues from the previous one's result, with the last task's batches, batch
size and learning rate. It stops training once ``max_buffered`` local models are held and then
only waits. It probes the node with Ping on an exponential backoff with jitter (at once when an
offline window ends); once the node answers it uploads **one** update for the whole run: base
version ``v``, the sum of the run's sample counts, the delta below and a task id: the node's id
when the run began with that task's failed upload, else an id of the client's own (top bit set,
random low bits), since the node accepts one update per (client, base version, task) and the
node's last task on ``v`` may already have had its update accepted. Then it continues with
GetTask.

**What "average" means.** Alg. 2 line 11 averages the stored local *models*:
``w = (1/K) sum_k w_k``. As a delta on the run's origin ``o`` that is::

    delta = (1/K) sum_k (w_k - o)  =  sum_j ((K - j + 1) / K) * d_j,   d_j = w_j - w_{j-1}

i.e. the mean of the cumulative local progress after each task, not the mean of the per-task
increments ``d_j`` (that is ``(w_K - o) / K``, which would throw away (K-1)/K of the progress),
nor the total progress ``w_K - o`` (not an average, and its norm grows with K). It is a Polyak-
style average of the local trajectory: early progress counts fully, later (more drifted) progress
partly. ``||delta|| <= max_k ||w_k - o||``. The node refuses updates whose L2 norm exceeds
``max_update_norm`` (genesis, default 100); every update, buffered or not, whose norm exceeds
that bound is scaled to just below it (norm clipping, as in DP-FedAvg) instead of being refused;
such uploads are counted as ``clipped`` and logged. Staleness is the aggregator's business: it
weighs the update by w(current - v) and a node refuses it beyond the maximum staleness
(FAILED_PRECONDITION), which counts as a failure; the run is then dropped.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dualchain.learning.aggregation import update_norm

CLIP_MARGIN = 0.999  # clipped norms land this far below the bound (float32 rounding headroom)


# --- backoff -------------------------------------------------------------------------------


class Backoff:
    """Exponential backoff with jitter.

    The n-th delay (from 0) is ``d_n = min(maximum, initial * factor**n)`` scaled by a random
    factor in ``[1 - jitter, 1]``: never above ``maximum``, never below ``(1 - jitter) *
    initial``, and clients that lost their node at the same moment spread their retries.
    """

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
                 jitter: float = 0.5, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {initial}, {maximum}")
        if factor < 1 or not 0 <= jitter < 1:
            raise ValueError(f"need factor >= 1 and 0 <= jitter < 1, got {factor}, {jitter}")
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._rng = rng or random.Random()
        self.attempt = 0

    def ceiling(self) -> float:
        """The un-jittered delay of the next attempt."""
        # Capped before the power is taken: no float overflow for a client that waits for days.
        if self.factor == 1 or self.attempt >= math.log(self.maximum / self.initial, self.factor):
            return self.maximum if self.factor != 1 else self.initial
        return min(self.maximum, self.initial * self.factor ** self.attempt)

    def next(self) -> float:
        delay = self.ceiling() * (1.0 - self.jitter * self._rng.random())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


# --- buffering and averaging ---------------------------------------------------------------


def average_buffered(origin: np.ndarray, local_models: Sequence[np.ndarray]) -> np.ndarray:
    """The delta of a buffered run: ``mean_k(w_k) - origin`` (see the module docstring).

    Computed as ``(1/K) sum_k (w_k - origin)`` in float64 and rounded once to float32.
    """
    if not local_models:
        raise ValueError("nothing buffered")
    total = np.zeros(origin.shape, dtype=np.float64)
    base = origin.astype(np.float64)
    for w in local_models:
        if w.shape != origin.shape:
            raise ValueError(f"local model of shape {w.shape}, origin is {origin.shape}")
        total += w.astype(np.float64) - base
    return (total / len(local_models)).astype(np.float32)


def clip_to_norm(delta: np.ndarray, max_norm: float) -> tuple[np.ndarray, float, bool]:
    """``(delta', norm of delta, clipped)``: ``delta`` scaled to just below ``max_norm`` when over.

    The norm is ``learning.aggregation.update_norm``, the node's own admission measure.
    """
    norm = update_norm(delta)
    if norm <= max_norm:
        return delta, norm, False
    scaled = (delta.astype(np.float64) * (CLIP_MARGIN * max_norm / norm)).astype(np.float32)
    return scaled, norm, True


@dataclass
class UpdateBuffer:
    """The local models of one buffered run, kept as a running float64 sum (O(1) memory).

    ``delta()`` equals ``average_buffered(origin, [w_1, ..., w_K])``.
    """

    base_version: int = 0
    task: int = 0
    origin: np.ndarray | None = None
    latest: np.ndarray | None = None  # w_K: where the next local task starts
    count: int = 0
    samples: int = 0
    _sum: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.count

    def start(self, base_version: int, task: int, origin: np.ndarray) -> None:
        self.base_version, self.task = base_version, task
        self.origin = origin.astype(np.float32, copy=True)
        self.latest = self.origin
        self.count = self.samples = 0
        self._sum = np.zeros(origin.shape, dtype=np.float64)

    def add(self, local_model: np.ndarray, samples: int) -> None:
        if self.origin is None or self._sum is None:
            raise ValueError("add before start")
        if local_model.shape != self.origin.shape:
            raise ValueError(f"local model of shape {local_model.shape}, origin is "
                             f"{self.origin.shape}")
        self._sum += local_model.astype(np.float64) - self.origin.astype(np.float64)
        self.latest = local_model.astype(np.float32, copy=True)
        self.count += 1
        self.samples += samples

    def delta(self) -> np.ndarray:
        if not self.count or self._sum is None:
            raise ValueError("nothing buffered")
        return (self._sum / self.count).astype(np.float32)

    def clear(self) -> None:
        self.origin = self.latest = self._sum = None
        self.count = self.samples = 0


# --- offline windows -----------------------------------------------------------------------


class OfflineSchedule:
    """Windows ``[start_s, end_s)`` after process start during which the device has no network."""

    def __init__(self, windows: Sequence[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for start, end in sorted(windows):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.windows = tuple((s, e) for s, e in merged)

    def offline_until(self, t: float) -> float | None:
        """The end of the window that contains ``t`` (seconds since start), or None."""
        for start, end in self.windows:
            if start <= t < end:
                return end
        return None
