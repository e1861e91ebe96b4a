"""Outgoing links to the other replicas: one long-lived gossip stream per peer.

Each link owns two bounded queues: consensus messages (proposals, votes), which always go first,
and transaction batches, bounded in bytes. ``send`` never blocks the caller: when a peer is too
slow or gone and a queue is full, new messages for it are dropped and counted. Consensus recovers
what a dropped message carried through re-sends, timeouts and block sync; a dropped transaction
batch reaches the peer inside a proposal instead. Without the byte bound an overloaded peer would
let megabyte-sized batches pile up in memory without limit. A broken stream is reopened with
exponential backoff and jitter. With the daemon's ``tls`` section the link is mutual TLS (our
certificate shown, the peer's checked against the testbed CA); its messages stay ML-DSA signed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Callable

import grpc

from dualchain.chain.rpc import TlsFiles, channel_options, open_channel
from dualchain.proto.v1 import peer_pb2 as peer_pb
from dualchain.proto.v1 import peer_pb2_grpc as peer_grpc

log = logging.getLogger(__name__)

CONSENSUS_QUEUE_BYTES = 128 * 1024 * 1024  # proposals carry whole blocks
TX_QUEUE_BYTES = 32 * 1024 * 1024
_BACKOFF_START_S = 0.1
_BACKOFF_MAX_S = 2.0


class PeerLink:
    def __init__(
        self, address: str, hello: Callable[[], peer_pb.Hello], max_message_bytes: int,
        tls: TlsFiles | None = None,
    ) -> None:
        self.address = address
        self._tls = tls
        self._hello = hello
        self._options = channel_options(max_message_bytes)
        self._consensus: deque[tuple[peer_pb.PeerMessage, int]] = deque()
        self._consensus_bytes = 0
        self._txs: deque[tuple[peer_pb.PeerMessage, int]] = deque()
        self._tx_bytes = 0
        self._ready = asyncio.Event()
        self.connected = False
        self.dropped = 0
        self.channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.channel = open_channel(self.address, self._tls, self._options)
        self._task = asyncio.create_task(self._run(), name=f"peer-{self.address}")

    def stub(self) -> peer_grpc.PeerServiceStub:
        assert self.channel is not None
        return peer_grpc.PeerServiceStub(self.channel)

    @property
    def idle(self) -> bool:
        """Nothing waits to be sent: the peer keeps up."""
        return not self._consensus and not self._txs

    def send(self, message: peer_pb.PeerMessage) -> None:
        size = message.ByteSize()
        if message.WhichOneof("kind") == "txs":
            if self._tx_bytes + size > TX_QUEUE_BYTES:
                self.dropped += 1
                return
            self._txs.append((message, size))
            self._tx_bytes += size
        else:
            if self._consensus_bytes + size > CONSENSUS_QUEUE_BYTES:
                self.dropped += 1
                return
            self._consensus.append((message, size))
            self._consensus_bytes += size
        self._ready.set()

    async def _messages(self) -> AsyncIterator[peer_pb.PeerMessage]:
        yield peer_pb.PeerMessage(hello=self._hello())
        while True:
            if self._consensus:
                message, size = self._consensus.popleft()
                self._consensus_bytes -= size
                yield message
            elif self._txs:
                message, size = self._txs.popleft()
                self._tx_bytes -= size
                yield message
            else:
                self._ready.clear()
                await self._ready.wait()

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
