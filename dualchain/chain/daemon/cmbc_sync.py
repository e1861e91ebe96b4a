"""How a CMBC replica gets the blocks it lacks: compact announcements rebuilt from the mempool
(missing transactions asked of the announcer), orphans parked until their parent arrives (asked
for by hash), and block sync from a peer that reports more work. Part of ``CmbcNode``."""

from __future__ import annotations

import asyncio
import logging

import grpc

from dualchain.chain.daemon.peers import PeerLink
from dualchain.chain.errors import DecodeError, DualchainError
from dualchain.chain.types import Block, CompactBlock, Transaction
from dualchain.proto.v1 import peer_pb2 as peer_pb

log = logging.getLogger(__name__)

ORPHAN_LIMIT = 256
SYNC_POLL_S = 1.0
SYNC_BATCH = 128
RPC_TIMEOUT_S = 10.0


class PowSync:
    """Part of ``CmbcNode``: announcements, orphans and block sync."""

    async def _on_compact(self, compact: CompactBlock, peer: str) -> None:
        """Rebuilds an announced block from the mempool; asks the announcer for the
        transactions it misses (the Merkle root, checked with the block, ties the hashes to the
        header)."""
        block_hash = compact.header.hash
        if block_hash in self.tree or block_hash in self._orphans:
            return
        self._foretell(compact.header)
        txs = [self.mempool.get(h) for h in compact.hashes]
        if any(tx is None for tx in txs):
            self.pow_metrics.compact_misses.inc()
            if block_hash not in self._fetching:
                self._fetching.add(block_hash)
                self._tasks.append(asyncio.create_task(self._complete(compact, txs, peer)))
            return
        await self.accept_block(Block(compact.header, (compact.first, *txs)))  # type: ignore[arg-type]

    async def _complete(self, compact: CompactBlock, txs: list[Transaction | None],
                        peer: str) -> None:
        """Fetches the missing transactions of an announced block from its announcer (a few
        kilobytes instead of the whole block), or the whole block from anyone if that fails."""
        block_hash = compact.header.hash
        missing = [h for h, tx in zip(compact.hashes, txs, strict=True) if tx is None]
        link = next((link for link in self.links if link.address == peer), None)
        try:
            if link is not None and link.connected:
                try:
                    reply = await link.stub().GetBlockTransactions(
                        peer_pb.GetBlockTransactionsRequest(block_hash=block_hash,
                                                            tx_hashes=missing),
                        timeout=RPC_TIMEOUT_S)
                    found = {tx.hash: tx for tx in map(Transaction.decode, reply.txs)}
                except (grpc.aio.AioRpcError, DecodeError):
                    found = {}
                full = [tx if tx is not None else found.get(h)
                        for h, tx in zip(compact.hashes, txs, strict=True)]
                if all(tx is not None for tx in full):
                    try:
                        await self.accept_block(Block(compact.header, (compact.first, *full)))  # type: ignore[arg-type]
                    except DualchainError as exc:
                        log.info("announced block %s refused: %s", block_hash.hex()[:16],
                                 exc.reason)
                    return
            await self._fetch_block(block_hash)
        finally:
            self._fetching.discard(block_hash)

    # -- orphans and sync ------------------------------------------------------------------------

    def _park(self, block: Block) -> None:
        if block.hash in self._orphans:
            return
        while len(self._orphans) >= ORPHAN_LIMIT:
            self._orphans.popitem(last=False)
        self._orphans[block.hash] = block
        self.pow_metrics.orphans.inc()
        parent = block.header.parent_hash
        if parent not in self._fetching and parent not in self._orphans:
            self._fetching.add(parent)
            self._tasks.append(asyncio.create_task(self._fetch_block(parent)))

    async def _adopt_orphans(self, parent_hash: bytes) -> None:
        """Accepts parked blocks whose parent just arrived, and their parked children."""
        pending = [parent_hash]
        while pending:
            parent = pending.pop()
            children = [b for b in self._orphans.values() if b.header.parent_hash == parent]
            for child in children:
                del self._orphans[child.hash]
                try:
                    outcome = await self._accept(child)
                except DualchainError as exc:
                    log.info("parked block %s refused: %s", child.hash.hex()[:16], exc.reason)
                    self._forget_pending(child.hash)
                    continue
                if outcome in ("connected", "side_branch"):
                    pending.append(child.hash)

    async def _fetch_block(self, block_hash: bytes) -> None:
        """Asks each peer in turn for a block by hash (over our own links to them)."""
        try:
            for link in self.links:
                if not link.connected:
                    continue
                try:
                    reply = await link.stub().GetBlockByHash(
                        peer_pb.GetBlockByHashRequest(hash=block_hash), timeout=RPC_TIMEOUT_S)
                    block = Block.decode(reply.block)
                except (grpc.aio.AioRpcError, DecodeError):
                    continue
                if block.hash == block_hash:
                    try:
                        await self.accept_block(block)
                    except DualchainError as exc:
                        log.info("fetched block %s refused: %s", block_hash.hex()[:16],
                                 exc.reason)
                    return
        finally:
            self._fetching.discard(block_hash)

    async def _sync_loop(self) -> None:
        """Asks each peer for its chain's work every second and fetches blocks from the ones
        ahead of us (a restarted replica, or both sides of a healed split, catch up so)."""
        while True:
            await asyncio.sleep(SYNC_POLL_S)
            for link in self.links:
                if not link.connected:
                    continue
                try:
                    hello = await link.stub().Handshake(self.hello(), timeout=RPC_TIMEOUT_S)
                except grpc.aio.AioRpcError:
                    continue
                self.peer_heights[link.address] = hello.height
                work = int.from_bytes(hello.cumulative_work, "big")
                if work <= self.work:
                    self._peer_ahead.pop(link.address, None)
                    continue
                # A peer is ahead for a moment each time it mines or receives a block first;
                # gossip brings that block within a poll. Sync only from a peer that was ahead
                # a poll ago too and whose lead gossip has not closed since.
                previous = self._peer_ahead.get(link.address)
                if previous is not None and self.work < previous:
                    self._peer_ahead.pop(link.address, None)
                    await self._sync_from(link)
                else:
                    self._peer_ahead[link.address] = work

    async def _sync_from(self, link: PeerLink) -> None:
        start = max(1, self.height - self.pow.finality_depth)
        try:
            stream = link.stub().GetBlocks(
                peer_pb.GetBlocksRequest(from_height=start, max_blocks=SYNC_BATCH),
                timeout=RPC_TIMEOUT_S * 3)
            async for item in stream:
                if Block.peek_header(item.block).hash in self.tree:
                    continue
                await self.accept_block(Block.decode(item.block))
        except (grpc.aio.AioRpcError, DualchainError) as exc:
            log.info("sync from %s stopped: %s", link.address, exc)
