"""A CMBC replica: proof-of-work fork choice over the block store, the application it is handed
(a ``ReorgApplication``: in dualchain the management application), block templates for miners,
and gossip of blocks with its peers.

Blocks arrive from three places (a miner's solution, a peer's announcement, block sync) and all go
through ``accept_block``, one at a time (a lock):

1. a block already in the tree is a duplicate; one whose parent is unknown is parked (bounded) and
   its parent is asked for, by hash, from the peers;
2. rules that need only the block and its branch (reward, seal, target, timestamps, Merkle root,
   signatures) are checked on a CPU thread; a block that passes is stored in the tree and
   relayed to the peers, even on a side branch (its proof of work makes spam expensive);
3. if its branch now has the most work, the head moves: blocks back to the fork point are
   disconnected (the application takes them back through its undo journal), the new branch is
   connected with the rules that need chain state (nonces, application rules, app hash), and
   the store switches its canonical chain in one SQLite transaction. If a block of the new branch
   fails, it and its descendants are marked invalid and the old chain is restored.

A reorg that would take back a final block (``finality_depth`` deep) is refused: consumers act on
final blocks, so they must never change. The cost is liveness: a replica that was cut off for
longer than that stays on its own chain until an operator intervenes (docs/cmbc.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import grpc

from dualchain.chain.app import AppFactory, ReorgApplication
from dualchain.chain.consensus.blocktree import BlockTree
from dualchain.chain.consensus.pow import (
    block_work,
    check_seal,
    difficulty_of,
    median_time_past,
    target_from_bytes,
    target_to_bytes,
)
from dualchain.chain.consensus.reward import Reward, check_reward
from dualchain.chain.daemon.base import ChainNodeBase, now_ms
from dualchain.chain.daemon.config import DaemonConfig
from dualchain.chain.daemon.metrics import PowMetrics
from dualchain.chain.daemon.peers import PeerLink
from dualchain.chain.daemon.stuck import StuckTxs, timely_txs
from dualchain.chain.errors import DecodeError, DualchainError, NotFoundError, ValidationError
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import Signer, identity_id
from dualchain.chain.mempool import MempoolConfig
from dualchain.chain.types import Block, BlockHeader, CompactBlock, Transaction, TxKind
from dualchain.chain.validation import check_block, check_nonces
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import miner_pb2 as miner_pb
from dualchain.proto.v1 import peer_pb2 as peer_pb

log = logging.getLogger(__name__)

ORPHAN_LIMIT = 256
TEMPLATES_KEPT = 64
SYNC_POLL_S = 1.0
SYNC_BATCH = 128
ANNOUNCED_KEPT = 8  # blocks whose transactions we keep for peers rebuilding them
RPC_TIMEOUT_S = 10.0
TEMPLATE_TX_AGE_MS = 2000
# How long miners are told to hold off for a block under validation: longer than any accept
# should take, short enough that a block whose missing transactions never come costs little.
PENDING_MAX_S = 3.0


class CmbcNode(ChainNodeBase):
    kind = "cmbc"
    app_type = ReorgApplication
    app: ReorgApplication

    def __init__(self, config: DaemonConfig, genesis: Genesis, signer: Signer,
                 make_app: AppFactory) -> None:
        super().__init__(config, genesis, signer, make_app)
        self.pow = genesis.pow
        self.tree = BlockTree(self.pow)
        self.pow_metrics = PowMetrics(self.metrics.registry)
        self._blocks_lock = asyncio.Lock()
        self._orphans: OrderedDict[bytes, Block] = OrderedDict()
        self._fetching: set[bytes] = set()
        # The transactions of the blocks we announced last, for peers missing some of them.
        self._announced: OrderedDict[bytes, dict[bytes, Transaction]] = OrderedDict()
        self._templates: OrderedDict[bytes, tuple[bytes, tuple[Transaction, ...]]] = \
            OrderedDict()
        self._template_count = 0
        self.peer_heights: dict[str, int] = {}
        self._deepest_reorg = 0
        self._peer_ahead: dict[str, int] = {}  # peer -> the work it reported while ahead of us
        self.template_tx_age_ms = TEMPLATE_TX_AGE_MS
        # A block whose seal holds and that would become the head once validated (see
        # ``_foretell``); None when there is none.
        self._pending: BlockHeader | None = None
        self.stuck = StuckTxs(self.mempool, on_drop=lambda code, n: self.metrics.rejected.labels(
            f"template_{code}").inc(n))

    def _mempool_config(self) -> MempoolConfig:
        # Blocks come every few seconds and a slow one may follow a fast one: room for several
        # blocks' worth of transactions at the rates the benchmark offers.
        return MempoolConfig(max_txs=40_000, max_bytes=192 * 1024 * 1024)

    # -- reads -----------------------------------------------------------------------------------

    @property
    def head(self) -> BlockHeader:
        return self._head

    @property
    def mining_tip(self) -> tuple[BlockHeader, bool]:
        """What miners should build on and whether it is still being validated: the head, or
        a sealed block under validation that will replace it if it is valid."""
        pending = self._pending
        if pending is not None and pending.hash not in self.tree:  # in the tree: validated
            return pending, True
        return self._head, False

    @property
    def final_height(self) -> int:
        return max(0, self.height - self.pow.finality_depth + 1)

    @property
    def work(self) -> int:
        entry = self.tree.get(self._head.hash)
        return entry.work if entry is not None else 0

    def hello(self) -> peer_pb.Hello:
        hello = super().hello()
        hello.cumulative_work = self.work.to_bytes(32, "big")
        return hello

    def dropped(self, tx_hash: bytes) -> tuple[str, str] | None:
        return self.stuck.dropped(tx_hash)

    def _before_add(self, tx: Transaction) -> None:
        # A sender's transaction signed again over the nonce of one our templates refuse
        # (another daemon dropped it first, and the sender resumed) takes its place.
        self.stuck.replace(self.mempool.at_nonce(tx.sender, tx.nonce), tx)

    def known_block(self, block_hash: bytes) -> Block | None:
        return self._orphans.get(block_hash)

    def status_message(self) -> chain_pb.ChainStatus:
        final = self.tree.ancestor_at(self._head.hash, self.final_height)
        return chain_pb.ChainStatus(
            chain_id=self.chain_id,
            kind=self.kind,
            genesis_hash=self.genesis.hash,
            height=self.height,
            head_hash=self._head.hash,
            final_height=final.height,
            final_hash=final.hash,
            target=target_to_bytes(self.tree.expected_target(self._head.hash)),
            cumulative_work=self.work.to_bytes(32, "big"),
            mempool_size=len(self.mempool),
            peers=[chain_pb.PeerInfo(address=link.address, connected=link.connected,
                                     height=self.peer_heights.get(link.address, 0))
                   for link in self.links],
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Loads the block tree and replays the canonical chain into the application."""
        await self._open_store()
        for header, work in await self.in_store(self.store.headers):
            self.tree.add(header, work)
        height = await self.in_store(self.store.height)
        for h in range(1, height + 1):
            block = await self.in_store(self.store.canonical_block, h)
            self.app.apply_block(block)
            self._head = block.header
        self._update_height_metrics()
        log.info("loaded %d blocks (%d canonical); head %s", len(self.tree), height,
                 self._head.hash.hex()[:16])
        self._start_common()
        self._tasks.append(asyncio.create_task(self._sync_loop(), name="sync"))

    # -- accepting blocks ------------------------------------------------------------------------

    async def on_peer_message(self, message: peer_pb.PeerMessage, peer: str) -> None:
        kind = message.WhichOneof("kind")
        if kind == "compact_block":
            await self._on_compact(CompactBlock.decode(message.compact_block), peer)
            return
        if kind != "block":
            raise DecodeError(f"unexpected gossip message {kind!r} on CMBC")
        if Block.peek_header(message.block).hash in self.tree:
            return  # relayed back to us, or announced by several peers
        await self.accept_block(Block.decode(message.block))

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

    def sent_block_transactions(self, block_hash: bytes) -> Mapping[bytes, Transaction]:
        return self._announced.get(block_hash, {})

    async def accept_block(self, block: Block) -> str:
        """Takes a block from anywhere; returns "connected", "side_branch", "duplicate" or
        "orphan" and raises ValidationError for an invalid one."""
        arrived = time.perf_counter()
        try:
            async with self._blocks_lock:
                locked = time.perf_counter()
                outcome = await self._accept(block)
                if outcome in ("connected", "side_branch"):
                    await self._adopt_orphans(block.hash)
        finally:
            self._forget_pending(block.hash)
        log.debug("block %s at height %d: %s after %.3f s", block.hash.hex()[:16], block.height,
                  outcome, time.perf_counter() - arrived)
        if outcome in ("connected", "side_branch"):
            self.pow_metrics.accept_seconds.labels("wait").observe(locked - arrived)
            self.pow_metrics.accept_seconds.labels("process").observe(time.perf_counter() - locked)
        return outcome

    async def _accept(self, block: Block) -> str:
        entry = self.tree.get(block.hash)
        if entry is not None:
            if entry.invalid:
                raise ValidationError(f"block {block.hash.hex()[:16]} was found invalid before",
                                      code="invalid_block")
            return "duplicate"
        if block.header.chain_id != self.chain_id:
            raise ValidationError(f"block is for chain {block.header.chain_id!r}, this is "
                                  f"{self.chain_id!r}", code="wrong_chain")
        parent = self.tree.get(block.header.parent_hash)
        if parent is None:
            self._park(block)
            return "orphan"
        if parent.invalid:
            raise ValidationError("block extends an invalid block", code="invalid_parent")
        try:
            # The seal is cheap to check and expensive to fake: once it holds, the compact
            # announcement goes out before the full check (BIP 152's high-bandwidth relay), so
            # peers and their miners learn of the block one validation earlier (fewer forks).
            check_seal(block.header, self.tree.expected_target(parent.header.hash),
                       self.tree.median_window(parent.header.hash), now_ms(),
                       self.params.max_future_drift_ms)
            self._foretell(block.header)
            if block.transactions:
                self.broadcast(peer_pb.PeerMessage(
                    compact_block=CompactBlock.of(block).encoded))
                self._announced[block.hash] = {tx.hash: tx for tx in block.transactions}
                while len(self._announced) > ANNOUNCED_KEPT:
                    self._announced.popitem(last=False)
            await self._on_cpu(self._check_branch_rules, block, parent.header)
        except DualchainError as exc:
            self.metrics.rejected.labels(f"block_{exc.code}").inc()
            log.warning("block %s at height %d refused: %s", block.hash.hex()[:16], block.height,
                        exc.reason)
            raise
        await self.in_store(self.store.add_block, block,
                            block_work(target_from_bytes(block.header.pow_target)))
        self.tree.add(block.header)
        if not self.tree.better(block.hash, self._head.hash):
            self.pow_metrics.side_blocks.inc()
            return "side_branch"
        return await self._switch_to(block)

    def _foretell(self, header: BlockHeader) -> None:
        """Tells the miners (``mining_tip``, WatchTip) of a block whose seal holds and that
        would become the head, before it is validated. Validation under load takes about as
        long as a quarter of the block interval, and a miner still hashing on the old head
        meanwhile finds competing blocks: most stale blocks came from that window. A valid seal
        is expensive to fake, and a block found invalid (or never completed) releases the
        miners at once (or after ``PENDING_MAX_S``)."""
        if self.mining_tip[1] or header.hash in self.tree:
            return  # one hold at a time; a second sealed block waits for its validation
        parent = self.tree.get(header.parent_hash)
        head = self.tree.get(self._head.hash)
        if parent is None or parent.invalid or head is None:
            return
        if parent.work + block_work(target_from_bytes(header.pow_target)) <= head.work:
            return  # a side branch: the head stays
        try:
            check_seal(header, self.tree.expected_target(parent.header.hash),
                       self.tree.median_window(parent.header.hash), now_ms(),
                       self.params.max_future_drift_ms)
        except DualchainError:
            return  # refused with its reason when the whole block is checked
        self._pending = header
        asyncio.get_running_loop().call_later(PENDING_MAX_S, self._forget_pending, header.hash)
        self._notify_grown()
        log.debug("miners hold off for block %s at height %d", header.hash.hex()[:16],
                  header.height)

    def _forget_pending(self, block_hash: bytes) -> None:
        """Ends the hold for ``block_hash`` once it was accepted, refused or timed out."""
        if self._pending is not None and self._pending.hash == block_hash:
            self._pending = None
            self._notify_grown()

    def _check_branch_rules(self, block: Block, parent: BlockHeader) -> None:
        """Everything about a block that its own branch decides, chain state aside."""
        try:
            reward_tx = check_reward(block)
        except DecodeError as exc:
            raise ValidationError(f"reward payload: {exc.reason}", code="bad_reward") from exc
        now = now_ms()
        check_seal(block.header, self.tree.expected_target(parent.hash),
                   self.tree.median_window(parent.hash), now, self.params.max_future_drift_ms)
        check_block(block, parent, self.params, self.verifier, now, None,
                    lambda miner: reward_tx.public_key if miner == reward_tx.sender else None,
                    verified=self.mempool.__contains__)

    async def _switch_to(self, tip: Block) -> str:
        disconnect, connect = self.tree.fork_path(self._head.hash, tip.hash)
        fork_height = self._head.height - len(disconnect)
        if disconnect and fork_height < self.final_height:
            self.pow_metrics.refused_reorgs.inc()
            log.warning("refused a reorg to %s: it would take back final blocks above height %d",
                        tip.hash.hex()[:16], fork_height)
            return "side_branch"
        old = [await self.in_store(self.store.get_block, h) for h in disconnect]
        new = [tip if h == tip.hash else await self.in_store(self.store.get_block, h)
               for h in connect]
        for block in old:
            self.app.rollback_block(block)
        # Nonces at the fork point: the disconnected blocks' senders go back to their first
        # nonce there; everyone else keeps the canonical value.
        nonces: dict[bytes, int] = {}
        for block in old:
            for tx in reversed(block.transactions):
                nonces[tx.sender] = tx.nonce
        await self.load_nonces(tx.sender for block in new for tx in block.transactions)
        applied: list[Block] = []
        try:
            for block in new:
                if block.header.app_hash != self.app.app_hash():
                    raise ValidationError("app hash differs from the state after its parent",
                                          code="bad_app_hash")
                check_nonces(block.transactions, lambda s: nonces.get(s, self._nonces[s]))
                self.app.apply_block(block)  # in the loop: templates read the app state
                applied.append(block)
                for tx in block.transactions:
                    nonces[tx.sender] = tx.nonce + 1
        except DualchainError as exc:
            bad = new[len(applied)]
            self.tree.mark_invalid(bad.hash)
            for block in reversed(applied):
                self.app.rollback_block(block)
            for block in reversed(old):
                self.app.apply_block(block)
            self.metrics.rejected.labels(f"block_{exc.code}").inc()
            log.warning("block %s at height %d is invalid on its chain: %s",
                        bad.hash.hex()[:16], bad.height, exc.reason)
            raise
        await self.in_store(self.store.set_head, tip.hash, tip)
        self._nonces.update(nonces)
        self._head = tip.header
        self._after_switch(old, new)
        return "connected"

    def _after_switch(self, old: Sequence[Block], new: Sequence[Block]) -> None:
        added = [tx for block in new for tx in block.transactions]
        self.mempool.remove_committed(added, self.next_nonce)
        if old:
            in_new = {tx.hash for tx in added}
            back = [tx for block in reversed(old) for tx in block.transactions
                    if tx.hash not in in_new and tx.kind != TxKind.REWARD]
            self.mempool.reinject([tx for tx in back if tx.sender in self._nonces],
                                  self.next_nonce, now_ms())
            self.pow_metrics.reorgs.inc()
            self.pow_metrics.reorg_depth.observe(len(old))
            self._deepest_reorg = max(self._deepest_reorg, len(old))
            self.pow_metrics.max_reorg_depth.set(self._deepest_reorg)
            log.info("reorg: %d blocks out, %d in; head %d %s", len(old), len(new), self.height,
                     self._head.hash.hex()[:16])
        for block in new:
            parent = self.tree.get(block.header.parent_hash)
            if parent is not None and parent.header.height > 0:
                interval = (block.header.timestamp_ms - parent.header.timestamp_ms) / 1000
                self.pow_metrics.block_interval.observe(interval)
        self._observe_committed(added)
        self._drop_stuck()
        self.metrics.txs_committed.inc(len(added))
        self.metrics.mempool_size.set(len(self.mempool))
        self._update_height_metrics()
        self._notify_grown()

    def _update_height_metrics(self) -> None:
        self.metrics.height.set(self.height)
        self.pow_metrics.final_height.set(self.final_height)
        self.pow_metrics.difficulty.set(
            difficulty_of(self.tree.expected_target(self._head.hash)))

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

    # -- mining ----------------------------------------------------------------------------------

    async def block_template(self, miner_key: bytes, hashrate: float) -> miner_pb.BlockTemplate:
        if len(miner_key) != self.params.algorithm.public_key_bytes:
            raise DecodeError(f"miner key is {len(miner_key)} bytes; this chain uses "
                              f"{self.params.algorithm.label}")
        miner = identity_id(miner_key)
        if hashrate > 0:
            self.pow_metrics.hashrate.labels(miner.hex()[:16]).set(hashrate)
        # A template on the old head while miners hold off would be stale at once (and the
        # miner would ask again at once): wait for the held block's verdict. The hold is bounded
        # (PENDING_MAX_S).
        while self.mining_tip[1]:
            await self.wait_for_change(self.head_version)
        async with self._blocks_lock:  # not halfway through a reorg
            return await self._template(miner, miner_key)

    async def _template(self, miner: bytes, miner_key: bytes) -> miner_pb.BlockTemplate:
        parent = self._head
        await self.load_nonces([miner])
        timestamp = self._template_time(parent)
        txs = tuple(self._template_txs(timestamp, miner))
        reward = Transaction(self.chain_id, TxKind.REWARD, miner, miner_key,
                             self.next_nonce(miner), timestamp,
                             Reward(parent.height + 1, parent.hash).encode())
        self._template_count += 1
        template_id = hashlib.sha256(
            parent.hash + self._template_count.to_bytes(8, "big")).digest()[:16]
        self._templates[template_id] = (parent.hash, txs)
        while len(self._templates) > TEMPLATES_KEPT:
            self._templates.popitem(last=False)
        return miner_pb.BlockTemplate(
            template_id=template_id, chain_id=self.chain_id, height=parent.height + 1,
            parent_hash=parent.hash,
            target=target_to_bytes(self.tree.expected_target(parent.hash)),
            timestamp_ms=timestamp, app_hash=self.app.app_hash(), reward_tx=reward.encoded,
            tx_hashes=[tx.hash for tx in txs],
        )

    def _template_time(self, parent: BlockHeader) -> int:
        return max(now_ms(), parent.timestamp_ms,
                   median_time_past(self.tree.median_window(parent.hash)) + 1)

    def _template_txs(self, timestamp: int, miner: bytes | None,
                      refused: list[tuple[Transaction, ValidationError]] | None = None
                      ) -> list[Transaction]:
        """The transactions of a template on the head (``miner``'s own left out: the reward
        takes its next nonce); each sender's first one left out goes to ``refused``. Without
        a miner (``_drop_stuck``), whatever their age."""
        # Only transactions this daemon has held for a moment: by then gossip has brought them
        # to the peers, so the compact announcement of the block is rebuilt from their mempools
        # instead of being fetched whole (a slow block makes forks).
        held = now_ms() - self.template_tx_age_ms if miner is not None else None
        selected = [tx for tx in self.mempool.select(
            self.next_nonce, self.params.max_block_txs - 1, self.params.max_block_bytes // 2,
            admitted_by_ms=held) if tx.sender != miner]
        # Leave out what would make the block invalid, or every block mined from this template
        # is refused and the chain stalls: transactions the state refuses together, and ones
        # stamped too far from the block's time (admitted long ago, or the parent runs ahead).
        refused = [] if refused is None else refused
        timely = timely_txs(selected, timestamp, self.params, refused)
        return self.app.executable(timely, refused)

    def _drop_stuck(self) -> None:
        """What a template on the new head would leave out, counted against its transactions
        (``StuckTxs``): on every daemon, whether miners ask it for templates or not, so that
        the daemon a sender submits to drops its stuck transaction and says why."""
        refused: list[tuple[Transaction, ValidationError]] = []
        taken = self._template_txs(self._template_time(self._head), None, refused)
        self.stuck.observe(self._head.hash, taken, refused)

    async def submit_solution(self, template_id: bytes, header: bytes,
                              reward_tx: bytes) -> tuple[str, Block]:
        template = self._templates.get(template_id)
        if template is None:
            raise NotFoundError("the template is unknown or expired; ask for a new one")
        parent_hash, txs = template
        block = Block(BlockHeader.decode(header), (Transaction.decode(reward_tx), *txs))
        if block.header.parent_hash != parent_hash:
            raise ValidationError("the header does not build on its template's parent",
                                  code="bad_parent")
        outcome = await self.accept_block(block)
        self.pow_metrics.mined.labels(outcome).inc()
        log.debug("solution %s at height %d from miner %s: %s", block.hash.hex()[:16],
                  block.height, block.header.proposer.hex()[:8], outcome)
        return outcome, block
