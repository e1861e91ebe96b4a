"""The whole plan a CMBC replica re-executes: batches per client over a grouping, the drift
test that triggers re-clustering, and the per-iteration cost C_gmax (eq. 14)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dualchain.scheduler.grouping import Grouping
from dualchain.scheduler.state import ClientState, StateWeights
from dualchain.scheduler.tasks import Worker, ddmlts, equal_split, olar

MODES = ("ddmlts", "olar", "equal")


@dataclass(frozen=True)
class SchedulerParams:
    k_max: int = 4
    alpha: float = 1.0
    batches_per_client: int = 8  # the round's total work = this x the number of clients
    lower: int = 1
    upper: int = 64
    weights: StateWeights = field(default_factory=StateWeights)
    # Relative change of a client's speed that triggers re-clustering.
    drift: float = 0.25


def _worker(state: ClientState) -> Worker:
    return Worker(state.speed, state.rtt_s + state.upload_s)


def group_totals(grouping: Grouping, states: Mapping[bytes, ClientState],
                 params: SchedulerParams, mode: str = "ddmlts") -> list[int]:
    """Level one of the task tree: the round's work (``batches_per_client`` x clients) split
    over the groups. "equal" gives each group its size's share; the other modes share it in
    proportion to each group's capacity (the sum of its members' speeds), so that every group
    finishes at about the same time instead of the slow groups setting the round's length.
    Largest remainders round the shares (ties to the earlier group); each stays within
    [lower, upper] x its size."""
    sizes = [len(g) for g in grouping.groups]
    total = params.batches_per_client * sum(sizes)
    if mode == "equal":
        return [params.batches_per_client * n for n in sizes]
    capacity = [sum(states[c].speed for c in g) for g in grouping.groups]
    ideal = [total * cap / sum(capacity) for cap in capacity]
    shares = [int(x) for x in ideal]
    by_remainder = sorted(range(len(ideal)), key=lambda i: (-(ideal[i] - shares[i]), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    low = [params.lower * n for n in sizes]
    high = [params.upper * n for n in sizes]
    shares = [min(max(x, lo), hi) for x, lo, hi in zip(shares, low, high, strict=True)]
    # Clamping moved the sum: give back or take the difference, fastest groups first.
    order = sorted(range(len(shares)), key=lambda i: (-capacity[i], i))
    while sum(shares) != total:
        step = 1 if sum(shares) < total else -1
        room = [i for i in order if low[i] <= shares[i] + step <= high[i]]
        if not room:
            raise ValueError(f"{total} batches do not fit the groups' bounds")
        shares[room[0] if step > 0 else room[-1]] += step
    return shares


def plan_tasks(grouping: Grouping, states: Mapping[bytes, ClientState], params: SchedulerParams,
               seed: int, mode: str = "ddmlts") -> dict[bytes, int]:
    """client -> batches for every client in ``grouping``: the groups' totals from
    ``group_totals`` (level one), then each group's split by ``mode`` (level two; group i
    draws its DDMLTS anchor with seed + i)."""
    if mode not in MODES:
        raise ValueError(f"unknown scheduling mode {mode!r}; expected one of {MODES}")
    missing = [c for g in grouping.groups for c in g if c not in states]
    if missing:
        raise ValueError(f"no state for {len(missing)} group member(s)")
    out: dict[bytes, int] = {}
    totals = group_totals(grouping, states, params, mode)
    for index, (members, total) in enumerate(zip(grouping.groups, totals, strict=True)):
        workers = [_worker(states[c]) for c in members]
        if mode == "ddmlts":
            counts = ddmlts(workers, total, params.alpha, seed + index, params.lower,
                            params.upper)
        elif mode == "olar":
            counts = olar(workers, total, params.lower, params.upper)
        else:
            counts = equal_split(len(members), total)
        out.update(zip(members, counts, strict=True))
    return out


def _moved(old: float, new: float, threshold: float) -> bool:
    base = abs(old)
    if base == 0.0:
        return new != 0.0
    return abs(new - old) / base > threshold


def drifted(old: Mapping[bytes, ClientState], new: Mapping[bytes, ClientState],
            threshold: float) -> bool:
    """True when the client sets differ or some client's speed moved by more than
    ``threshold`` relative to its old value. Completion times are not compared: they follow
    the task sizes the plan itself hands out, so every new plan would look like drift."""
    if set(old) != set(new):
        return True
    return any(_moved(old[c].speed, new[c].speed, threshold) for c in sorted(old))


def c_gmax(group_completions: Sequence[Sequence[float]]) -> float:
    """Eq. 14 for one global iteration: the mean over groups of each group's latest finish.
    Empty groups are skipped; no groups at all gives 0.0."""
    peaks = [max(times) for times in group_completions if len(times)]
    return sum(peaks) / len(peaks) if peaks else 0.0
