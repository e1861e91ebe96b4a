"""A CMBC replica: proof-of-work fork choice over the block store, the application it is handed
(a ``ReorgApplication``: in dualchain the management application), block templates for miners,
and gossip of blocks with its peers. ``CmbcNode`` is in three parts: this module (accepting
blocks, fork choice, reorgs), ``cmbc_sync`` (announcements, orphans, block sync) and
``cmbc_mining`` (templates and solutions).

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
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from dualchain.chain.app import ReorgApplication
from dualchain.chain.app_context import AppFactory
from dualchain.chain.consensus.blocktree import BlockTree
from dualchain.chain.consensus.pow import (
    block_work,
    check_seal,
    difficulty_of,
    target_from_bytes,
    target_to_bytes,
)
from dualchain.chain.consensus.reward import check_reward
from dualchain.chain.daemon.base import ChainNodeBase, now_ms
from dualchain.chain.daemon.cmbc_mining import Templates
from dualchain.chain.daemon.cmbc_sync import PowSync
from dualchain.chain.daemon.config import DaemonConfig
from dualchain.chain.daemon.metrics import PowMetrics
from dualchain.chain.daemon.stuck import StuckTxs
from dualchain.chain.errors import DecodeError, DualchainError, ValidationError
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import Signer
from dualchain.chain.mempool import MempoolConfig
from dualchain.chain.types import Block, BlockHeader, CompactBlock, Transaction, TxKind
from dualchain.chain.validation import check_block, check_nonces
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import peer_pb2 as peer_pb

log = logging.getLogger(__name__)

ANNOUNCED_KEPT = 8  # blocks whose transactions we keep for peers rebuilding them
TEMPLATE_TX_AGE_MS = 2000
# How long miners are told to hold off for a block under validation: longer than any accept
# should take, short enough that a block whose missing transactions never come costs little.
PENDING_MAX_S = 3.0


class CmbcNode(PowSync, Templates, ChainNodeBase):
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
            reward_tx, _ = check_reward(block, self.pow.block_reward)
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
