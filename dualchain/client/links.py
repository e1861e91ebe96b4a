"""The client's RPC links: its server node's NodeService and a CMBC daemon's ChainService.

A failed call becomes ``Unreachable`` (no answer) or ``Refused`` (an error status with its
reason code), the two cases the worker's loop tells apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from dualchain.apps.ctbc.fl import SignedUpdate
from dualchain.chain.identity import Signer
from dualchain.chain.outbox import Outbox
from dualchain.chain.types import TxKind
from dualchain.learning.codec import ChunkAssembler
from dualchain.learning.codec import iter_chunks as codec_chunks
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from dualchain.proto.v1 import node_pb2 as node_pb
from dualchain.proto.v1 import node_pb2_grpc as node_grpc

CHUNK_BYTES = 1 << 20  # upload chunk size (the node takes at most 1 MiB per chunk)
MAX_MODEL_BYTES = 512 * 1024 * 1024

_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Unreachable(Exception):
    """The peer did not answer (UNAVAILABLE, DEADLINE_EXCEEDED)."""


class Refused(Exception):
    """The peer answered with an error status; ``code`` is the ``code`` of "code: reason"."""

    def __init__(self, status: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{status.name}: {details}")
        self.status = status
        self.details = details
        head, sep, _ = details.partition(":")
        self.code = head.strip() if sep and head.strip() and " " not in head.strip() \
            else status.name.lower()


class NotRegistered(Refused):
    """GetTask answered UNAUTHENTICATED: the registration is not final (yet)."""


def map_error(exc: grpc.aio.AioRpcError) -> Exception:
    status = exc.code()
    if status in _UNREACHABLE:
        return Unreachable(f"{status.name}: {exc.details()}")
    return Refused(status, exc.details() or "")


@dataclass(frozen=True)
class Timing:
    """Backoffs and deadlines (tests shrink them)."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    register_poll_max_s: float = 5.0
    reregister_s: float = 120.0  # send CLIENT_REGISTER again when still unknown after this long
    rpc_timeout_s: float = 10.0
    transfer_timeout_s: float = 300.0


class NodeLink:
    """The client's calls to its server node's NodeService."""

    def __init__(self, channel: grpc.aio.Channel, client_id: bytes, timing: Timing) -> None:
        self._stub = node_grpc.NodeServiceStub(channel)
        self._id = client_id
        self._timing = timing

    async def ping(self) -> node_pb.PingReply:
        try:
            return await self._stub.Ping(node_pb.PingRequest(client_id=self._id),
                                         timeout=self._timing.rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise map_error(exc) from None

    async def status(self) -> node_pb.NodeStatus:
        try:
            return await self._stub.GetNodeStatus(node_pb.NodeStatusRequest(),
                                                  timeout=self._timing.rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise map_error(exc) from None

    async def get_task(self) -> node_pb.Task:
        try:
            return await self._stub.GetTask(node_pb.TaskRequest(client_id=self._id),
                                            timeout=self._timing.rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise NotRegistered(exc.code(), exc.details() or "") from None
            raise map_error(exc) from None

    async def get_model(self, model_hash: bytes) -> bytes:
        """The model blob, checked against ``model_hash`` (a mismatch is ``CodecError``)."""
        assembler = ChunkAssembler(model_hash, MAX_MODEL_BYTES)
        try:
            call = self._stub.GetModel(node_pb.GetModelRequest(model_hash=model_hash),
                                       timeout=self._timing.transfer_timeout_s)
            async for chunk in call:
                assembler.add(chunk.data)
        except grpc.aio.AioRpcError as exc:
            raise map_error(exc) from None
        return assembler.finish()

    async def submit_update(self, update: SignedUpdate) -> node_pb.SubmitUpdateReply:
        """Uploads in chunks; the first carries the update's head (blob hash, signature), by
        which the node checks this client before it reads further."""
        chunks = [node_pb.UpdateChunk(data=c) for c in codec_chunks(update.encoded, CHUNK_BYTES)]
        chunks[0].head.params_hash = update.params_hash
        chunks[0].head.signature = update.signature
        try:
            return await self._stub.SubmitUpdate(iter(chunks),
                                                 timeout=self._timing.transfer_timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise map_error(exc) from None


class ChainLink:
    """Signed records to a CMBC daemon's ChainService, through an outbox that signs again what
    the chain dropped behind a refused record (``chain.outbox``)."""

    def __init__(self, channel: grpc.aio.Channel, signer: Signer, chain_id: str,
                 timing: Timing) -> None:
        self._outbox = Outbox(chain_grpc.ChainServiceStub(channel), signer, chain_id,
                              timing.rpc_timeout_s)

    async def submit(self, kind: TxKind, payload: bytes) -> bytes:
        """Follows up the earlier records (a dropped one is signed again first), then signs
        and submits; returns the tx hash. A nonce race is retried with a fresh nonce."""
        try:
            await self._outbox.follow_up()
            return await self._outbox.submit(kind, payload)
        except grpc.aio.AioRpcError as exc:
            raise map_error(exc) from None
