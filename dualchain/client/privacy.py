"""Local differential privacy of one client process (seed 004 §III-A, ``learning.privacy``).

A client configured with a ``dp`` block trains every task with per-example DP-SGD
(``learning.dp_training.train_local_dp``: the ``record`` unit of privacy, the one that keeps
accuracy; the ``client`` unit leaves digits at chance, docs/incentives.md). Each noisy step is
one release. Before a task trains, ``ClientPrivacy.plan`` records the task's releases in the
client's ``PrivacyLedger`` at the schedule's noise multiplier; when they would take the client
past its epsilon the ledger refuses (``BudgetExceeded``) and the client uploads nothing more.
What the client then uploads is built from those noisy steps only: post-processing, no further
noise.

**The shape of a private task** is the client's, not the node's: ``steps`` noisy steps (2) of
``batch_size`` examples (0: all of the client's examples) at ``learning_rate`` (0.5), whatever
batches, batch size and learning rate the task names. The noise on a step's mean gradient has
standard deviation ``z * 2C / batch`` per coordinate, and without sampling amplification z grows
about as the square root of the releases planned, so what keeps accuracy is large batches and
few releases (docs/incentives.md has the measurements): the node's default task, 20 batches of
64 at 0.05, planned for 40 tasks, needed z = 18 and left the testbed at 0.21.

**The ledger persists** (``ledger`` file, JSON, written atomically before the task trains):
a restarted client reloads its releases, so a restart cannot overspend.

**Planned releases.** Calibration needs the number of releases the budget must cover: ``tasks``
(the configured planned tasks) times ``steps``.

**Adaptive noise's accuracy signal.** A client holds no test set. It reads the test accuracy of
the newest *committed* global model from its server node (GetNodeStatus: every node evaluates
the same committed model on the same held-out split) and feeds it to the schedule once per new
version, the seed's "communication round".
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dualchain.chain.daemon.config import ConfigError
from dualchain.client.links import Refused, Unreachable
from dualchain.learning.privacy import (
    MECHANISMS,
    SCHEDULES,
    AdaptiveNoise,
    BudgetExceeded,
    ConstantNoise,
    PrivacyBudget,
    PrivacyLedger,
    make_schedule,
    noise_generator,
)

__all__ = ["BudgetExceeded", "ClientPrivacy", "DpSettings", "DpStep", "PrivateTraining"]

log = logging.getLogger("dualchain.client")

_KEYS = {"epsilon", "delta", "clip", "mechanism", "schedule", "noise_multiplier", "tasks",
         "steps", "batch_size", "learning_rate", "ledger", "seed"}
STEPS, LEARNING_RATE = 2, 0.5  # a private task's noisy steps (each on all examples) and rate


@dataclass(frozen=True)
class DpSettings:
    """The ``dp`` block of a client config (see ``from_json`` for the keys)."""

    epsilon: float
    delta: float = 1e-5
    clip: float = 1.0
    mechanism: str = "gaussian"
    schedule: str = "constant"
    noise_multiplier: float | None = None  # a fixed z instead of the calibrated one
    tasks: int = 20  # tasks the budget is planned for
    steps: int = STEPS  # noisy steps per task, each one release
    batch_size: int = 0  # examples per noisy step; 0: all of the client's
    learning_rate: float = LEARNING_RATE  # of the noisy steps (the task's rate is for plain SGD)
    ledger: Path | None = None  # where the releases persist (None: memory only)
    seed: int | None = None  # the noise seed; None: a secret one from the OS

    @classmethod
    def from_json(cls, value: Any, base: Path) -> DpSettings:
        """``{"epsilon", "delta", "clip", "mechanism", "schedule", "noise_multiplier", "tasks",
        "steps", "batch_size", "learning_rate", "ledger", "seed"}``; only epsilon is
        required."""
        if not isinstance(value, dict):
            raise ConfigError("config key 'dp' must be an object {epsilon, delta, clip, ...}")
        unknown = sorted(set(value) - _KEYS)
        if unknown:
            raise ConfigError(f"unknown dp keys: {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(_KEYS))})")
        if "epsilon" not in value:
            raise ConfigError("dp needs 'epsilon' (the client's privacy budget)")
        mechanism = value.get("mechanism", "gaussian")
        if mechanism not in MECHANISMS:
            raise ConfigError(f"dp mechanism {mechanism!r} is not one of {', '.join(MECHANISMS)}")
        schedule = value.get("schedule", "constant")
        if schedule not in SCHEDULES:
            raise ConfigError(f"dp schedule {schedule!r} is not one of {', '.join(SCHEDULES)}")
        z = _positive(value, "noise_multiplier", None)
        if z is not None and schedule != "constant":
            raise ConfigError("dp noise_multiplier fixes the noise: it needs schedule constant")
        tasks = _count(value, "tasks", 20, 1)
        steps = _count(value, "steps", STEPS, 1)
        batch_size = _count(value, "batch_size", 0, 0)
        seed = value.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigError(f"dp key 'seed' must be a non-negative integer or null, got {seed!r}")
        ledger = value.get("ledger")
        if ledger is not None and (not isinstance(ledger, str) or not ledger):
            raise ConfigError("dp key 'ledger' must be a non-empty string or null")
        settings = cls(
            epsilon=_positive(value, "epsilon", None), delta=_positive(value, "delta", 1e-5),
            clip=_positive(value, "clip", 1.0), mechanism=mechanism, schedule=schedule,
            noise_multiplier=z, tasks=tasks, steps=steps, batch_size=batch_size,
            learning_rate=_positive(value, "learning_rate", LEARNING_RATE),
            ledger=None if ledger is None else (base / ledger).resolve(), seed=seed)
        try:
            settings.budget()
        except ValueError as exc:
            raise ConfigError(f"dp: {exc}") from None
        return settings

    def budget(self) -> PrivacyBudget:
        return PrivacyBudget(self.epsilon, self.delta)


def _count(data: dict[str, Any], name: str, default: int, least: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"dp key {name!r} must be an integer of at least {least}, got "
                          f"{value!r}")
    return value


def _positive(data: dict[str, Any], name: str, default: float | None) -> Any:
    value = data.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or value == float("inf"):
        raise ConfigError(f"dp key {name!r} must be a positive finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DpStep:
    """What the trainer needs for one task's noisy steps."""

    noise_multiplier: float
    clip: float
    mechanism: str
    rng: np.random.Generator
    learning_rate: float | None  # None: the caller's
    steps: int = STEPS
    batch_size: int = 0  # 0: all of the client's examples


