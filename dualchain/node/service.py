"""The gRPC face of a server node: decode, call ``ServerNode``, map refusals to statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from dualchain.chain.clock import now_ms
from dualchain.node.gate import UpdateRefused
from dualchain.node.server import CHUNK, ServerNode
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import node_pb2 as node_pb
from dualchain.proto.v1 import node_pb2_grpc as node_grpc

MAX_UPDATE_BYTES = 256 * 1024 * 1024

_STATUS = {
    "unknown_client": grpc.StatusCode.UNAUTHENTICATED,
    "wrong_key": grpc.StatusCode.UNAUTHENTICATED,
    "bad_signature": grpc.StatusCode.UNAUTHENTICATED,
    "bad_key": grpc.StatusCode.UNAUTHENTICATED,
    "unknown_version": grpc.StatusCode.FAILED_PRECONDITION,
    "too_stale": grpc.StatusCode.FAILED_PRECONDITION,
    "replay": grpc.StatusCode.FAILED_PRECONDITION,
    "oversized": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def _refuse(context: grpc.aio.ServicerContext, exc: UpdateRefused) -> None:
    await context.abort(_STATUS.get(exc.code, grpc.StatusCode.INVALID_ARGUMENT),
                        f"{exc.code}: {exc.reason}")


async def _gather(request_iterator: AsyncIterator, context: grpc.aio.ServicerContext) -> bytes:
    parts: list[bytes] = []
    total = 0
    async for chunk in request_iterator:
        total += len(chunk.data)
        if total > MAX_UPDATE_BYTES:
            await _refuse(context, UpdateRefused("oversized",
                                                 f"update exceeds {MAX_UPDATE_BYTES} bytes"))
        parts.append(bytes(chunk.data))
    return b"".join(parts)


class NodeServicer(node_grpc.NodeServiceServicer):
    def __init__(self, node: ServerNode) -> None:
        self.node = node

    async def Ping(self, request, context):
        return node_pb.PingReply(node_id=self.node.signer.id, version=self.node.version,
                                 server_time_ms=now_ms())

    async def GetTask(self, request, context):
        try:
            return self.node.task_for(bytes(request.client_id))
        except UpdateRefused as exc:
            await _refuse(context, exc)

    async def GetModel(self, request, context):
        blob = self.node.model_blob(bytes(request.model_hash))
        if blob is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                "unknown_model: this node does not hold that model")
        for start in range(0, len(blob), CHUNK):
            yield chain_pb.BlobChunk(data=blob[start : start + CHUNK])

    async def SubmitUpdate(self, request_iterator, context):
        return await self._accept(request_iterator, context, relay=True)

    async def RelayUpdate(self, request_iterator, context):
        return await self._accept(request_iterator, context, relay=False)

    async def _accept(self, request_iterator, context, relay: bool):
        raw = await _gather(request_iterator, context)
        try:
            checked = await self.node.accept_update(raw, relay)
        except UpdateRefused as exc:
            await _refuse(context, exc)
        return node_pb.SubmitUpdateReply(update_digest=checked.update.digest,
                                         current_version=self.node.version)

    async def GetNodeStatus(self, request, context):
        return self.node.status()
