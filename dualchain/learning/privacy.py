"""Local differential privacy (seed 004 §III-A): clip, add noise before signing, account, refuse.

**Mechanism.** Each client has its own budget (epsilon_i, delta). Before signing an upload it
clips and perturbs with Gaussian N(0, s^2) or Laplace Lap(s) noise per coordinate, from a seeded
generator of its own. ``s = z * Delta`` where z is the *noise multiplier* and Delta the
sensitivity: the most that the released vector can change between two neighbouring inputs. We
take neighbours as "one item replaced", so Delta = 2C for vectors clipped to norm C (L2 for
Gaussian, L1 for Laplace, the norms those mechanisms are private for). What an item is, is the
*unit* of privacy:

- ``client``: the item is the client's whole data set; ``privatize`` clips the update itself to C.
  This is local DP in its strict sense (nothing the client holds can be told apart), and costly:
  on digits (linear model, 5 or 10 clients, 5 or 10 rounds, clip 0.3 to 3) epsilon = 8 leaves
  8-17% accuracy, chance level (docs/incentives.md), since the noise norm grows with the square
  root of the parameter count while the clipped signal does not.
- ``record``: the item is one training example; ``dualchain.learning.dp_training`` clips each
  example's gradient to C and adds the noise to every local step's gradient sum (DP-SGD without
  sampling amplification); the update built from those noisy steps is post-processing. This is the
  per-example protection that seed 004's reference [15] analyses, and the one that reaches
  epsilon = 8 within a few points of no noise.

**Accounting.** Every noisy vector is one *release*, a dp-accounting ``GaussianDpEvent(z)`` or
``LaplaceDpEvent(z)``; a client's releases compose in Google's RDP accountant, which reports the
spent epsilon at the budget's delta (for Laplace about the basic sum of the pure per-release
epsilons 1/z, the library's RDP bound being a hair above it for few releases and below it for
many). ``calibrate_noise_multiplier`` asks the library for the smallest z whose
planned number of releases fits the budget. ``PrivacyLedger`` refuses a release that would take a
client past its epsilon, before any noise is drawn.

**Adaptive noise** (seed 004 §III-A, after its reference [15]): "a decay rate for the noise power
when the accuracy between two adjacent rounds stops improving". ``AdaptiveNoise`` starts at
``start_factor`` times the constant schedule's multiplier; after each round, if the accuracy rose
by at most ``min_improvement`` over the previous round, z becomes ``max(decay * z, z_floor)``
where z_floor is the smallest multiplier at which the releases spent so far plus all releases
still planned fit the budget (found by the library's calibration on the composed events). So the
plan never outspends the budget, and noise moves from the late rounds, where a converging model
needs precision, to the early ones, where gradients are large. If the accuracy never stalls, the
noise never drops and part of the budget stays unspent: that is the rule as the seed states it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import dp_accounting
import numpy as np
from dp_accounting import rdp

MECHANISMS: tuple[str, ...] = ("gaussian", "laplace")
UNITS: tuple[str, ...] = ("client", "record")
SCHEDULES: tuple[str, ...] = ("constant", "adaptive")

Release = tuple[str, float]  # (mechanism, noise multiplier)

MAX_EPSILON = 100.0  # beyond this a budget protects nothing; run without noise instead

# Where calibration starts its search: above 0, where the RDP of Laplace divides by zero.
_BRACKET = dp_accounting.LowerEndpointAndGuess(lower_endpoint=1e-3, initial_guess=1.0)


class BudgetExceeded(ValueError):
    """A release would take a client past its privacy budget; nothing was released."""


@dataclass(frozen=True)
class PrivacyBudget:
    """A client's (epsilon, delta); delta is also the one at which Laplace releases are read."""

    epsilon: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not 0 < self.epsilon <= MAX_EPSILON:
            raise ValueError(f"privacy epsilon must be in (0, {MAX_EPSILON:g}], got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"privacy delta must be in (0, 1), got {self.delta}")


def _check_mechanism(mechanism: str) -> None:
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown noise mechanism {mechanism!r}; known: {', '.join(MECHANISMS)}")


def _check_multiplier(z: float) -> None:
    if not (z > 0 and math.isfinite(z)):
        raise ValueError(f"noise multiplier must be positive and finite, got {z}")


def dp_event(mechanism: str, noise_multiplier: float) -> dp_accounting.DpEvent:
    """The dp-accounting event of one release."""
    _check_mechanism(mechanism)
    _check_multiplier(noise_multiplier)
    return _event(mechanism, noise_multiplier)


def _event(mechanism: str, noise_multiplier: float) -> dp_accounting.DpEvent:
    # Unchecked: the calibration search probes values the public checks would refuse.
    if mechanism == "gaussian":
        return dp_accounting.GaussianDpEvent(noise_multiplier)
    return dp_accounting.LaplaceDpEvent(noise_multiplier)


def _composed(releases: Mapping[Release, int]) -> dp_accounting.DpEvent:
    events = [
        dp_accounting.SelfComposedDpEvent(dp_event(m, z), n)
        for (m, z), n in sorted(releases.items())
        if n > 0
    ]
    return dp_accounting.ComposedDpEvent(events)


def accounted_epsilon(releases: Mapping[Release, int], delta: float) -> float:
    """Epsilon at ``delta`` of all ``releases`` ((mechanism, z) -> count) by the RDP accountant."""
    for n in releases.values():
        if n < 0:
            raise ValueError(f"a release count cannot be negative, got {n}")
    accountant = rdp.RdpAccountant()
    accountant.compose(_composed(releases))
    return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(
    budget: PrivacyBudget, releases: int, mechanism: str = "gaussian"
) -> float:
    """The smallest z (to the library's tolerance) whose ``releases`` fit ``budget``.

    The result is nudged up until the accountant confirms it, so planned releases never fail.
    """
    _check_mechanism(mechanism)
    if releases < 1:
        raise ValueError(f"planned releases must be at least 1, got {releases}")
    z = float(
        dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant,
            lambda m: dp_accounting.SelfComposedDpEvent(_event(mechanism, m), releases),
            budget.epsilon,
            budget.delta,
            bracket_interval=_BRACKET,
        )
    )
    while accounted_epsilon({(mechanism, z): releases}, budget.delta) > budget.epsilon:
        z *= 1 + 1e-6
    return z


