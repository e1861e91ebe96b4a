"""The miner's reward: the first transaction of every proof-of-work block, bound to its position.

It is part of the proof-of-work ledger, not of the application the blocks carry: a miner signs it
into every block template, and every replica checks it before anything else of the block.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.errors import ValidationError
from dualchain.chain.types import HASH_BYTES, Block, Transaction, TxKind

REWARD_TAG = b"DCW1"


@dataclass(frozen=True)
class Reward:
    """The miner's reward: the first transaction of every CMBC block, bound to its position."""

    height: int
    parent_hash: bytes

    def encode(self) -> bytes:
        return Writer(REWARD_TAG).u64(self.height).fixed(self.parent_hash, HASH_BYTES).bytes()

    @classmethod
    def decode(cls, data: bytes) -> Reward:
        r = Reader(data, REWARD_TAG, "reward")
        value = cls(r.u64("height"), r.fixed(HASH_BYTES, "parent_hash"))
        r.finish()
        return value


def check_reward(block: Block) -> Transaction:
    """The block's reward transaction, checked against its header (needs no chain state)."""
    header = block.header
    if not block.transactions or block.transactions[0].kind != TxKind.REWARD:
        raise ValidationError("a CMBC block must start with its reward transaction",
                              code="bad_reward")
    reward_tx = block.transactions[0]
    if any(tx.kind == TxKind.REWARD for tx in block.transactions[1:]):
        raise ValidationError("a CMBC block holds one reward transaction", code="bad_reward")
    if reward_tx.sender != header.proposer:
        raise ValidationError("the reward transaction is not from the block's miner",
                              code="bad_reward")
    reward = Reward.decode(reward_tx.payload)
    if (reward.height, reward.parent_hash) != (header.height, header.parent_hash):
        raise ValidationError("the reward transaction names another block position",
                              code="bad_reward")
    return reward_tx
