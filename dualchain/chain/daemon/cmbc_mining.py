"""Block templates for the miners of a CMBC replica, and their solutions: a template carries the
mempool's transactions the application accepts together (``ReorgApplication.executable``) and
that were held long enough for the peers to have them. Part of ``CmbcNode``."""

from __future__ import annotations

import hashlib
import logging

from dualchain.chain.consensus.pow import median_time_past, target_to_bytes
from dualchain.chain.consensus.reward import Reward
from dualchain.chain.daemon.base import now_ms
from dualchain.chain.daemon.stuck import timely_txs
from dualchain.chain.errors import DecodeError, NotFoundError, ValidationError
from dualchain.chain.identity import ID_BYTES, identity_id
from dualchain.chain.types import Block, BlockHeader, Transaction, TxKind
from dualchain.proto.v1 import miner_pb2 as miner_pb

log = logging.getLogger(__name__)

TEMPLATES_KEPT = 64

class Templates:
    """Part of ``CmbcNode``: block templates and the miners' solutions."""

    # -- mining ----------------------------------------------------------------------------------

    async def block_template(self, miner_key: bytes, hashrate: float,
                             reward_account: bytes = b"") -> miner_pb.BlockTemplate:
        if len(miner_key) != self.params.algorithm.public_key_bytes:
            raise DecodeError(f"miner key is {len(miner_key)} bytes; this chain uses "
                              f"{self.params.algorithm.label}")
        if reward_account and len(reward_account) != ID_BYTES:
            raise DecodeError(f"reward account is {len(reward_account)} bytes; an identity id "
                              f"is {ID_BYTES}")
        miner = identity_id(miner_key)
        if hashrate > 0:
            self.pow_metrics.hashrate.labels(miner.hex()[:16]).set(hashrate)
        # A template on the old head while miners hold off would be stale at once (and the
        # miner would ask again at once): wait for the held block's verdict. The hold is bounded
        # (PENDING_MAX_S).
        while self.mining_tip[1]:
            await self.wait_for_change(self.head_version)
        async with self._blocks_lock:  # not halfway through a reorg
            return await self._template(miner, miner_key, reward_account or miner)

    async def _template(self, miner: bytes, miner_key: bytes,
                        account: bytes) -> miner_pb.BlockTemplate:
        parent = self._head
        await self.load_nonces([miner])
        timestamp = self._template_time(parent)
        txs = tuple(self._template_txs(timestamp, miner))
        reward = Transaction(self.chain_id, TxKind.REWARD, miner, miner_key,
                             self.next_nonce(miner), timestamp,
                             Reward(parent.height + 1, parent.hash, self.pow.block_reward,
                                    account).encode())
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