def clip(vector: np.ndarray, clip_norm: float, ord: int = 2) -> np.ndarray:
    """``vector`` scaled down to L``ord`` norm at most ``clip_norm`` (float64 norm), as float32."""
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise ValueError(f"clip norm must be positive and finite, got {clip_norm}")
    if not isinstance(vector, np.ndarray) or vector.ndim != 1 or vector.dtype != np.float32:
        raise ValueError("the vector to clip must be a 1-D float32 array")
    if not np.isfinite(vector).all():
        raise ValueError("the vector to clip has NaN or infinite values")
    v = vector.astype(np.float64)
    norm = float(np.sum(np.abs(v))) if ord == 1 else math.sqrt(float(np.sum(v * v)))
    if norm <= clip_norm:
        return vector.copy()
    # Scaled a hair under the bound so float32 rounding cannot push the norm over it.
    return (v * (clip_norm / norm * (1 - 1e-6))).astype(np.float32)


def noise_generator(secret_seed: int, client_id: bytes, release: int) -> np.random.Generator:
    """A client's generator for one release. The seed must stay secret: known noise is no noise."""
    if release < 0:
        raise ValueError(f"release index must not be negative, got {release}")
    key = hashlib.sha256(client_id).digest()[:8]
    return np.random.default_rng([secret_seed, int.from_bytes(key, "big"), release])


def noise(
    size: int, mechanism: str, scale: float, rng: np.random.Generator
) -> np.ndarray:  # float64
    _check_mechanism(mechanism)
    if mechanism == "gaussian":
        return rng.normal(0.0, scale, size)
    return rng.laplace(0.0, scale, size)


