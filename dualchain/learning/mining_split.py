"""Training and mining on the same clients: the compute split of seed 004 §III-B and §IV-A.

The seed's model: a task has a total compute time ``T_sum`` per client; each of the K rounds costs
``t_B`` of mining (one block) and ``tau`` local epochs of ``t_T`` each, so

    K * (tau * t_T + t_B) <= T_sum                                   (§III-B)

and the ratio ``theta = t_T / t_B`` (§IV-A, where t_B = 2 and T_sum = 200) says how much of its
compute a client gives to learning against mining. For a chosen K the learning time left in a
round buys ``tau = floor((T_sum / K - t_B) / t_T)`` epochs: few long rounds or many short ones.
Fig. 3 of the seed plots the training loss against K for several theta and finds an optimal K for
each; the seed gives **no closed-form loss model** (the curves are measured), so this module
offers none: the ``mining`` experiment trains each (theta, K, tau) of ``grid`` and measures the
loss.

On the testbed a time unit is a second of one client's compute: ``t_T`` is a measured local
epoch, ``t_B = t_T / theta`` the seconds the client's miner hashes per round, and
``mining_duty`` the share of the round it hashes (the miner's ``--duty``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RoundPlan:
    """One round of a client that both trains and mines."""

    theta: float  # t_T / t_B
    rounds: int  # K, rounds in the task
    epochs: int  # tau, local epochs per round
    train_seconds: float  # tau * t_T
    mine_seconds: float  # t_B

    @property
    def mining_duty(self) -> float:
        """Share of the round spent hashing, t_B / (tau t_T + t_B)."""
        return self.mine_seconds / (self.train_seconds + self.mine_seconds)

    def hashes(self, hash_rate: float) -> int:
        """Nonces tried in a round at ``hash_rate`` hashes per second of mining."""
        if not (hash_rate > 0 and math.isfinite(hash_rate)):
            raise ValueError(f"hash rate must be positive and finite, got {hash_rate}")
        return math.floor(self.mine_seconds * hash_rate)

    def local_steps(self, steps_per_epoch: int) -> int:
        if steps_per_epoch < 1:
            raise ValueError(f"steps per epoch must be at least 1, got {steps_per_epoch}")
        return self.epochs * steps_per_epoch


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value}")


def plan_round(total: float, rounds: int, theta: float, t_block: float) -> RoundPlan:
    """tau and the round's times for K = ``rounds`` in a budget of ``total`` (module docstring)."""
    _positive("total compute", total)
    _positive("theta", theta)
    _positive("t_block", t_block)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    t_train = theta * t_block
    # A relative tolerance so that budgets meant to divide exactly are not lost to rounding.
    epochs = math.floor((total / rounds - t_block) / t_train * (1 + 1e-12))
    if epochs < 1:
        raise ValueError(
            f"{rounds} rounds of {total / rounds:.4g} leave no time for one epoch of {t_train:.4g} "
            f"after mining {t_block:.4g}; at most {max_rounds(total, theta, t_block)} rounds"
        )
    return RoundPlan(theta, rounds, epochs, epochs * t_train, t_block)


def max_rounds(total: float, theta: float, t_block: float, epochs: int = 1) -> int:
    """The most rounds of ``epochs`` epochs each that fit ``total``: floor(T / (tau t_T + t_B))."""
    _positive("total compute", total)
    _positive("theta", theta)
    _positive("t_block", t_block)
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    return math.floor(total / (epochs * theta * t_block + t_block) * (1 + 1e-12))


def grid(total: float, thetas: list[float], t_block: float) -> list[RoundPlan]:
    """Every feasible plan, K = 1 .. max_rounds, for each theta in order (the Fig. 3 sweep)."""
    return [
        plan_round(total, k, theta, t_block)
        for theta in thetas
        for k in range(1, max_rounds(total, theta, t_block) + 1)
    ]