class _Fixed:
    """A constant schedule with a configured z (no calibration)."""

    def __init__(self, z: float) -> None:
        self.multiplier = z

    def observe(self, accuracy: float, ledger: PrivacyLedger, client: bytes) -> float:
        return self.multiplier


class ClientPrivacy:
    """One client's budget, ledger, schedule and noise seed (module docstring)."""

    def __init__(self, settings: DpSettings, client_id: bytes) -> None:
        self.settings = settings
        self.client = client_id
        self.ledger = PrivacyLedger(settings.budget())
        self._schedule: ConstantNoise | AdaptiveNoise | _Fixed | None = None
        self._seed = settings.seed if settings.seed is not None else secrets.randbits(63)
        self._observed_version = -1
        self.exhausted: str | None = None  # the refusal, once the budget is spent
        if settings.ledger is not None and settings.ledger.exists():
            self._load(settings.ledger)

    # -- the budget

    def plan(self, batches: int | None = None) -> DpStep:
        """Records a task's releases (``batches``, by default the settings' ``steps``); raises
        ``BudgetExceeded`` (nothing recorded)."""
        batches = self.settings.steps if batches is None else batches
        if self.exhausted is not None:
            raise BudgetExceeded(self.exhausted)
        schedule = self._schedule_for(batches)
        index = self.ledger.release_count(self.client)
        try:
            self.ledger.record(self.client, self.settings.mechanism, schedule.multiplier,
                               batches)
        except BudgetExceeded as exc:
            self.exhausted = str(exc)
            raise
        self._save()
        return DpStep(schedule.multiplier, self.settings.clip, self.settings.mechanism,
                      noise_generator(self._seed, self.client, index),
                      self.settings.learning_rate, self.settings.steps, self.settings.batch_size)

    def observe(self, version: int, accuracy: float) -> float | None:
        """The committed model's accuracy; the new multiplier when a new version changed it."""
        if self._schedule is None or version <= self._observed_version:
            return None
        self._observed_version = version
        before = self._schedule.multiplier
        after = self._schedule.observe(accuracy, self.ledger, self.client)
        return after if after != before else None

    def _schedule_for(self, batches: int) -> ConstantNoise | AdaptiveNoise | _Fixed:
        if self._schedule is None:
            s = self.settings
            if s.noise_multiplier is not None:
                self._schedule = _Fixed(s.noise_multiplier)
            else:
                self._schedule = make_schedule(s.schedule, s.budget(), s.tasks * batches,
                                               s.mechanism)
        return self._schedule

    # -- figures

    @property
    def spent(self) -> float:
        return self.ledger.spent(self.client)

    @property
    def multiplier(self) -> float | None:
        return None if self._schedule is None else self._schedule.multiplier

    def summary(self) -> dict[str, Any]:
        z = self.multiplier
        return {"epsilon_spent": round(self.spent, 6), "epsilon_budget": self.settings.epsilon,
                "delta": self.settings.delta,
                "releases": self.ledger.release_count(self.client),
                "noise_multiplier": None if z is None else round(z, 6),
                "mechanism": self.settings.mechanism, "schedule": self.settings.schedule,
                "exhausted": self.exhausted is not None}

    # -- persistence

    def _save(self) -> None:
        path = self.settings.ledger
        if path is None:
            return
        rows = [[m, z, n] for (m, z), n in sorted(self.ledger.releases(self.client).items())]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"releases": rows}) + "\n")
        os.replace(tmp, path)

    def _load(self, path: Path) -> None:
        try:
            rows = json.loads(path.read_text())["releases"]
            for mechanism, z, count in rows:
                self.ledger.record(self.client, mechanism, float(z), int(count))
        except BudgetExceeded as exc:
            # A smaller budget than the releases already made: nothing more may be released.
            self.exhausted = str(exc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"dp ledger {path.name} is unreadable: {exc}") from None