def privatize(
    delta: np.ndarray,
    *,
    mechanism: str,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Client-unit LDP: clip ``delta`` to C (L2, or L1 for Laplace), add noise of scale z * 2C."""
    _check_mechanism(mechanism)
    _check_multiplier(noise_multiplier)
    clipped = clip(delta, clip_norm, ord=1 if mechanism == "laplace" else 2)
    scale = noise_multiplier * 2.0 * clip_norm
    noisy = clipped.astype(np.float64) + noise(clipped.size, mechanism, scale, rng)
    return noisy.astype(np.float32)


class PrivacyLedger:
    """Each client's releases and spent epsilon against one budget; refuses an overspend."""

    def __init__(self, budget: PrivacyBudget) -> None:
        self.budget = budget
        self._releases: dict[bytes, dict[Release, int]] = {}

    def releases(self, client: bytes) -> dict[Release, int]:
        return dict(self._releases.get(client, {}))

    def release_count(self, client: bytes) -> int:
        return sum(self._releases.get(client, {}).values())

    def spent(self, client: bytes) -> float:
        """Epsilon the client has spent so far (0.0 before its first release)."""
        return accounted_epsilon(self._releases.get(client, {}), self.budget.delta)

    def would_spend(self, client: bytes, mechanism: str, z: float, count: int = 1) -> float:
        planned = self.releases(client)
        planned[(mechanism, z)] = planned.get((mechanism, z), 0) + count
        return accounted_epsilon(planned, self.budget.delta)

    def record(self, client: bytes, mechanism: str, z: float, count: int = 1) -> float:
        """Account ``count`` releases at z before they are made; the new spent epsilon."""
        if count < 1:
            raise ValueError(f"release count must be at least 1, got {count}")
        after = self.would_spend(client, mechanism, z, count)
        if after > self.budget.epsilon:
            raise BudgetExceeded(
                f"client {client.hex()}: {count} more release(s) at noise multiplier {z:.4g} "
                f"would spend epsilon {after:.4g} of a budget of {self.budget.epsilon:g}"
            )
        mine = self._releases.setdefault(client, {})
        mine[(mechanism, z)] = mine.get((mechanism, z), 0) + count
        return after


@dataclass
class ConstantNoise:
    """The same multiplier for every release: the calibrated one for the planned releases."""

    budget: PrivacyBudget
    planned_releases: int
    mechanism: str = "gaussian"
    multiplier: float = field(init=False)

    def __post_init__(self) -> None:
        self.multiplier = calibrate_noise_multiplier(
            self.budget, self.planned_releases, self.mechanism
        )

    def observe(self, accuracy: float, ledger: PrivacyLedger, client: bytes) -> float:
        return self.multiplier


@dataclass
class AdaptiveNoise:
    """Seed 004's decay on a plateau, kept within the budget (module docstring)."""

    budget: PrivacyBudget
    planned_releases: int
    mechanism: str = "gaussian"
    start_factor: float = 1.25
    decay: float = 0.8
    min_improvement: float = 0.01  # an accuracy gain of at most 1 point counts as a stall
    multiplier: float = field(init=False)
    last_accuracy: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not (self.start_factor >= 1 and math.isfinite(self.start_factor)):
            raise ValueError(f"start_factor must be at least 1, got {self.start_factor}")
        if not 0 < self.decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {self.decay}")
        base = calibrate_noise_multiplier(self.budget, self.planned_releases, self.mechanism)
        self.multiplier = base * self.start_factor

    def observe(self, accuracy: float, ledger: PrivacyLedger, client: bytes) -> float:
        """Take a round's accuracy; the multiplier for the next round's releases."""
        previous, self.last_accuracy = self.last_accuracy, accuracy
        if previous is None or accuracy - previous > self.min_improvement:
            return self.multiplier
        left = self.planned_releases - ledger.release_count(client)
        if left > 0:
            floor = lowest_feasible_multiplier(
                self.budget, ledger.releases(client), left, self.mechanism
            )
            self.multiplier = max(self.multiplier * self.decay, floor)
        return self.multiplier


def lowest_feasible_multiplier(
    budget: PrivacyBudget, spent: Mapping[Release, int], releases: int, mechanism: str
) -> float:
    """The smallest z such that ``spent`` plus ``releases`` more at z fit ``budget``."""
    if accounted_epsilon(spent, budget.delta) >= budget.epsilon:
        return math.inf
    done = _composed(spent)

    def event(z: float) -> dp_accounting.DpEvent:
        more = dp_accounting.SelfComposedDpEvent(_event(mechanism, z), releases)
        return dp_accounting.ComposedDpEvent([done, more])

    z = float(
        dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant, event, budget.epsilon, budget.delta, bracket_interval=_BRACKET
        )
    )
    planned = dict(spent)
    while True:
        planned[(mechanism, z)] = planned.get((mechanism, z), 0) + releases
        if accounted_epsilon(planned, budget.delta) <= budget.epsilon:
            return z
        planned[(mechanism, z)] -= releases
        z *= 1 + 1e-6


def make_schedule(
    kind: str, budget: PrivacyBudget, planned_releases: int, mechanism: str = "gaussian"
) -> ConstantNoise | AdaptiveNoise:
    if kind == "constant":
        return ConstantNoise(budget, planned_releases, mechanism)
    if kind == "adaptive":
        return AdaptiveNoise(budget, planned_releases, mechanism)
    raise ValueError(f"unknown noise schedule {kind!r}; known: {', '.join(SCHEDULES)}")
