"""Fair aggregation (seed 002 eq. II.4): weights, staleness, refusals, replica determinism."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import numpy as np
import pytest

from dualchain.learning.aggregation import StalenessRule, Update, aggregate_async
from dualchain.learning.fair import aggregate_fair

N = 500


def vec(k: int) -> np.ndarray:
    return (((np.arange(N) * (7919 + k)) % 1009) / 1009 - 0.5).astype(np.float32)


def update(client: int, base: int = 5, samples: int = 64) -> Update:
    return Update(bytes([client]), base, samples, vec(client))


GLOBAL = vec(100)


def weights(result) -> dict[bytes, float]:
    return dict(result.weights)


def test_eq_II4_weights_are_theta_over_sum() -> None:
    theta = {b"\x01": 0.9, b"\x02": 0.6, b"\x03": 0.3}
    result = aggregate_fair(GLOBAL, [update(1), update(2), update(3)], 5, theta)
    w = weights(result)
    for cid, t in theta.items():
        assert w[cid] == float(np.float32(t / 1.8))
    assert math.fsum(w.values()) == pytest.approx(1.0, abs=1e-6)
    expected = GLOBAL.astype(np.float64) + sum(t / 1.8 * vec(c[0]) for c, t in theta.items())
    np.testing.assert_allclose(result.params, expected, atol=1e-6)
    assert result.dropped == ()


def test_contribution_samples_weights() -> None:
    theta = {b"\x01": 0.5, b"\x02": 0.5}
    ups = [update(1, samples=100), update(2, samples=300)]
    w = weights(aggregate_fair(GLOBAL, ups, 5, theta, weighting="contribution_samples"))
    assert w == {b"\x01": float(np.float32(0.25)), b"\x02": float(np.float32(0.75))}


def test_equal_theta_matches_eq2_with_constant_rule() -> None:
    """Equal contributions, fresh updates: II.4 is the plain mean, as eq. 2 with w = 1."""
    ups = [update(c) for c in range(1, 6)]
    fair = aggregate_fair(GLOBAL, ups, 5, {u.client_id: 0.7 for u in ups})
    plain = aggregate_async(GLOBAL, ups, 5, StalenessRule("constant"))
    assert fair.params.tobytes() == plain.params.tobytes()


def test_shuffled_input_gives_identical_bytes() -> None:
    ups = [update(c, base=3 + c % 3, samples=10 + 7 * c) for c in range(1, 12)]
    theta = {u.client_id: 0.1 + (u.client_id[0] % 5) / 7 for u in ups}
    rule = StalenessRule("eq2", max_staleness=2)
    reference = aggregate_fair(GLOBAL, ups, 5, theta, weighting="contribution_samples", rule=rule)
    rng = random.Random(0)
    for _ in range(10):
        shuffled = ups[:]
        rng.shuffle(shuffled)
        theta_shuffled = dict(reversed(list(theta.items())))
        again = aggregate_fair(
            GLOBAL, shuffled, 5, theta_shuffled, weighting="contribution_samples", rule=rule
        )
        assert again.params.tobytes() == reference.params.tobytes()
        assert again.weights == reference.weights and again.dropped == reference.dropped


def test_staleness_damps_without_renormalising() -> None:
    theta = {b"\x01": 1.0, b"\x02": 1.0}
    ups = [update(1, base=5), update(2, base=4)]  # client 2 is one version stale
    w = weights(aggregate_fair(GLOBAL, ups, 5, theta, rule=StalenessRule("eq2")))
    assert w == {b"\x01": 0.5, b"\x02": 0.25}


def test_too_stale_and_non_positive_theta_are_dropped() -> None:
    theta = {b"\x01": 1.0, b"\x02": 1.0, b"\x03": 0.0, b"\x04": -0.4}
    ups = [update(1, base=5), update(2, base=1), update(3), update(4)]
    result = aggregate_fair(GLOBAL, ups, 5, theta, rule=StalenessRule("eq2", max_staleness=2))
    assert weights(result) == {b"\x01": 1.0}
    assert set(result.dropped) == {b"\x02", b"\x03", b"\x04"}


def test_per_update_weights_in_canonical_order() -> None:
    """Two updates of one client in a window, told apart by a sequence of weights."""
    first = Update(b"\x01", 4, 64, vec(1))
    second = Update(b"\x01", 5, 64, vec(2))
    other = update(3)
    # Canonical order: (client 01, base 4), (client 01, base 5), (client 03, base 5).
    result = aggregate_fair(GLOBAL, [other, second, first], 5, [0.2, 0.6, 0.2])
    f32 = [float(np.float32(c)) for c in (0.2, 0.6, 0.2)]
    assert result.weights == ((b"\x01", f32[0]), (b"\x01", f32[1]), (b"\x03", f32[2]))
    with pytest.raises(ValueError, match="2 contribution weights for 3 updates"):
        aggregate_fair(GLOBAL, [other, second, first], 5, [0.5, 0.5])


def test_nothing_kept_leaves_global_unchanged() -> None:
    result = aggregate_fair(GLOBAL, [update(1)], 5, {b"\x01": -1.0})
    assert result.params.tobytes() == GLOBAL.tobytes() and result.weights == ()


@pytest.mark.parametrize(
    ("theta", "kwargs", "message"),
    [
        ({}, {}, "no contribution weight for client 01"),
        ({b"\x01": float("nan")}, {}, "not finite"),
        ({b"\x01": 1.0}, {"weighting": "median"}, "unknown fair weighting"),
        ({b"\x01": 1.0}, {"mixing": 0.0}, "mixing must be positive"),
    ],
)
def test_bad_input_is_refused(theta: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate_fair(GLOBAL, [update(1)], 5, theta, **kwargs)


def test_future_base_version_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        aggregate_fair(GLOBAL, [update(1, base=6)], 5, {b"\x01": 1.0})


@pytest.mark.parametrize("module", ["fair", "rewards", "privacy", "mining_split"])
def test_incentive_modules_do_not_import_torch(module: str) -> None:
    """Chain daemons re-execute these; they must not pay torch's import."""
    code = f"import sys, dualchain.learning.{module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
