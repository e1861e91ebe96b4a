"""The replicated plan: batches per client, drift detection and C_gmax (eq. 14)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dualchain.scheduler import (
    ClientState,
    Grouping,
    SchedulerParams,
    StateWeights,
    Worker,
    c_gmax,
    drifted,
    plan_tasks,
)
from dualchain.scheduler.plan import group_totals


def _cid(i: int) -> bytes:
    return bytes([i]) * 4


SPEEDS = {_cid(1): 1.0, _cid(2): 2.0, _cid(3): 4.0, _cid(4): 8.0, _cid(5): 3.0}
STATES = {c: ClientState(c, 0.05, 8 / v, v, 0.0, upload_s=0.1) for c, v in SPEEDS.items()}
GROUPING = Grouping(((_cid(1), _cid(2), _cid(3)), (_cid(4), _cid(5))))


def _ratios(tasks: dict[bytes, int]) -> list[float]:
    """Per group: latest / earliest completion under the states' time model."""
    out = []
    for members in GROUPING.groups:
        times = [Worker(STATES[c].speed, STATES[c].rtt_s + STATES[c].upload_s)
                 .completion(tasks[c]) for c in members]
        out.append(max(times) / min(times))
    return out


def test_defaults() -> None:
    p = SchedulerParams()
    assert (p.k_max, p.alpha, p.batches_per_client, p.lower, p.upper, p.drift) == (
        4, 1.0, 8, 1, 64, 0.25)
    assert p.weights == StateWeights()


@pytest.mark.parametrize("mode", ["ddmlts", "olar", "equal"])
def test_every_client_gets_a_task_and_the_round_keeps_its_total(mode: str) -> None:
    params = SchedulerParams(batches_per_client=10)
    tasks = plan_tasks(GROUPING, STATES, params, seed=5, mode=mode)
    assert set(tasks) == set(STATES)
    assert sum(tasks.values()) == 10 * len(STATES)
    assert all(params.lower <= n <= params.upper for n in tasks.values())
    if mode == "equal":
        for members in GROUPING.groups:
            assert sum(tasks[c] for c in members) == 10 * len(members)


def test_group_totals_follow_capacity_so_groups_finish_together() -> None:
    # Group 0 has speeds 1+2+4 = 7, group 1 has 8+3 = 11: 50 batches split 19 / 31.
    totals = group_totals(GROUPING, STATES, SchedulerParams(batches_per_client=10))
    assert totals == [19, 31]
    assert group_totals(GROUPING, STATES, SchedulerParams(batches_per_client=10),
                        "equal") == [30, 20]
    # A slow group is never given less than its lower bound.
    slow = dict(STATES)
    for c in GROUPING.groups[0]:
        slow[c] = replace(STATES[c], speed=0.001)
    totals = group_totals(GROUPING, slow, SchedulerParams(batches_per_client=10, lower=2))
    assert totals[0] == 6 and sum(totals) == 50


def test_ddmlts_evens_out_completion_times_unlike_equal() -> None:
    params = SchedulerParams(batches_per_client=20)
    balanced = _ratios(plan_tasks(GROUPING, STATES, params, seed=1))
    equal = _ratios(plan_tasks(GROUPING, STATES, params, seed=1, mode="equal"))
    assert max(balanced) < 1.3
    assert min(equal) > 2.0


def test_ddmlts_with_alpha_one_has_the_olar_makespan() -> None:
    params = SchedulerParams(batches_per_client=20)
    a = plan_tasks(GROUPING, STATES, params, seed=9)
    b = plan_tasks(GROUPING, STATES, params, seed=9, mode="olar")
    for members in GROUPING.groups:
        workers = [Worker(STATES[c].speed, STATES[c].rtt_s + STATES[c].upload_s)
                   for c in members]
        span_a = max(w.completion(a[c]) for w, c in zip(workers, members, strict=True))
        span_b = max(w.completion(b[c]) for w, c in zip(workers, members, strict=True))
        assert span_a == pytest.approx(span_b, abs=1e-9)


def test_plan_is_repeatable() -> None:
    params = SchedulerParams(alpha=1.5)
    assert plan_tasks(GROUPING, STATES, params, 3) == plan_tasks(GROUPING, STATES, params, 3)


def test_plan_refusals() -> None:
    with pytest.raises(ValueError):
        plan_tasks(GROUPING, STATES, SchedulerParams(), 0, mode="fifo")
    partial = {c: s for c, s in STATES.items() if c != _cid(4)}
    with pytest.raises(ValueError):
        plan_tasks(GROUPING, partial, SchedulerParams(), 0)
    with pytest.raises(ValueError):  # 100 per client cannot fit under upper = 64
        plan_tasks(GROUPING, STATES, SchedulerParams(batches_per_client=100), 0)


# -- drift --------------------------------------------------------------------------------------


def test_drifted() -> None:
    same = dict(STATES)
    assert not drifted(STATES, same, 0.25)
    slower = dict(STATES)
    slower[_cid(2)] = replace(STATES[_cid(2)], speed=1.4)  # -30 %
    assert drifted(STATES, slower, 0.25)
    assert not drifted(STATES, slower, 0.35)
    later = dict(STATES)
    later[_cid(3)] = replace(STATES[_cid(3)], completion_s=20.0)  # follows the task size
    assert not drifted(STATES, later, 0.1)
    rtt_only = dict(STATES)
    rtt_only[_cid(1)] = replace(STATES[_cid(1)], rtt_s=5.0)
    assert not drifted(STATES, rtt_only, 0.25)


def test_drifted_on_membership_changes() -> None:
    fewer = {c: s for c, s in STATES.items() if c != _cid(5)}
    assert drifted(STATES, fewer, 0.25)
    assert drifted(fewer, STATES, 0.25)
    assert not drifted({}, {}, 0.25)


def test_drift_from_zero() -> None:
    zero = {_cid(1): ClientState(_cid(1), 0.0, 0.0, 0.0, 0.0)}
    moved = {_cid(1): ClientState(_cid(1), 0.0, 0.0, 0.5, 0.0)}
    assert drifted(zero, moved, 0.25)
    assert not drifted(zero, zero, 0.25)


# -- C_gmax (eq. 14) ----------------------------------------------------------------------------


def test_c_gmax_is_mean_of_group_maxima() -> None:
    assert c_gmax([[1.0, 4.0, 2.0], [3.0], [0.5, 2.0]]) == pytest.approx(3.0)
    assert c_gmax([[2.5]]) == 2.5
    assert c_gmax([]) == 0.0
