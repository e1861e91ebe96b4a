"""Aggregation: staleness rules, eq. 2 and FedAvg arithmetic, input order, admission checks."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from dualchain.learning.aggregation import (
    REJECT_NON_FINITE,
    REJECT_NORM,
    REJECT_SHAPE,
    StalenessRule,
    Update,
    UpdateRejected,
    aggregate_async,
    check_update,
    fedavg,
)

N = 1000


def vec(k: int) -> np.ndarray:
    """A reproducible float32 vector built from integers (no RNG stream to drift across numpy)."""
    return (((np.arange(N) * (7919 + k)) % 1009) / 1009 - 0.5).astype(np.float32)


def update(client: int, base: int, k: int | None = None, samples: int = 64) -> Update:
    return Update(bytes([client]), base, samples, vec(client if k is None else k))


GLOBAL = vec(100)


# --- staleness rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (StalenessRule("eq2"), [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5]),
        (StalenessRule("constant"), [1.0] * 5),
        (StalenessRule("polynomial", a=0.5), [(1 + s) ** -0.5 for s in range(5)]),
        (StalenessRule("polynomial", a=2.0), [1.0, 1 / 4, 1 / 9, 1 / 16, 1 / 25]),
        (StalenessRule("hinge", a=10.0, b=2), [1.0, 1.0, 1.0, 1 / 11, 1 / 21]),
    ],
)
def test_rule_weights(rule: StalenessRule, expected: list[float]) -> None:
    assert [rule.weight(s) for s in range(5)] == pytest.approx(expected, rel=1e-15)


def test_rule_drops_beyond_max_staleness() -> None:
    rule = StalenessRule("eq2", max_staleness=3)
    assert rule.admits(3) and not rule.admits(4)
    assert rule.weight(3) == 0.25 and rule.weight(4) == 0.0
    with pytest.raises(ValueError, match="negative"):
        rule.weight(-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "exp"}, "known: eq2, constant, polynomial, hinge"),
        ({"name": "polynomial", "a": 0.0}, "a > 0"),
        ({"name": "hinge", "a": float("inf")}, "a > 0"),
        ({"b": -1}, "b >= 0"),
        ({"max_staleness": -1}, "max_staleness"),
    ],
)
def test_rule_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StalenessRule(**kwargs)  # type: ignore[arg-type]


# --- asynchronous aggregation ----------------------------------------------------------------


def test_eq2_arithmetic() -> None:
    # Current version 5: staleness 0, 1 and 3 -> weights 1, 1/2, 1/4, averaged over |K| = 3.
    updates = [update(1, 5), update(2, 4), update(3, 2)]
    result = aggregate_async(GLOBAL, updates, 5, StalenessRule("eq2"))
    expected = GLOBAL.astype(np.float64) + (vec(1) + vec(2) / 2 + vec(3) / 4) / 3
    np.testing.assert_allclose(result.params, expected, rtol=0, atol=1e-6)
    assert result.params.dtype == np.float32
    assert result.weights == (
        (b"\x01", float(np.float32(1 / 3))),
        (b"\x02", float(np.float32(1 / 6))),
        (b"\x03", float(np.float32(1 / 12))),
    )
    assert result.dropped == ()


def test_single_fresh_update_applies_its_delta_and_mixing_scales() -> None:
    rule = StalenessRule("eq2")
    result = aggregate_async(GLOBAL, [update(7, 3)], 3, rule)
    assert result.params.tobytes() == (GLOBAL + vec(7)).tobytes()
    half = aggregate_async(GLOBAL, [update(7, 3)], 3, rule, mixing=0.5)
    assert half.params.tobytes() == (GLOBAL + np.float32(0.5) * vec(7)).tobytes()
    with pytest.raises(ValueError, match="mixing"):
        aggregate_async(GLOBAL, [update(7, 3)], 3, rule, mixing=0.0)


def test_same_bytes_in_any_input_order() -> None:
    updates = [update(c, 10 - c % 3) for c in range(1, 6)]
    updates.append(update(2, 10, k=50))  # a second task of client 2 in the same window
    rule = StalenessRule("polynomial", a=0.5)
    digests = {
        hashlib.sha256(aggregate_async(GLOBAL, list(p), 10, rule).params.tobytes()).digest()
        for p in itertools.permutations(updates)
    }
    assert len(digests) == 1


def test_golden_bytes() -> None:
    # Pins the exact float32 result: a change here breaks replicas running different versions.
    updates = [update(c, 20 - c) for c in range(1, 5)]
    result = aggregate_async(GLOBAL, updates, 20, StalenessRule("eq2"))
    digest = hashlib.sha256(result.params.tobytes()).hexdigest()
    assert digest == GOLDEN


GOLDEN = "688354b89adc7f5d5c07f18bbf5da6228d531feadc98b401be14f8de4ea8d0ce"


def test_stale_updates_are_dropped_and_not_counted() -> None:
    rule = StalenessRule("eq2", max_staleness=2)
    result = aggregate_async(GLOBAL, [update(1, 10), update(2, 7), update(3, 8)], 10, rule)
    assert result.dropped == (b"\x02",)
    assert [c for c, _ in result.weights] == [b"\x01", b"\x03"]
    expected = GLOBAL.astype(np.float64) + (vec(1) + vec(3) / 3) / 2
    np.testing.assert_allclose(result.params, expected, rtol=0, atol=1e-6)

    nothing = aggregate_async(GLOBAL, [update(2, 7)], 10, rule)
    assert nothing.params.tobytes() == GLOBAL.tobytes() and nothing.params is not GLOBAL
    assert nothing.weights == () and nothing.dropped == (b"\x02",)


def test_bad_updates_are_refused() -> None:
    rule = StalenessRule()
    with pytest.raises(ValueError, match="appears twice"):
        aggregate_async(GLOBAL, [update(1, 3), update(1, 3)], 3, rule)
    with pytest.raises(ValueError, match="negative"):
        aggregate_async(GLOBAL, [update(1, 4)], 3, rule)
    with pytest.raises(ValueError, match="size 1000"):
        aggregate_async(GLOBAL, [Update(b"x", 3, 1, vec(0)[:-1])], 3, rule)
    with pytest.raises(ValueError, match="size 1000"):
        aggregate_async(GLOBAL, [Update(b"x", 3, 1, vec(0).astype(np.float64))], 3, rule)
    with pytest.raises(ValueError, match="0 samples"):
        aggregate_async(GLOBAL, [update(1, 3, samples=0)], 3, rule)
    with pytest.raises(ValueError, match="global"):
        aggregate_async(GLOBAL.astype(np.float64), [update(1, 3)], 3, rule)


# --- FedAvg ----------------------------------------------------------------------------------


def test_fedavg_equal_counts_is_the_plain_average_of_models() -> None:
    updates = [update(c, 4) for c in range(1, 5)]
    models = [GLOBAL.astype(np.float64) + vec(c) for c in range(1, 5)]
    result = fedavg(GLOBAL, updates, 4)
    np.testing.assert_allclose(result.params, np.mean(models, axis=0), rtol=0, atol=1e-6)
    assert [w for _, w in result.weights] == [0.25] * 4


def test_fedavg_weights_by_samples_and_drops_other_versions() -> None:
    updates = [update(1, 4, samples=30), update(2, 4, samples=10), update(3, 3)]
    result = fedavg(GLOBAL, list(reversed(updates)), 4)
    assert result.dropped == (b"\x03",)
    assert result.weights == ((b"\x01", 0.75), (b"\x02", 0.25))
    expected = GLOBAL.astype(np.float64) + 0.75 * vec(1) + 0.25 * vec(2)
    np.testing.assert_allclose(result.params, expected, rtol=0, atol=1e-6)


def test_fedavg_counts_a_claimed_sample_count_up_to_four_times_the_low_median() -> None:
    liar = update(3, 4, samples=10**9)
    result = fedavg(GLOBAL, [update(1, 4, samples=10), update(2, 4, samples=20), liar], 4)
    assert dict(result.weights)[b"\x03"] == pytest.approx(80 / 110)  # 4 x 20, not 10^9
    pair = fedavg(GLOBAL, [update(1, 4, samples=10), liar], 4)  # the low median: the honest 10
    assert dict(pair.weights)[b"\x03"] == pytest.approx(40 / 50)


# --- admission checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        (vec(0)[:-1], REJECT_SHAPE),
        (vec(0).astype(np.float64), REJECT_SHAPE),
        (vec(0).reshape(10, 100), REJECT_SHAPE),
        (np.where(np.arange(N) == 5, np.nan, vec(0)).astype(np.float32), REJECT_NON_FINITE),
        (np.where(np.arange(N) == 5, np.inf, vec(0)).astype(np.float32), REJECT_NON_FINITE),
        (np.where(np.arange(N) == 5, -np.inf, vec(0)).astype(np.float32), REJECT_NON_FINITE),
        (vec(0) * np.float32(100), REJECT_NORM),
    ],
)
def test_check_update_rejections(params: np.ndarray, code: str) -> None:
    with pytest.raises(UpdateRejected) as info:
        check_update(params, N, max_norm=100.0)
    assert info.value.code == code and info.value.reason
    assert str(info.value).startswith(code)


def test_check_update_accepts_within_bound() -> None:
    norm = float(np.sqrt(np.sum(vec(0).astype(np.float64) ** 2)))
    check_update(vec(0), N, max_norm=norm)
    with pytest.raises(UpdateRejected, match="norm"):
        check_update(vec(0), N, max_norm=norm * (1 - 1e-9))
