"""OLAR, DDMLTS and the equal split: asserted on makespans, not on particular assignments."""

from __future__ import annotations

import itertools
import random

import pytest

from dualchain.scheduler import Worker, ddmlts, equal_split, makespan, olar

SPEEDS = (1.0, 2.0, 4.0)
PLAIN = [Worker(v) for v in SPEEDS]
FIXED = [Worker(v, fixed) for v, fixed in zip(SPEEDS, (3.0, 2.0, 1.0), strict=True)]
PER_BATCH = [Worker(v, 0.0, 0.1) for v in SPEEDS]
CASES = [(PLAIN, 10.0), (FIXED, 11.75), (PER_BATCH, 13.2)]


def _brute_force(workers: list[Worker], total: int, lower: int, upper: int) -> float:
    best = float("inf")
    for counts in itertools.product(range(lower, upper + 1), repeat=len(workers)):
        if sum(counts) == total:
            best = min(best, makespan(workers, counts))
    return best


def _random_workers(rng: random.Random, n: int) -> list[Worker]:
    return [Worker(rng.uniform(0.2, 10.0), rng.choice([0.0, rng.uniform(0.0, 3.0)]),
                   rng.choice([0.0, rng.uniform(0.0, 0.2)])) for _ in range(n)]


# -- Worker and makespan ------------------------------------------------------------------------


def test_completion_time_model() -> None:
    w = Worker(4.0, 1.5, 0.25)
    assert w.completion(0) == 0.0  # no work: not contacted, no fixed cost either
    assert w.completion(1) == pytest.approx(1.5 + 0.5)
    assert w.completion(8) == pytest.approx(1.5 + 8 * 0.5)
    with pytest.raises(ValueError):
        w.completion(-1)


