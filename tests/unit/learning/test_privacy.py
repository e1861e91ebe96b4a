"""Local DP (seed 004 §III-A): clipping, noise scale, calibration, budget refusal, adaptive rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualchain.learning.privacy import (
    AdaptiveNoise,
    BudgetExceeded,
    ConstantNoise,
    PrivacyBudget,
    PrivacyLedger,
    accounted_epsilon,
    calibrate_noise_multiplier,
    clip,
    lowest_feasible_multiplier,
    make_schedule,
    noise_generator,
    privatize,
)

CLIENT = b"\x07"


def test_clip_bounds_the_norm_and_keeps_small_vectors() -> None:
    v = np.full(100, 0.5, dtype=np.float32)  # L2 norm 5, L1 norm 50
    assert np.linalg.norm(clip(v, 1.0).astype(np.float64)) <= 1.0
    assert np.abs(clip(v, 2.0, ord=1).astype(np.float64)).sum() <= 2.0
    np.testing.assert_array_equal(clip(v, 10.0), v)
    with pytest.raises(ValueError, match="NaN or infinite"):
        clip(np.array([np.nan], dtype=np.float32), 1.0)
    with pytest.raises(ValueError, match="clip norm must be positive"):
        clip(v, 0.0)


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
def test_noise_scale_is_multiplier_times_twice_the_clip(mechanism: str) -> None:
    z, c, n = 0.7, 0.5, 200_000
    zero = np.zeros(n, dtype=np.float32)
    out = privatize(
        zero,
        mechanism=mechanism,
        clip_norm=c,
        noise_multiplier=z,
        rng=noise_generator(1, CLIENT, 0),
    ).astype(np.float64)
    scale = z * 2 * c
    if mechanism == "gaussian":
        assert out.std() == pytest.approx(scale, rel=0.01)
    else:
        assert np.abs(out).mean() == pytest.approx(scale, rel=0.01)  # E|Lap(0, b)| = b
    assert abs(out.mean()) < 0.01


def test_noise_is_reproducible_per_seed_client_and_release() -> None:
    v = np.zeros(64, dtype=np.float32)

    def draw(seed: int, client: bytes, release: int) -> bytes:
        rng = noise_generator(seed, client, release)
        return privatize(
            v, mechanism="gaussian", clip_norm=1.0, noise_multiplier=1.0, rng=rng
        ).tobytes()

    assert draw(1, CLIENT, 3) == draw(1, CLIENT, 3)
    assert len({draw(1, CLIENT, 3), draw(2, CLIENT, 3), draw(1, b"x", 3), draw(1, CLIENT, 4)}) == 4


@pytest.mark.parametrize("mechanism", ["gaussian", "laplace"])
@pytest.mark.parametrize(("epsilon", "releases"), [(1.0, 1), (8.0, 10), (2.0, 50), (100.0, 1)])
def test_planned_releases_fit_and_one_more_is_refused(
    mechanism: str, epsilon: float, releases: int
) -> None:
    budget = PrivacyBudget(epsilon, 1e-5)
    z = calibrate_noise_multiplier(budget, releases, mechanism)
    ledger = PrivacyLedger(budget)
    for _ in range(releases):
        assert ledger.record(CLIENT, mechanism, z) <= epsilon
    # Calibrated tightly: the budget is nearly all spent.
    assert ledger.spent(CLIENT) == pytest.approx(epsilon, rel=1e-3)
    with pytest.raises(BudgetExceeded, match=f"client 07: 1 more release.*budget of {epsilon:g}"):
        ledger.record(CLIENT, mechanism, z)
    assert ledger.release_count(CLIENT) == releases  # the refused release was not counted
    assert ledger.spent(b"other") == 0.0


def test_laplace_accounting_is_about_the_basic_sum() -> None:
    # Ten releases of pure epsilon 0.25 each: 2.5 by basic composition, a little less by RDP.
    assert 2.45 < accounted_epsilon({("laplace", 4.0): 10}, 1e-5) <= 2.5 + 1e-3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PrivacyBudget(0.0), "epsilon must be in"),
        (lambda: PrivacyBudget(1.0, 0.0), "delta must be in"),
        (lambda: PrivacyBudget(math.inf), "epsilon must be in"),
        (lambda: PrivacyBudget(math.nan), "epsilon must be in"),
        (lambda: calibrate_noise_multiplier(PrivacyBudget(1.0), 0), "at least 1"),
        (lambda: calibrate_noise_multiplier(PrivacyBudget(1.0), 1, "uniform"), "unknown noise"),
        (lambda: make_schedule("cosine", PrivacyBudget(1.0), 5), "unknown noise schedule"),
        (lambda: AdaptiveNoise(PrivacyBudget(1.0), 5, decay=1.0), "decay must be in"),
        (lambda: PrivacyLedger(PrivacyBudget(1.0)).record(CLIENT, "gaussian", -1.0), "multiplier"),
    ],
)
def test_bad_configuration_is_refused(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_adaptive_lowers_noise_only_on_a_stall() -> None:
    budget = PrivacyBudget(4.0, 1e-5)
    schedule = AdaptiveNoise(budget, planned_releases=20, min_improvement=0.0)
    constant = ConstantNoise(budget, planned_releases=20).multiplier
    ledger = PrivacyLedger(budget)
    z0 = schedule.multiplier
    assert z0 == pytest.approx(1.25 * constant)
    ledger.record(CLIENT, "gaussian", z0)
    assert schedule.observe(0.5, ledger, CLIENT) == z0  # first round: nothing to compare
    ledger.record(CLIENT, "gaussian", z0)
    assert schedule.observe(0.6, ledger, CLIENT) == z0  # improving
    ledger.record(CLIENT, "gaussian", z0)
    assert schedule.observe(0.6, ledger, CLIENT) == pytest.approx(0.8 * z0)  # stalled


def test_adaptive_decay_stops_at_the_feasible_floor() -> None:
    budget = PrivacyBudget(2.0, 1e-5)
    ledger = PrivacyLedger(budget)
    schedule = AdaptiveNoise(budget, planned_releases=10, start_factor=1.0, decay=0.1)
    z = schedule.multiplier
    ledger.record(CLIENT, "gaussian", z)
    schedule.observe(0.5, ledger, CLIENT)
    # Started at the constant schedule's z: no room to lower it for the 9 releases left.
    floor = lowest_feasible_multiplier(budget, ledger.releases(CLIENT), 9, "gaussian")
    assert schedule.observe(0.4, ledger, CLIENT) == floor == pytest.approx(z, rel=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    accuracies=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=12, max_size=12),
    epsilon=st.sampled_from([0.5, 2.0, 8.0]),
    per_round=st.sampled_from([1, 5]),
    mechanism=st.sampled_from(["gaussian", "laplace"]),
    kind=st.sampled_from(["constant", "adaptive"]),
)
def test_spent_epsilon_never_exceeds_the_budget(
    accuracies: list[float], epsilon: float, per_round: int, mechanism: str, kind: str
) -> None:
    """Any accuracy trajectory: every planned release is made, and never past the budget."""
    budget = PrivacyBudget(epsilon, 1e-5)
    rounds = len(accuracies)
    schedule = make_schedule(kind, budget, rounds * per_round, mechanism)
    ledger = PrivacyLedger(budget)
    for accuracy in accuracies:
        assert ledger.record(CLIENT, mechanism, schedule.multiplier, per_round) <= epsilon
        schedule.observe(accuracy, ledger, CLIENT)
    assert ledger.release_count(CLIENT) == rounds * per_round
    assert ledger.spent(CLIENT) <= epsilon
