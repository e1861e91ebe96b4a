"""Training/mining split (seed 004 §III-B): K (tau t_T + t_B) <= T_sum, duty, hashes, steps."""

from __future__ import annotations

import pytest

from dualchain.learning.mining_split import grid, max_rounds, plan_round


def test_seed_setting_fits_the_budget() -> None:
    # Seed 004 §IV-A: T_sum = 200, t_B = 2. theta = 0.5 gives t_T = 1.
    plan = plan_round(200, 10, 0.5, 2)
    assert plan.epochs == 18  # (200 / 10 - 2) / 1
    assert plan.train_seconds == 18 and plan.mine_seconds == 2
    assert plan.rounds * (plan.train_seconds + plan.mine_seconds) <= 200
    assert plan.mining_duty == pytest.approx(0.1)
    assert plan.local_steps(steps_per_epoch=3) == 54
    assert plan.hashes(hash_rate=1000.0) == 2000


@pytest.mark.parametrize("theta", [0.1, 0.5, 1.0, 3.0])
def test_every_plan_of_the_sweep_fits_and_uses_the_time(theta: float) -> None:
    plans = grid(200, [theta], 2)
    assert [p.rounds for p in plans] == list(range(1, max_rounds(200, theta, 2) + 1))
    for p in plans:
        assert p.epochs >= 1 and p.theta == theta
        used = p.rounds * (p.train_seconds + p.mine_seconds)
        assert used <= 200 + 1e-9
        # One more epoch per round would not fit.
        assert p.rounds * (p.train_seconds + theta * 2 + p.mine_seconds) > 200


def test_more_learning_share_means_fewer_rounds_of_one_epoch() -> None:
    assert max_rounds(200, 0.5, 2) == 66  # 200 / 3
    assert max_rounds(200, 4.0, 2) == 20  # 200 / 10
    assert max_rounds(200, 0.5, 2, epochs=4) == 33


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((200, 0, 0.5, 2), "rounds must be at least 1"),
        ((200, 67, 0.5, 2), "no time for one epoch.*at most 66 rounds"),
        ((200, 10, 0.0, 2), "theta must be positive"),
        ((200, 10, 0.5, float("nan")), "t_block must be positive"),
        ((-1, 10, 0.5, 2), "total compute must be positive"),
    ],
)
def test_bad_plans_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_round(*args)


def test_bad_rates_are_refused() -> None:
    plan = plan_round(200, 10, 0.5, 2)
    with pytest.raises(ValueError, match="hash rate"):
        plan.hashes(0)
    with pytest.raises(ValueError, match="steps per epoch"):
        plan.local_steps(0)
