"""The client (FL device) loop: registration, tasks, signed uploads, buffering, state reports.

One ``ClientWorker`` per process. The pieces that carry a decision are plain classes and
functions the unit tests call directly: the rules in ``client.policies`` (backoff, averaging,
clipping, offline windows), the measurements in ``client.measure``; the RPC links are in
``client.links``, the torch side in ``client.trainer`` and the disconnected mode in
``client.offline``.

**Loop.** The client sends a CLIENT_REGISTER transaction to CMBC, then polls its server node's
GetTask with exponential backoff and jitter until the node stops answering UNAUTHENTICATED (the
registration is final on CMBC). Then, per task: Ping (round trip time), GetTask (``wait_ms > 0``:
ask again after that long), GetModel only when the task names another model hash than the
global model held (its SHA-256 is checked while the chunks arrive), train ``batches`` mini-batches
on a single-thread executor (never on the event loop), sign ``params_after - params_before`` as a
``SignedUpdate`` and upload it in chunks of at most 1 MiB. Every ``report_every`` trained tasks a
STATE_REPORT goes to CMBC with the inputs of seed 000 eq. 8 as measured here: rtt of the last
Ping, completion time of the last task (from receiving it to the node's reply to the upload),
speed (samples per second of wall training time, emulated slowdown included), failures and time
disconnected since the previous report.

**Slowdown is emulation.** A device ``slowdown`` times slower than this machine is emulated by
sleeping ``(slowdown - 1) x`` each mini-batch's measured compute time after that batch. The
arithmetic is real and runs at this machine's speed; only the wall time, and hence every timing
the client measures and reports (speed, completion time), is stretched. It does not emulate
memory limits or a slower network.

**Disconnection (seed 002 Alg. 2)** and the buffered runs it starts are described in
``client.policies``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dualchain.apps.ctbc.fl import SignedUpdate, sign_update
from dualchain.chain.identity import Signer
from dualchain.chain.rpc import channel_options, open_channel
from dualchain.chain.types import TxKind
from dualchain.client.attack import ClientAdversary, latest_commit_updates
from dualchain.client.config import ClientConfig
from dualchain.client.errors import ClientError
from dualchain.client.links import (
    ChainLink,
    NodeLink,
    NotRegistered,
    Refused,
    Timing,
    Unreachable,
)
from dualchain.client.measure import Meter, Totals
from dualchain.client.mining import MiningTurns
from dualchain.client.offline import LOCAL_TASK_BIT, Disconnection
from dualchain.client.policies import (
    Backoff,
    OfflineSchedule,
    UpdateBuffer,
    average_buffered,
    clip_to_norm,
)
from dualchain.client.privacy import ClientPrivacy, PrivateTraining
from dualchain.client.registration import Registration
from dualchain.client.trainer import (
    ClientData,
    LocalTrainer,
    TrainResult,
    init_training_thread,
    load_client_data,
    task_seed,
)
from dualchain.learning.codec import CodecError, decode_params, encode_params
from dualchain.proto.v1 import node_pb2 as node_pb
from dualchain.proto.v1.chain_pb2_grpc import ChainServiceStub

# Re-exported: these names were importable from here before the split.
__all__ = ["LOCAL_TASK_BIT", "Backoff", "ClientData", "ClientError", "ClientWorker",
           "LocalTrainer", "Meter", "OfflineSchedule", "Refused", "Timing", "Unreachable",
           "UpdateBuffer", "average_buffered", "clip_to_norm", "emit_json", "load_client_data",
           "task_seed"]

log = logging.getLogger("dualchain.client")


Emit = Callable[[dict], None]


def emit_json(event: dict) -> None:
    """The default event sink: one JSON line on stdout."""
    print(json.dumps(event), flush=True)


# --- the worker ----------------------------------------------------------------------------


@dataclass
class _Global:
    version: int
    model_hash: bytes
    params: np.ndarray


@dataclass(frozen=True)
class _TaskTemplate:
    task_id: int
    batches: int
    batch_size: int
    lr: float


class ClientWorker(Registration, Disconnection, PrivateTraining):
    """One client's loop (the module docstring); the disconnected mode is ``client.offline``'s
    mixin, which uses the state set up here."""

    def __init__(self, config: ClientConfig, signer: Signer, data: ClientData, *,
                 emit: Emit = emit_json, timing: Timing | None = None,
                 started: float | None = None) -> None:
        self.config = config
        self.signer = signer
        self.emit = emit
        self.timing = timing or Timing()
        self._data = data
        self._trainer: LocalTrainer | None = None  # built by run() while it registers
        self.schedule = OfflineSchedule(config.offline)
        self.totals = Totals()
        self.meter = Meter()
        self.buffer = UpdateBuffer()
        self._started = time.monotonic() if started is None else started
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dualchain-train",
                                            initializer=init_training_thread,
                                            initargs=(config.threads,))
        self._cancel = threading.Event()
        self._drop_rng = random.Random(f"drop/{config.seed}")
        self._jitter_rng = random.Random(f"jitter/{config.seed}/{signer.id.hex()}")
        self._global: _Global | None = None
        self._local: np.ndarray | None = None  # the client's own latest local model
        self._local_version = 0  # the global version it descends from
        self._template: _TaskTemplate | None = None
        self._pending: node_pb.Task | None = None
        self._node: NodeLink | None = None
        self._cmbc: ChainLink | None = None
        self._local_index = 0
        self._ctbc_stub: Any = None  # a lazy client's CTBC link, opened by run()
        self.adversary = ClientAdversary(config.attack, config.watermark, config.seed, signer.id,
                                         signer.public_key, self._seen_updates)
        self.privacy = None if config.dp is None else ClientPrivacy(config.dp, signer.id)
        self.mining_turns: MiningTurns | None = None  # set when the client also mines
        # Grows over consecutive refusals or bad tasks; reset by a task that trains.
        self._retry = self._backoff()

    # -- lifecycle

    async def run(self) -> None:
        """Registers, then works until ``max_tasks`` (forever when null); cancel to stop."""
        opts = channel_options()
        async with open_channel(self.config.node, self.config.tls, opts) as node_ch, \
                open_channel(self.config.cmbc, self.config.tls, opts) as cmbc_ch, \
                open_channel(self.config.ctbc or self.config.cmbc, self.config.tls,
                             opts) as ctbc_ch:
            self._ctbc_stub = ChainServiceStub(ctbc_ch) if self.config.ctbc else None
            self._node = NodeLink(node_ch, self.signer.id, self.timing)
            self._cmbc = ChainLink(cmbc_ch, self.signer, self.config.cmbc_chain_id, self.timing)
            # torch's import and the model are made on the training thread meanwhile: the
            # registration waits for CMBC finality, so the process starts faster.
            trainer = asyncio.ensure_future(self._in_executor(lambda: self.trainer))
            await self.register()
            await trainer
            while not self._finished():
                self.trainer.slowdown = self._slowdown_now()
                await self.step()

    async def run_until(self, stop: asyncio.Event) -> None:
        """``run`` until it ends or ``stop`` is set; then abandon the batch and clean up."""
        work = asyncio.create_task(self.run())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._cancel.set()  # the training thread abandons the task after its batch
            stopper.cancel()
            work.cancel()
            await asyncio.wait({work})  # channels close as run() unwinds
            await asyncio.get_running_loop().run_in_executor(None, self.close)
        error = None if work.cancelled() else work.exception()
        if error is not None:
            raise error

    @property
    def trainer(self) -> LocalTrainer:
        """The torch side, made at first use (importing torch costs seconds)."""
        if self._trainer is None:
            self._trainer = LocalTrainer(self.config.dataset, self._data, self.config.slowdown,
                                         self.config.model)
        return self._trainer

    def _slowdown_now(self) -> float:
        """The configured slowdown, or the latest of ``slowdown_changes`` already due."""
        elapsed = time.monotonic() - self._started
        due = [s for at, s in self.config.slowdown_changes if at <= elapsed]
        return due[-1] if due else self.config.slowdown

    def close(self) -> None:
        self._cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def summary(self) -> dict:
        t = self.totals
        return {"event": "stopped", "tasks": t.tasks, "accepted": t.accepted,
                "refused": t.refused, "dropped": t.dropped, "buffered": t.buffered,
                "flushes": t.flushes, "clipped": t.clipped, "failures": t.failures,
                "reports": t.reports, "models_fetched": t.models_fetched,
                "disconnections": t.disconnections,
                "disconnected_s": round(t.disconnected_s, 3), "samples": t.samples,
                "uploaded_bytes": t.uploaded_bytes,
                **({} if self.privacy is None else {"privacy": self.privacy.summary()}),
                "version": None if self._global is None else self._global.version,
                "seconds": round(self._now(), 3)}

    # -- helpers

    def _now(self) -> float:
        return time.monotonic() - self._started

    def _offline_until(self) -> float | None:
        return self.schedule.offline_until(self._now())

    def _finished(self) -> bool:
        limit = self.config.max_tasks
        spent = self.privacy is not None and self.privacy.exhausted is not None
        return (spent or (limit is not None and self.totals.tasks >= limit)) \
            and not self.buffer.count

    def _backoff(self, maximum: float | None = None) -> Backoff:
        return Backoff(self.timing.backoff_initial_s,
                       maximum or self.timing.backoff_max_s, rng=self._jitter_rng)

    async def _sleep_online(self) -> None:
        """Waits out an offline window (the device may contact nothing inside one)."""
        until = self._offline_until()
        while until is not None:
            await asyncio.sleep(until - self._now())
            until = self._offline_until()

    async def _in_executor(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _fail(self, n: int = 1) -> None:
        self.totals.failures += n
        self.meter.failures += n

    # -- one step of the task loop

    async def step(self) -> None:
        assert self._node is not None
        if self._offline_until() is not None:
            await self.disconnected("offline")
            return
        if self.mining_turns is not None:
            await self.mining_turns.mining_turn()
        task, self._pending = self._pending, None
        try:
            t0 = time.perf_counter()
            await self._node.ping()
            self.meter.rtt_ms = round((time.perf_counter() - t0) * 1000)
            if task is None:
                task = await self._node.get_task()
        except Unreachable as exc:
            log.warning("node %s unreachable: %s", self.config.node, exc)
            await self.disconnected("unreachable")
            return
        except NotRegistered:
            log.warning("node %s no longer knows this client; registering again",
                        self.config.node)
            await self.register()
            return
        except Refused as exc:
            log.warning("node %s refused: %s", self.config.node, exc)
            await asyncio.sleep(self._retry.next())
            return
        if task.wait_ms > 0:
            await asyncio.sleep(task.wait_ms / 1000)
            return
        await self.run_task(task)

    def _check_task(self, task: node_pb.Task) -> str | None:
        if task.dataset and task.dataset != self.config.dataset:
            raise ClientError(f"the node's task is for dataset {task.dataset!r}, this client "
                              f"holds {self.config.dataset!r}", code="dataset")
        if task.batches < 1 or task.batch_size < 1:
            return f"task {task.task_id} has {task.batches} batches of {task.batch_size}"
        if not (task.learning_rate > 0 and math.isfinite(task.learning_rate)):
            return f"task {task.task_id} has learning rate {task.learning_rate}"
        if len(task.model_hash) != 32:
            return f"task {task.task_id} names no 32-byte model hash"
        return None

    async def _global_for(self, task: node_pb.Task) -> np.ndarray:
        """The task's model: the one held if the hash matches, else fetched and checked."""
        assert self._node is not None
        model_hash = bytes(task.model_hash)
        if self._global is not None and self._global.model_hash == model_hash:
            return self._global.params
        blob = await self._node.get_model(model_hash)
        decoded = await self._in_executor(decode_params, blob)
        if tuple(decoded.shapes) != self.trainer.shapes:
            raise ClientError(f"model {model_hash.hex()[:16]} of version {task.version} does "
                              f"not have the layout of the {self.config.dataset} model",
                              code="model_layout")
        self._global = _Global(task.version, model_hash, decoded.flat)
        self.totals.models_fetched += 1
        return decoded.flat

    async def _train(self, start: np.ndarray, template: _TaskTemplate) -> TrainResult | None:
        """The task trained (None: stopping, or the privacy budget is spent)."""
        dp = await self._plan_privacy()
        if self.privacy is not None and dp is None:
            return None
        self._local_index += 1
        seed = task_seed(self.config.seed, template.task_id, self._local_index)
        if self.mining_turns is not None:  # the client also mines: not while it trains
            self.mining_turns.training()
        try:
            result = await self._in_executor(self.trainer.train, start, template.batches,
                                             template.batch_size, template.lr, seed,
                                             self._cancel, dp)
        finally:
            if self.mining_turns is not None:
                self.mining_turns.trained()
        if result is not None:
            self.totals.tasks += 1
            self.totals.samples += result.samples
            self.meter.tasks += 1
            self.meter.last_task = template.task_id
            self.meter.speed = result.samples / max(result.wall_s, 1e-9)
            self.meter.last_samples = result.samples
        return result

    async def run_task(self, task: node_pb.Task) -> None:
        assert self._node is not None
        received = time.perf_counter()
        problem = self._check_task(task)
        if problem is not None:
            log.warning("ignoring a malformed task: %s", problem)
            self._fail()
            await asyncio.sleep(self._retry.next())
            return
        try:
            start = await self._global_for(task)
        except Unreachable as exc:
            log.warning("model fetch interrupted: %s", exc)
            self._fail()  # task abandoned
            await self.disconnected("unreachable")
            return
        except (Refused, CodecError) as exc:
            log.warning("model %s of task %d not fetched: %s", bytes(task.model_hash).hex()[:16],
                        task.task_id, exc)
            self._fail()
            await asyncio.sleep(self._retry.next())
            return
        self._retry.reset()
        template = _TaskTemplate(task.task_id, task.batches, task.batch_size,
                                 float(task.learning_rate))
        self._template = template
        if self.adversary.skips(task.version):  # lazy, free rider, dropped out
            await self._skip_task(task, start.size)
            return
        self.trainer.data = self.adversary.data_for(task.version, self._data)
        result = await self._train(start, template)
        if result is None:
            return  # stopping
        self._local, self._local_version = result.params, task.version
        # train_s (emulated slowdown included) and trained_at (wall clock) place the training
        # inside a round: bench paper fig8 subtracts it from the round's wall time.
        event = {"event": "task", "version": task.version, "task": task.task_id,
                 "batches": task.batches, "samples": result.samples,
                 "loss": round(result.mean_loss, 5), "train_s": round(result.wall_s, 3),
                 "trained_at": round(time.time(), 3)}
        if self._offline_until() is not None:
            self._buffer_result(task.version, task.task_id, start, result)
            self.emit({**event, "seconds": round(time.perf_counter() - received, 3),
                       "outcome": "buffered"})
            await self.disconnected("offline")
            return
        if self._drop_rng.random() < self.config.drop_prob:
            self.totals.dropped += 1
            self._fail()
            self.emit({**event, "seconds": round(time.perf_counter() - received, 3),
                       "outcome": "dropped"})
            await self._maybe_report()
            return
        delta = await self._in_executor(self.adversary.transform, result.params - start,
                                        task.version)
        try:
            outcome, _ = await self._upload(task.version, task.task_id, result.samples, delta)
        except Unreachable as exc:
            log.warning("upload of task %d failed: %s", task.task_id, exc)
            self._buffer_result(task.version, task.task_id, start, result)
            self.emit({**event, "seconds": round(time.perf_counter() - received, 3),
                       "outcome": "buffered"})
            await self.disconnected("unreachable")
            return
        self.meter.completion_ms = round((time.perf_counter() - received) * 1000)
        self.emit({**event, "seconds": round(time.perf_counter() - received, 3),
                   "outcome": outcome})
        await self._observe_accuracy()
        await self._maybe_report()

    async def _skip_task(self, task: node_pb.Task, size: int) -> None:
        """A task the attack does not train: it uploads what the attack makes, if anything."""
        delta = await self.adversary.skipped_delta(task.version, size)
        event = {"event": "task", "version": task.version, "task": task.task_id,
                 "attack": self.adversary.attack.kind}
        if delta is None:
            self.emit({**event, "outcome": "skipped"})
            await asyncio.sleep(1.0)  # nothing to send: ask again later
            return
        outcome, _ = await self._upload(task.version, task.task_id,
                                        task.batches * task.batch_size, delta)
        self.emit({**event, "outcome": outcome})

    async def _seen_updates(self) -> list[tuple[bytes, np.ndarray]]:
        if self._ctbc_stub is None:
            return []
        return await latest_commit_updates(self._ctbc_stub, self.timing.rpc_timeout_s)

    def _buffer_result(self, version: int, task_id: int, start: np.ndarray,
                       result: TrainResult) -> None:
        if not self.buffer.count:
            self.buffer.start(version, task_id, start)
        self.buffer.add(result.params, result.samples)
        self.totals.buffered += 1

    # -- upload

    def _sign(self, base_version: int, task_id: int, samples: int,
              delta: np.ndarray) -> tuple[SignedUpdate, float, bool]:
        delta = self.adversary.mark(delta.astype(np.float32, copy=False), base_version)
        delta, norm, clipped = clip_to_norm(delta, self.config.max_update_norm)
        params = encode_params(delta, self.trainer.shapes)
        update = sign_update(self.signer, chain_id=self.config.ctbc_chain_id,
                             base_version=base_version, samples=samples, task=task_id,
                             params=params)
        return update, norm, clipped

    async def _upload(self, base_version: int, task_id: int, samples: int,
                      delta: np.ndarray) -> tuple[str, float]:
        """Signs and uploads: (``accepted`` or ``refused:<code>``, L2 norm before clipping).

        ``Unreachable`` propagates (the caller buffers)."""
        assert self._node is not None
        update, norm, clipped = await self._in_executor(self._sign, base_version, task_id,
                                                        samples, delta)
        if clipped:
            self.totals.clipped += 1
            log.info("update of task %d has L2 norm %.4g over the bound %.4g: clipped",
                     task_id, norm, self.config.max_update_norm)
        try:
            await self._node.submit_update(update)
        except Refused as exc:
            self.totals.refused += 1
            self._fail()
            log.warning("update of task %d refused: %s", task_id, exc)
            return f"refused:{exc.code}", norm
        self.totals.accepted += 1
        self.totals.uploaded_bytes += len(update.encoded)
        return "accepted", norm

    # -- state reports

    async def _maybe_report(self) -> None:
        if self.meter.tasks < self.config.report_every or self._offline_until() is not None:
            return
        assert self._cmbc is not None
        report = self.meter.report()
        if self.privacy is not None:
            report = replace(report, epsilon_micro=round(self.privacy.spent * 1e6))
        try:
            tx_hash = await self._cmbc.submit(TxKind.STATE_REPORT, report.encode())
        except (Unreachable, Refused) as exc:
            log.warning("state report not accepted by CMBC %s: %s (retrying after the next "
                        "task)", self.config.cmbc, exc)
            return
        self.meter.reported()
        self.totals.reports += 1
        self.emit({"event": "report", "tx": tx_hash.hex(), "task": report.task,
                   "rtt_ms": report.rtt_ms, "completion_ms": report.completion_ms,
                   "speed_milli": report.speed_milli, "failures": report.failures,
                   "disconnected_ms": report.disconnected_ms, "samples": report.samples,
                   **({} if self.privacy is None else {"privacy": self.privacy.summary()})})
