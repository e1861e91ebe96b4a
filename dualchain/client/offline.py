"""The client while its node is out of reach (seed 002 Alg. 2, ``client.policies``): it trains
on from its own latest local model and buffers the results, probes the node on a backoff, and
uploads one averaged update for the whole run once the node answers."""

from __future__ import annotations

import asyncio
import logging
import time

from dualchain.client.links import Refused, Unreachable

log = logging.getLogger("dualchain.client")

LOCAL_TASK_BIT = 1 << 63  # task ids the client makes up itself (never issued by a node)


class Disconnection:
    """A part of ``client.worker.ClientWorker``: its methods use the worker's state, set up
    there."""

    def _can_train_locally(self) -> bool:
        limit = self.config.max_tasks
        return (self._template is not None and self._global is not None
                and (self.privacy is None or self.privacy.exhausted is None)
                and self.buffer.count < self.config.max_buffered
                and (limit is None or self.totals.tasks < limit))

    async def _train_buffered(self) -> None:
        assert self._template is not None and self._global is not None
        if not self.buffer.count:
            origin = self._local if self._local is not None else self._global.params
            version = self._local_version if self._local is not None else self._global.version
            # The node's last task id may already have an update on this version (the node
            # refuses a second one as a replay): a run of our own gets an id of our own.
            self.buffer.start(version, LOCAL_TASK_BIT | self._jitter_rng.getrandbits(62),
                              origin)
        assert self.buffer.latest is not None
        began = time.perf_counter()
        result = await self._train(self.buffer.latest, self._template)
        if result is None:
            return
        self.buffer.add(result.params, result.samples)
        self._local = result.params
        self.totals.buffered += 1
        self.emit({"event": "task", "version": self.buffer.base_version,
                   "task": self.buffer.task, "batches": self._template.batches,
                   "samples": result.samples, "loss": round(result.mean_loss, 5),
                   "local": self.buffer.count,
                   "seconds": round(time.perf_counter() - began, 3), "outcome": "buffered"})

    async def disconnected(self, reason: str) -> None:
        """Train locally and buffer until the node answers again, then flush the buffer."""
        assert self._node is not None
        since = time.monotonic()
        self.totals.disconnections += 1
        self.emit({"event": "disconnected", "reason": reason})
        backoff = self._backoff()
        next_probe = time.monotonic() + (0.0 if reason == "offline" else backoff.next())
        while True:
            offline_end = self._offline_until()
            if offline_end is None and time.monotonic() >= next_probe:
                if await self._probe_and_flush():
                    break
                next_probe = time.monotonic() + backoff.next()
                continue
            if self._can_train_locally():
                await self._train_buffered()
                continue
            wake = next_probe if offline_end is None else self._started + offline_end
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
        gone = time.monotonic() - since
        self.totals.disconnected_s += gone
        self.meter.disconnected_s += gone
        self.emit({"event": "reconnected", "seconds": round(gone, 3)})
        await self._maybe_report()

    async def _probe_and_flush(self) -> bool:
        """True once the node answered and the buffer (if any) was uploaded or refused."""
        assert self._node is not None
        try:
            t0 = time.perf_counter()
            await self._node.ping()
            self.meter.rtt_ms = round((time.perf_counter() - t0) * 1000)
        except Unreachable:
            return False
        except Refused as exc:
            log.warning("node %s answers Ping with %s", self.config.node, exc)
        if not self.buffer.count:
            return True
        buf = self.buffer
        try:
            outcome, norm = await self._upload(buf.base_version, buf.task, buf.samples,
                                               buf.delta())
        except Unreachable:
            return False
        self.totals.flushes += 1
        self.emit({"event": "flush", "version": buf.base_version, "task": buf.task,
                   "updates": buf.count, "samples": buf.samples, "norm": round(norm, 6),
                   "outcome": outcome})
        buf.clear()
        return True
