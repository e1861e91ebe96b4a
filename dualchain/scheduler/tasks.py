"""How many batches each client of a group trains: DDMLTS (seed 000 eqs. 11-13), the OLAR
makespan optimum (Lima Pilla, IPDPS 2021) and the equal-split baseline."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dualchain.scheduler.state import DECIMALS


@dataclass(frozen=True)
class Worker:
    speed: float  # batches per second
    fixed_s: float = 0.0  # per task cost (rtt + upload)
    per_batch_s: float = 0.0  # extra per batch (upload proportional to work)

    def __post_init__(self) -> None:
        if not self.speed > 0 or not math.isfinite(self.speed):
            raise ValueError(f"speed must be positive and finite, got {self.speed!r}")
        if self.fixed_s < 0 or self.per_batch_s < 0:
            raise ValueError("costs must be >= 0")

    def completion(self, batches: int) -> float:
        """Seconds to finish ``batches``; a client with no work is not contacted, so 0 batches
        cost nothing (not even the fixed part)."""
        if batches < 0:
            raise ValueError(f"negative batch count {batches}")
        if batches == 0:
            return 0.0
        return self.fixed_s + batches * (1.0 / self.speed + self.per_batch_s)


def _cost(worker: Worker, batches: int) -> float:
    # Rounded so float noise in the last bits never flips a comparison between replicas.
    return round(worker.completion(batches), DECIMALS)


def makespan(workers: Sequence[Worker], counts: Sequence[int]) -> float:
    if len(workers) != len(counts):
        raise ValueError("one count per worker")
    return max((w.completion(c) for w, c in zip(workers, counts, strict=True)), default=0.0)


def _check(n: int, total: int, lower: int, upper: int | None) -> None:
    if total < 0 or lower < 0:
        raise ValueError("total and lower must be >= 0")
    if upper is not None and upper < lower:
        raise ValueError(f"upper {upper} below lower {lower}")
    if n * lower > total or (upper is not None and n * upper < total) or (n == 0 and total):
        raise ValueError(f"{total} batches cannot go to {n} workers within "
                         f"[{lower}, {upper}]")


def _fill(workers: Sequence[Worker], counts: list[int], total: int,
          upper: int | None) -> None:
    """OLAR's step: each next batch goes where it finishes earliest (ties: lower index)."""
    heap = [(_cost(w, counts[i] + 1), i) for i, w in enumerate(workers)
            if upper is None or counts[i] < upper]
    heapq.heapify(heap)
    for _ in range(total - sum(counts)):
        _, i = heapq.heappop(heap)
        counts[i] += 1
        if upper is None or counts[i] < upper:
            heapq.heappush(heap, (_cost(workers[i], counts[i] + 1), i))


def _trim(workers: Sequence[Worker], counts: list[int], total: int, lower: int) -> None:
    """Undo batches from the latest finisher until the total fits (ties: lower index)."""
    while sum(counts) > total:
        i = max((i for i in range(len(counts)) if counts[i] > lower),
                key=lambda i: (_cost(workers[i], counts[i]), -i))
        counts[i] -= 1


def _improve(workers: Sequence[Worker], counts: list[int], lower: int,
             upper: int | None) -> None:
    """Move single batches off the latest finisher to where the batch finishes earliest while
    it finishes before the current makespan. Each move lowers the makespan or the number of
    workers at it, and it stops only at the optimum: if a better makespan T existed, some
    worker would fit one more batch by T."""
    n = len(workers)
    for _ in range((sum(counts) + 1) * (n + 1)):  # bound; never reached (see above)
        top = max(range(n), key=lambda i: (_cost(workers[i], counts[i]), -i))
        span = _cost(workers[top], counts[top])
        if counts[top] <= lower:
            return  # at its lower bound the makespan cannot drop
        takers = [(_cost(workers[j], counts[j] + 1), j) for j in range(n)
                  if j != top and (upper is None or counts[j] < upper)]
        if not takers:
            return
        after, j = min(takers)
        if after >= span:
            return
        counts[top] -= 1
        counts[j] += 1


def olar(workers: Sequence[Worker], total: int, lower: int = 0,
         upper: int | None = None) -> tuple[int, ...]:
    """Makespan-optimal counts for nondecreasing completion costs: everyone starts at
    ``lower`` and each remaining batch goes to the worker that would finish it first."""
    _check(len(workers), total, lower, upper)
    counts = [lower] * len(workers)
    _fill(workers, counts, total, upper)
    return tuple(counts)


def equal_split(n: int, total: int) -> tuple[int, ...]:
    """The baseline: ``total`` over ``n`` clients, the remainder one each to the first ones."""
    if n < 0 or total < 0 or (n == 0 and total):
        raise ValueError(f"cannot split {total} over {n}")
    if n == 0:
        return ()
    share, extra = divmod(total, n)
    return tuple(share + (1 if i < extra else 0) for i in range(n))


def _tilts(n: int, anchor: int, alpha: float) -> list[float]:
    """alpha ** (position - anchor) by repeated products (exact IEEE steps, no libm pow)."""
    out = [1.0] * n
    for p in range(anchor + 1, n):
        out[p] = out[p - 1] * alpha
    for p in range(anchor - 1, -1, -1):
        out[p] = out[p + 1] / alpha
    return out


def ddmlts(workers: Sequence[Worker], total: int, alpha: float, seed: int, lower: int = 1,
           upper: int | None = None) -> tuple[int, ...]:
    """Eqs. 12-13: with equal batch sizes (D*_n = D*_{n-1}), m_n = alpha * v_n/v_{n-1} * m_{n-1}
    along the workers sorted by speed, outwards from a seeded anchor. That is m proportional
    to v * alpha**(rank - anchor rank): alpha tilts each speed estimate. The integer counts
    minimise the makespan under those tilted speeds (plus the workers' fixed and per-batch
    costs), so alpha = 1 gives the true optimum and alpha != 1 a deliberately biased one."""
    if not alpha > 0 or not math.isfinite(alpha):
        raise ValueError(f"alpha must be positive and finite, got {alpha!r}")
    n = len(workers)
    _check(n, total, lower, upper)
    if n == 0:
        return ()
    order = sorted(range(n), key=lambda i: (workers[i].speed, i))
    anchor = random.Random(seed).randrange(n)
    tilt = _tilts(n, anchor, alpha)
    model = [workers[i] for i in range(n)]
    for rank, i in enumerate(order):
        w = workers[i]
        model[i] = Worker(w.speed * tilt[rank], w.fixed_s, w.per_batch_s)
    weight = sum(w.speed for w in model)
    counts = []
    for w in model:
        real = round(total * w.speed / weight, DECIMALS)
        real = max(lower, real if upper is None else min(upper, real))
        counts.append(math.floor(real))
    _trim(model, counts, total, lower)
    _fill(model, counts, total, upper)
    _improve(model, counts, lower, upper)
    return tuple(counts)
