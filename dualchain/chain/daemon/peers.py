"""Outgoing links to the other replicas: one long-lived gossip stream per peer.

Each link owns a bounded queue. ``send`` never blocks the caller: when a peer is too slow or gone
and its queue is full, new messages for it are dropped and counted; consensus recovers what a
dropped message would have carried through timeouts and block sync. A broken stream is reopened
with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable

import grpc

from dualchain.chain.rpc import channel_options
from dualchain.proto.v1 import peer_pb2 as peer_pb
from dualchain.proto.v1 import peer_pb2_grpc as peer_grpc

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 2.0


class PeerLink:
    def __init__(
        self, address: str, hello: Callable[[], peer_pb.Hello], max_message_bytes: int
    ) -> None:
        self.address = address
        self._hello = hello
        self._options = channel_options(max_message_bytes)
        self._queue: asyncio.Queue[peer_pb.PeerMessage] = asyncio.Queue(QUEUE_LIMIT)
        self.connected = False
        self.dropped = 0
        self.channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.address, options=self._options)
        self._task = asyncio.create_task(self._run(), name=f"peer-{self.address}")

    def stub(self) -> peer_grpc.PeerServiceStub:
        assert self.channel is not None
        return peer_grpc.PeerServiceStub(self.channel)

    def send(self, message: peer_pb.PeerMessage) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _messages(self) -> AsyncIterator[peer_pb.PeerMessage]:
        yield peer_pb.PeerMessage(hello=self._hello())
        while True:
            yield await self._queue.get()

    async def _run(self) -> None:
        backoff = _BACKOFF_START_S
        while True:
            try:
                assert self.channel is not None
                await asyncio.wait_for(self.channel.channel_ready(), timeout=5)
                self.connected = True
                backoff = _BACKOFF_START_S
                await self.stub().Gossip(self._messages())
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                if self.connected:
                    log.info("link to %s broke: %s", self.address, _describe(exc))
            finally:
                self.connected = False
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.channel is not None:
            await self.channel.close()
            self.channel = None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return type(exc).__name__