@pytest.mark.parametrize("args", [(0.0,), (-1.0,), (float("inf"),), (1.0, -1.0), (1.0, 0, -1)])
def test_worker_validation(args: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Worker(*args)


def test_makespan() -> None:
    assert makespan(PLAIN, (10, 20, 40)) == 10.0
    assert makespan(PLAIN, (0, 0, 4)) == 1.0
    assert makespan([], []) == 0.0
    with pytest.raises(ValueError):
        makespan(PLAIN, (1, 2))


# -- OLAR ---------------------------------------------------------------------------------------


def test_olar_proportional_to_speed() -> None:
    counts = olar(PLAIN, 70)
    assert counts == (10, 20, 40)
    assert makespan(PLAIN, counts) == 10.0


@pytest.mark.parametrize(("workers", "best"), CASES)
def test_olar_optimal_makespans(workers: list[Worker], best: float) -> None:
    counts = olar(workers, 70)
    assert sum(counts) == 70
    assert makespan(workers, counts) == pytest.approx(best, abs=1e-9)


def test_olar_matches_brute_force_with_bounds() -> None:
    rng = random.Random(5)
    for _ in range(40):
        workers = _random_workers(rng, 3)
        lower, upper = rng.choice([(0, 12), (1, 12), (2, 7)])
        total = rng.randint(3 * lower, 3 * upper)
        counts = olar(workers, total, lower, upper)
        assert sum(counts) == total and all(lower <= c <= upper for c in counts)
        assert makespan(workers, counts) == pytest.approx(
            _brute_force(workers, total, lower, upper), abs=1e-9)


def test_olar_infeasible_totals() -> None:
    with pytest.raises(ValueError):
        olar(PLAIN, 2, lower=1)
    with pytest.raises(ValueError):
        olar(PLAIN, 31, upper=10)
    with pytest.raises(ValueError):
        olar(PLAIN, 5, lower=3, upper=2)
    with pytest.raises(ValueError):
        olar([], 1)
    assert olar([], 0) == ()


# -- equal split --------------------------------------------------------------------------------


def test_equal_split() -> None:
    assert equal_split(3, 70) == (24, 23, 23)
    assert equal_split(4, 8) == (2, 2, 2, 2)
    assert equal_split(3, 1) == (1, 0, 0)
    assert equal_split(0, 0) == ()
    with pytest.raises(ValueError):
        equal_split(0, 3)
    with pytest.raises(ValueError):
        equal_split(2, -1)


# -- DDMLTS -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "best"), CASES)
def test_ddmlts_alpha_one_is_optimal_on_the_reference_cases(workers: list[Worker],
                                                           best: float) -> None:
    for seed in range(5):
        counts = ddmlts(workers, 70, 1.0, seed)
        assert sum(counts) == 70
        assert makespan(workers, counts) == pytest.approx(best, abs=1e-9)


def test_ddmlts_alpha_one_matches_olar_on_random_cases() -> None:
    rng = random.Random(17)
    for _ in range(200):
        n = rng.randint(1, 9)
        workers = _random_workers(rng, n)
        lower = rng.choice([0, 1, 2])
        upper = rng.choice([None, lower + rng.randint(3, 40)])
        top = 12 * n if upper is None else n * upper
        total = rng.randint(n * lower, top)
        counts = ddmlts(workers, total, 1.0, rng.randrange(1 << 30), lower, upper)
        assert sum(counts) == total
        assert all(c >= lower and (upper is None or c <= upper) for c in counts)
        assert makespan(workers, counts) == pytest.approx(
            makespan(workers, olar(workers, total, lower, upper)), abs=1e-9)


def test_ddmlts_respects_bounds_and_total_for_any_alpha() -> None:
    rng = random.Random(3)
    for _ in range(100):
        n = rng.randint(2, 8)
        workers = _random_workers(rng, n)
        lower, upper = rng.randint(0, 3), rng.randint(4, 30)
        total = rng.randint(n * lower, n * upper)
        alpha = rng.choice([0.25, 0.5, 1.5, 3.0])
        counts = ddmlts(workers, total, alpha, rng.randrange(1000), lower, upper)
        assert sum(counts) == total
        assert all(lower <= c <= upper for c in counts)


def test_ddmlts_is_deterministic_for_a_seed() -> None:
    workers = [Worker(v) for v in (1.0, 1.5, 3.0, 5.0, 8.0)]
    for alpha in (0.5, 1.0, 1.5):
        assert ddmlts(workers, 100, alpha, 42) == ddmlts(workers, 100, alpha, 42)


def test_alpha_tilts_work_towards_or_away_from_fast_clients() -> None:
    workers = [Worker(v) for v in (1.0, 2.0, 4.0, 8.0)]

    def fastest_share(alpha: float) -> float:
        # Averaged over anchors: the tilt direction must not depend on the draw.
        return sum(ddmlts(workers, 150, alpha, seed)[3] for seed in range(8)) / 8

    assert fastest_share(0.5) < fastest_share(1.0) < fastest_share(1.5)
    best = makespan(workers, olar(workers, 150))
    for alpha in (0.5, 1.5):
        assert all(makespan(workers, ddmlts(workers, 150, alpha, seed)) >= best - 1e-9
                   for seed in range(8))
        assert any(makespan(workers, ddmlts(workers, 150, alpha, seed)) > best + 1e-9
                   for seed in range(8))


def test_ddmlts_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError):
        ddmlts(PLAIN, 70, 0.0, 0)
    with pytest.raises(ValueError):
        ddmlts(PLAIN, 2, 1.0, 0)  # lower = 1 each needs 3
    with pytest.raises(ValueError):
        ddmlts(PLAIN, 70, 1.0, 0, upper=20)
    assert ddmlts([], 0, 1.0, 0) == ()


def test_ddmlts_when_bounds_bind() -> None:
    workers = [Worker(1.0), Worker(100.0)]
    # Proportional shares (0.1, 9.9) clamp to (4, 9.9): the floors overshoot and are trimmed.
    assert ddmlts(workers, 10, 1.0, 0, lower=4) == (4, 6)
    # The fast worker is capped, the rest must go to the slow one.
    assert ddmlts(workers, 30, 1.0, 0, upper=20) == (10, 20)
