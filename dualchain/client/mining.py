"""A client that also mines CMBC (seed 004 §III-B): its miner process and the compute split.

The ``mining`` block of a client config, ``{"theta": 1.0, "key": "keys/client-0-miner.key",
"workers": 1, "log": "logs/client-0-miner.log"}``, makes the client start a ``dualchain miner``
process of its own through the supervisor (``runtime.supervisor``): on the client's lifeline, so
it dies with the client however the client dies, and stopped with it. The miner mines on the
client's CMBC daemon with the client's TLS files, and names the **client's identity id** as its
reward account, so its block rewards land in the account the client's CTBC rewards go to.

The miner signs with a key of its own (``key``), not the client's: every block's reward takes
one of its signer's nonces, and a client whose registration and state reports wait in the
mempool at the nonces a reward took would see them dropped.

The split: seed 004 gives a round ``tau`` epochs of training (``t_T`` each) and then a block of
mining (``t_B``), with ``theta = t_T / t_B``, so a round spends ``1 / (1 + theta)`` of its time
mining (``mining_split.plan_round``; on the testbed a round is one task, ``tau = 1``). The client
keeps that split in time, not by sharing cores (``MiningTurns``): its miner's process group is
stopped (SIGSTOP) while a task trains, and after a task that trained for ``t_T`` the miner hashes
alone, at full duty, for ``t_T / theta`` before the client asks for its next task. The miner is
spawned with a parent-death signal besides its lifeline, so a stopped miner still dies with a
client that was SIGKILLed. The ``mining`` experiment (``bench/mining.py``) studies the same
split under a fixed time budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualchain.chain.daemon.config import ConfigError
from dualchain.chain.rpc import TlsFiles
from dualchain.learning.mining_split import RoundPlan, plan_round
from dualchain.runtime.supervisor import STOP_GRACE_S, Child, Supervisor

_KEYS = {"theta", "key", "workers", "log"}
MAX_WORKERS = 64


def round_split(theta: float) -> RoundPlan:
    """One testbed round (a task, tau = 1 epoch) in units of t_B: its mining share is the
    miner's duty, 1 / (1 + theta)."""
    return plan_round(total=theta + 1.0, rounds=1, theta=theta, t_block=1.0)


@dataclass(frozen=True)
class MiningSettings:
    theta: float  # t_T / t_B: training against mining
    key: Path  # the miner's own key file
    workers: int = 1
    log: Path | None = None  # the miner's stderr; None: the client's

    @property
    def duty(self) -> float:
        return round(round_split(self.theta).mining_duty, 6)

    @classmethod
    def from_json(cls, value: Any, base: Path) -> MiningSettings:
        if not isinstance(value, dict):
            raise ConfigError("config key 'mining' must be an object {theta, key, workers, log}")
        unknown = sorted(set(value) - _KEYS)
        if unknown:
            raise ConfigError(f"unknown mining keys: {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(_KEYS))})")
        theta = value.get("theta")
        if isinstance(theta, bool) or not isinstance(theta, int | float) or \
                not (math.isfinite(theta) and theta > 0):
            raise ConfigError(f"mining key 'theta' must be a positive number, got {theta!r}")
        key = value.get("key")
        if not isinstance(key, str) or not key:
            raise ConfigError("mining needs 'key', the miner's key file")
        workers = value.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or \
                not 1 <= workers <= MAX_WORKERS:
            raise ConfigError(f"mining key 'workers' must be an integer in 1..{MAX_WORKERS}, "
                              f"got {workers!r}")
        log = value.get("log")
        if log is not None and (not isinstance(log, str) or not log):
            raise ConfigError("mining key 'log' must be a non-empty string or null")
        return cls(float(theta), (base / key).resolve(), workers,
                   None if log is None else (base / log).resolve())