def dp_step(model: Any, x: np.ndarray, y: np.ndarray, dp: DpStep, lr: float, seed: int) -> Any:
    """One noisy step on exactly the mini-batch (x, y): one release of ``dp``'s task."""
    from dualchain.learning.dp_training import train_local_dp

    return train_local_dp(model, x, y, steps=1, batch_size=len(y), clip_norm=dp.clip,
                          noise_multiplier=dp.noise_multiplier, rng=dp.rng,
                          mechanism=dp.mechanism, lr=dp.learning_rate or lr, seed=seed)


class PrivateTraining:
    """A part of ``client.worker.ClientWorker`` (its ``privacy``, ``emit``, ``_node``): the
    budget checked before each task, the committed accuracy fed to adaptive noise."""

    async def _plan_privacy(self) -> DpStep | None:
        """Accounts a task's releases; None (with a log line and event) once the budget is
        spent: the client then trains and uploads nothing more."""
        if self.privacy is None or self.privacy.exhausted is not None:
            return None
        try:  # the accountant's arithmetic runs on the training thread, not the event loop
            return await self._in_executor(self.privacy.plan)
        except BudgetExceeded as exc:
            log.warning("privacy budget spent, no more uploads: %s", exc)
            self.emit({"event": "privacy_budget", **self.privacy.summary(), "reason": str(exc)})
            return None

    async def _observe_accuracy(self) -> None:
        """Adaptive noise: the committed global model's accuracy, as the node measured it."""
        if self.privacy is None or self.privacy.settings.schedule != "adaptive":
            return
        try:
            status = await self._node.status()
        except (Unreachable, Refused) as exc:
            log.info("no accuracy from node %s for the noise schedule: %s", self.config.node, exc)
            return
        z = await self._in_executor(self.privacy.observe, status.version, status.accuracy)
        if z is not None:
            self.emit({"event": "privacy_noise", "version": status.version,
                       "accuracy": round(status.accuracy, 4), "noise_multiplier": round(z, 6)})
