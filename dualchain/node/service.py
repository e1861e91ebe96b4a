"""The gRPC face of a server node: decode, call ``ServerNode``, map refusals to statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from dualchain.chain.clock import now_ms
from dualchain.node.gate import UpdateRefused
from dualchain.node.intake import UploadHead
from dualchain.node.server import CHUNK, ServerNode
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import node_pb2 as node_pb
from dualchain.proto.v1 import node_pb2_grpc as node_grpc

_STATUS = {
    "unknown_client": grpc.StatusCode.UNAUTHENTICATED,
    "wrong_key": grpc.StatusCode.UNAUTHENTICATED,
    "bad_signature": grpc.StatusCode.UNAUTHENTICATED,
    "bad_key": grpc.StatusCode.UNAUTHENTICATED,
    "unknown_version": grpc.StatusCode.FAILED_PRECONDITION,
    "too_stale": grpc.StatusCode.FAILED_PRECONDITION,
    "replay": grpc.StatusCode.FAILED_PRECONDITION,
    "oversized": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "quota": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def _refuse(context: grpc.aio.ServicerContext, exc: UpdateRefused) -> None:
    await context.abort(_STATUS.get(exc.code, grpc.StatusCode.INVALID_ARGUMENT),
                        f"{exc.code}: {exc.reason}")


async def _gather(first: node_pb.UpdateChunk, rest: AsyncIterator,
                  head: UploadHead, context: grpc.aio.ServicerContext) -> bytes:
    """The whole upload; refused as soon as it passes the size its first chunk declared."""
    raw = bytearray(first.data)
    async for chunk in rest:
        if len(raw) + len(chunk.data) > head.size:
            await _refuse(context, UpdateRefused("oversized", "the upload is longer than the "
                                                 f"{head.size} bytes it declared"))
        raw += chunk.data
    return bytes(raw)


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
        """Admits the upload by its first chunk (``node.intake``) before reading further."""
        stream = request_iterator.__aiter__()
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            await _refuse(context, UpdateRefused("malformed", "an empty upload"))
        try:
            head = self.node.open_upload(first)
        except UpdateRefused as exc:
            await _refuse(context, exc)
        try:
            raw = await _gather(first, stream, head, context)
            checked = await self.node.accept_update(raw, relay, head)
        except UpdateRefused as exc:
            await _refuse(context, exc)
        finally:
            self.node.intake.close(head)
        return node_pb.SubmitUpdateReply(update_digest=checked.update.digest,
                                         current_version=self.node.version)

    async def GetNodeStatus(self, request, context):
        return self.node.status()