def miner_argv(settings: MiningSettings, cmbc: str, account: bytes,
               tls: TlsFiles | None) -> list[str]:
    """The command line of the client's miner."""
    argv = [sys.executable, "-m", "dualchain.cli", "miner", "--cmbc", cmbc,
            "--key", str(settings.key), "--reward-account", account.hex(),
            "--workers", str(settings.workers), "--duty", "1",
            "--log-level", "WARNING"]
    if tls is not None:
        argv += ["--tls-ca", str(tls.ca), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    return argv


class ClientMiner:
    """The client's miner process, started through the supervisor (it dies with the client).
    Its ``block`` events are relayed as the client's ``mined`` events."""

    def __init__(self, settings: MiningSettings, cmbc: str, account: bytes,
                 tls: TlsFiles | None, cwd: Path) -> None:
        self.settings = settings
        self._argv = miner_argv(settings, cmbc, account, tls)
        self._cwd = cwd
        self._events: queue.Queue[tuple[Any, dict[str, Any]]] = queue.Queue()
        self._supervisor = Supervisor(self._events)
        self.child: Child | None = None
        self.blocks = 0  # solutions its daemon connected

    def start(self) -> None:
        if self.settings.log is not None:
            self.settings.log.parent.mkdir(parents=True, exist_ok=True)
        # foreign: the kernel also SIGKILLs it when the client dies, which a miner stopped
        # between turns (SIGSTOP) could not notice on its lifeline.
        self.child = self._supervisor.spawn("miner", self._argv, cwd=self._cwd,
                                            log=self.settings.log, foreign=True)

    def pause(self) -> None:
        """Stops the miner and its hashing workers (its process group) while the client trains."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self.child is not None and self.child.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, sig)

    @property
    def pid(self) -> int | None:
        return None if self.child is None else self.child.pid

    def relay(self, loop: asyncio.AbstractEventLoop,
              emit: Callable[[dict[str, Any]], None]) -> None:
        """Emits ``mined`` per connected block and ``miner_exited`` on the client's loop, from
        a thread that waits on the supervisor's events."""
        def send(event: dict[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the client's loop has closed
                loop.call_soon_threadsafe(emit, event)

        def forward() -> None:
            while True:
                _, event = self._events.get()
                if event["event"] == "block" and event.get("outcome") == "connected":
                    self.blocks += 1
                    send({"event": "mined", "height": event["height"], "hash": event["hash"],
                          "reward_account": event.get("reward_account")})
                elif event["event"] == "exited":
                    send({"event": "miner_exited", "code": event["code"]})
                    return

        threading.Thread(target=forward, name="miner-relay", daemon=True).start()

    def stop(self) -> dict[str, Any]:
        """Stops the miner (SIGTERM, then SIGKILL of its group after a grace); its totals."""
        if self.child is None:
            return {}
        self.resume()  # a stopped miner would not act on SIGTERM
        code = self._supervisor.stop([self.child], STOP_GRACE_S)["miner"]
        totals = next((e for e in reversed(self.child.events) if e["event"] == "stopped"), {})
        return {"theta": self.settings.theta, "duty": self.settings.duty, "exit_code": code,
                **{k: v for k, v in totals.items() if k != "event"}}


class MiningTurns:
    """The client's training and mining turns (the module docstring): ``training`` before a task
    trains, ``trained`` after it, and ``mining_turn`` awaited before the next task is asked for.
    ``miner`` needs ``pause`` and ``resume``."""

    def __init__(self, miner: Any, theta: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._miner = miner
        self.theta = theta
        self._clock = clock
        self._started = 0.0
        self._until = 0.0
        self.training_s = 0.0
        self.mining_s = 0.0

    def training(self) -> None:
        self._miner.pause()
        self._started = self._clock()

    def trained(self) -> None:
        """Resumes the miner for a turn of ``t_T / theta``, t_T the training just ended."""
        now = self._clock()
        turn = (now - self._started) / self.theta
        self.training_s += now - self._started
        self.mining_s += turn
        self._until = now + turn
        self._miner.resume()

    async def mining_turn(self) -> None:
        """Returns when the current mining turn is over (at once when there is none)."""
        left = self._until - self._clock()
        if left > 0:  # the turn's length is the split itself, not a wait for an event
            await asyncio.sleep(left)

    def totals(self) -> dict[str, float]:
        return {"training_s": round(self.training_s, 3), "mining_s": round(self.mining_s, 3)}
