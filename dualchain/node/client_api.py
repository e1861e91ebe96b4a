"""The client API the gRPC servicer calls: tasks, update admission (checked, stored in CTBC, pooled
and relayed to every other node), status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import grpc

from dualchain.apps.ctbc.fl import SignedUpdate
from dualchain.chain.errors import DecodeError
from dualchain.node.gate import CheckedUpdate, UpdateRefused
from dualchain.node.intake import UploadHead, UploadIntake
from dualchain.node.uploads import CHUNK
from dualchain.proto.v1 import node_pb2 as node_pb
from dualchain.proto.v1 import node_pb2_grpc as node_grpc

log = logging.getLogger("dualchain.node")

CATCH_UP_S = 5.0


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, max(len(data), 1), size)]


def update_chunks(update: SignedUpdate) -> list[node_pb.UpdateChunk]:
    """An update as an upload stream: the first chunk carries its head (``node.intake``)."""
    parts = [node_pb.UpdateChunk(data=c) for c in chunks(update.encoded)]
    parts[0].head.params_hash = update.params_hash
    parts[0].head.signature = update.signature
    return parts


@dataclass
class IssuedTask:
    task: int
    version: int
    issued: float


@dataclass
class Arrival:
    """An update from one of this node's clients: its task, completion (task handed out to
    update received, seconds) and the Unix time it was received."""
    client: bytes
    task: int
    completion_s: float
    at: float


class ClientApi:
    """A part of ``node.server.ServerNode``: its methods use the node's state, set up there."""

    def task_for(self, client: bytes) -> node_pb.Task:
        if client not in self.clients:
            raise UpdateRefused("unknown_client", f"client {client.hex()[:16]} is not registered "
                                "on CMBC (or its registration is not final yet)")
        if not self.admitted:  # a joiner hands out no task before its admission
            return node_pb.Task(wait_ms=500)
        if self.rules.mode == "fedavg" or self.config.aggregation.policy != "window":
            issued = self._issued.get(client)
            if issued is not None and issued.version == self.version:
                return node_pb.Task(wait_ms=200)  # one task per client and round
        self._task_counter += 1
        self._issued[client] = IssuedTask(self._task_counter, self.version, time.monotonic())
        t = self.config.task
        batches = self.planner.batches_for(client) or t.batches  # the final plan's, if any
        return node_pb.Task(task_id=self._task_counter, version=self.version,
                            model_hash=self.model_hash, batches=batches,
                            batch_size=t.batch_size, learning_rate=t.learning_rate,
                            dataset=self.fl.dataset)

    def open_upload(self, first: node_pb.UpdateChunk) -> UploadHead:
        """Admits an upload by its first chunk (``node.intake``); the caller ``close``s it."""
        assert self.intake is not None
        try:
            return self.intake.open(bytes(first.data), bytes(first.head.params_hash),
                                    bytes(first.head.signature), self.version)
        except UpdateRefused as exc:
            self.metrics.updates_refused.labels(exc.code).inc()
            raise

    async def accept_update(self, raw: bytes, relay: bool, head: UploadHead) -> CheckedUpdate:
        """Checks an update (the one its upload's ``head`` declared), stores its blob in CTBC
        and pools it; relays client uploads."""
        assert self.gate is not None
        try:
            UploadIntake.check_assembled(head, raw)
        except UpdateRefused as exc:
            self.metrics.updates_refused.labels(exc.code).inc()
            raise
        await self._catch_up_for(raw)
        try:
            checked = self.gate.check(raw, self.version)
        except UpdateRefused as exc:
            self.metrics.updates_refused.labels(exc.code).inc()
            raise
        await self._put_blob(raw)
        issued = self._issued.get(checked.update.client)
        if issued is not None:
            self._arrivals[checked.update.digest] = Arrival(
                checked.update.client, checked.update.task, time.monotonic() - issued.issued,
                time.time())
        self.pool.add(checked)
        self.metrics.updates_accepted.inc()
        if relay:
            self.traffic["bytes_from_clients"] += len(raw)
            stream = update_chunks(checked.update)
            for nid, channel in self._peers.items():
                self._tasks.append(asyncio.create_task(self._relay(nid, channel, stream)))
            self._tasks = [t for t in self._tasks if not t.done()]
        return checked

    async def _catch_up_for(self, raw: bytes) -> None:
        """An update on a version this node has not adopted yet (its CTBC stream lags the
        client's node by a block or two) waits briefly instead of being refused."""
        try:
            base = SignedUpdate.decode(raw).base_version
        except DecodeError:
            return  # the gate refuses it with its reason
        deadline = time.monotonic() + CATCH_UP_S
        while base > self.version and time.monotonic() < deadline:
            self._version_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._version_changed.wait(),
                                       deadline - time.monotonic())

    async def _relay(self, nid: bytes, channel: grpc.aio.Channel,
                     stream: list[node_pb.UpdateChunk]) -> None:
        stub = node_grpc.NodeServiceStub(channel)
        try:
            await stub.RelayUpdate(iter(stream), timeout=30)
            self.traffic["bytes_relayed"] += sum(len(c.data) for c in stream)
        except grpc.aio.AioRpcError as exc:
            log.info("relay to %s failed: %s", nid.hex()[:16], exc.details())

    def status(self) -> node_pb.NodeStatus:
        return node_pb.NodeStatus(
            node_id=self.signer.id, version=self.version, accuracy=self.accuracy, loss=self.loss,
            updates_accepted=int(self.metrics.accepted_count()),
            updates_refused=self.metrics.refused_counts(), aggregator=self.is_aggregator(),
            ctbc_height=self._ctbc_height, cmbc_final_height=self._cmbc_final,
            clients=len(self.clients), **self.traffic)
