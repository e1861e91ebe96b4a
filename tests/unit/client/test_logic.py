"""The client's decisions as plain functions: averaging, clipping, backoff, offline windows."""

from __future__ import annotations

import random
import threading

import grpc
import numpy as np
import pytest

from dualchain.apps.cmbc.payloads import StateReport
from dualchain.client.worker import (
    Backoff,
    ClientData,
    LocalTrainer,
    Meter,
    OfflineSchedule,
    Refused,
    UpdateBuffer,
    average_buffered,
    clip_to_norm,
)
from dualchain.learning.aggregation import check_update, update_norm


def test_average_is_the_mean_of_the_local_models_relative_to_the_origin() -> None:
    origin = np.zeros(3, np.float32)
    w1 = np.array([1, 0, 0], np.float32)  # after task 1
    w2 = np.array([3, 2, 0], np.float32)  # task 2 continued from w1
    delta = average_buffered(origin, [w1, w2])
    # (w1 + w2) / 2 - origin: not (w2 - origin) / 2 (mean of the per-task increments), nor
    # w2 - origin (the total progress).
    np.testing.assert_array_equal(delta, [2, 1, 0])
    assert delta.dtype == np.float32
    one = average_buffered(origin + 1, [w2])
    np.testing.assert_array_equal(one, w2 - 1)


def test_incremental_buffer_matches_the_pure_function() -> None:
    rng = np.random.default_rng(0)
    origin = rng.normal(size=100).astype(np.float32)
    models = [origin + rng.normal(size=100).astype(np.float32) * k for k in range(1, 5)]
    buffer = UpdateBuffer()
    buffer.start(base_version=7, task=3, origin=origin)
    for i, w in enumerate(models):
        buffer.add(w, samples=10 + i)
        assert buffer.latest is not None
        np.testing.assert_array_equal(buffer.latest, w)
    np.testing.assert_allclose(buffer.delta(), average_buffered(origin, models), atol=1e-6)
    assert (len(buffer), buffer.samples, buffer.base_version, buffer.task) == (4, 46, 7, 3)
    # Its norm is at most the largest cumulative progress.
    assert update_norm(buffer.delta()) <= max(update_norm(w - origin) for w in models) + 1e-4
    buffer.clear()
    assert len(buffer) == 0
    with pytest.raises(ValueError, match="nothing buffered"):
        buffer.delta()
    with pytest.raises(ValueError, match="nothing buffered"):
        average_buffered(origin, [])


def test_clipping_keeps_small_updates_and_scales_large_ones_below_the_bound() -> None:
    small = np.full(10, 0.1, np.float32)
    same, norm, clipped = clip_to_norm(small, 100.0)
    assert same is small and not clipped and norm == pytest.approx(update_norm(small))
    big = np.arange(1000, dtype=np.float32)
    scaled, norm, clipped = clip_to_norm(big, 100.0)
    assert clipped and norm > 100
    assert update_norm(scaled) < 100.0
    check_update(scaled, 1000, 100.0)  # the node's own admission check passes
    cos = float(scaled @ big) / (np.linalg.norm(scaled) * np.linalg.norm(big))
    assert cos == pytest.approx(1.0, abs=1e-6)


def test_backoff_grows_exponentially_within_its_jitter_band_and_caps() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, factor=2.0, jitter=0.5, rng=random.Random(1))
    ceilings = []
    for _ in range(200):
        ceiling = backoff.ceiling()
        delay = backoff.next()
        assert 0.5 * ceiling <= delay <= ceiling <= 4.0
        ceilings.append(ceiling)
    assert ceilings[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    backoff.attempt = 10**9  # waiting for days: no overflow
    assert backoff.next() <= 4.0
    backoff.reset()
    assert backoff.ceiling() == 0.5
    assert Backoff(1.0, 1.0, jitter=0.0).next() == 1.0
    with pytest.raises(ValueError):
        Backoff(initial=2.0, maximum=1.0)
    with pytest.raises(ValueError):
        Backoff(jitter=1.0)


def test_jitter_spreads_clients() -> None:
    delays = {round(Backoff(rng=random.Random(seed)).next(), 6) for seed in range(20)}
    assert len(delays) > 15


def test_offline_windows_merge_and_end() -> None:
    schedule = OfflineSchedule([(10, 20), (15, 30), (40, 50)])
    assert schedule.windows == ((10, 30), (40, 50))
    assert schedule.offline_until(5) is None
    assert schedule.offline_until(10) == 30
    assert schedule.offline_until(29.9) == 30
    assert schedule.offline_until(30) is None
    assert schedule.offline_until(45) == 50
    assert OfflineSchedule([]).offline_until(0) is None


def test_meter_reports_fixed_units_and_resets_the_counters() -> None:
    meter = Meter(rtt_ms=12, completion_ms=3400, speed=123.4567, failures=2,
                  disconnected_s=1.5, tasks=3, last_task=9, last_samples=640)
    report = meter.report()
    assert report == StateReport(task=9, rtt_ms=12, completion_ms=3400, speed_milli=123457,
                                 failures=2, disconnected_ms=1500, samples=640)
    assert StateReport.decode(report.encode()) == report
    meter.reported()
    assert (meter.failures, meter.disconnected_s, meter.tasks) == (0, 0.0, 0)
    assert meter.rtt_ms == 12  # the last measurement stays until the next one
    assert Meter(rtt_ms=2**40).report().rtt_ms == 2**32 - 1


def test_refusal_codes_come_from_the_details() -> None:
    assert Refused(grpc.StatusCode.FAILED_PRECONDITION, "too_stale: staleness 12").code == \
        "too_stale"
    assert Refused(grpc.StatusCode.INVALID_ARGUMENT, "bad things happened").code == \
        "invalid_argument"
    assert Refused(grpc.StatusCode.INTERNAL, "").code == "internal"


@pytest.fixture
def one_torch_thread():
    """One torch thread, as the client's training thread uses (threads=1): several threads on
    a small shared machine only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int = 256) -> ClientData:
    rng = np.random.default_rng(0)
    return ClientData(x=rng.normal(size=(n, 1, 8, 8)).astype(np.float32),
                      y=rng.integers(0, 10, n).astype(np.int64), num_classes=10)


def test_training_is_deterministic_and_slowdown_stretches_wall_time(
        one_torch_thread) -> None:
    from dualchain.learning.models import build_model, get_flat

    data = _data()
    start = get_flat(build_model("digits", 10, seed=1))
    cancel = threading.Event()
    fast = LocalTrainer("digits", data).train(start, 4, 32, 0.05, seed=5, cancel=cancel)
    again = LocalTrainer("digits", data).train(start, 4, 32, 0.05, seed=5, cancel=cancel)
    assert fast is not None and again is not None
    np.testing.assert_array_equal(fast.params, again.params)
    assert fast.samples == 128 and fast.batches == 4
    assert not np.array_equal(fast.params, start)
    slow = LocalTrainer("digits", data, slowdown=3.0).train(start, 4, 32, 0.05, seed=5,
                                                            cancel=cancel)
    assert slow is not None
    np.testing.assert_array_equal(slow.params, fast.params)  # same arithmetic, only slower
    assert slow.wall_s >= 2.5 * slow.compute_s


def test_a_cancelled_task_is_abandoned(one_torch_thread) -> None:
    from dualchain.learning.models import build_model, get_flat

    cancel = threading.Event()
    cancel.set()
    start = get_flat(build_model("digits", 10, seed=1))
    assert LocalTrainer("digits", _data()).train(start, 2, 32, 0.05, 0, cancel) is None
