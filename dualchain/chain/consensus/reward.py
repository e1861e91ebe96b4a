"""The miner's reward: the first transaction of every proof-of-work block, bound to its position.

It is part of the proof-of-work ledger, not of the application the blocks carry: a miner signs it
into every block template, and every replica checks it before anything else of the block.

The record names the amount it mints and the account it credits. The amount must be the
genesis's ``pow.block_reward``: the block says what it pays, so a reader of the chain needs no
genesis to sum the rewards, and a miner that claims more has its block refused. The account is
the miner's own identity id unless the miner names another one (a client that mines with a key
of its own for its client identity's account: the reward lands beside its CTBC rewards, while
the miner's nonces, which every reward takes one of, stay apart from the client's records).
"""

from __future__ import annotations

from dataclasses import dataclass

from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.errors import ValidationError
from dualchain.chain.identity import ID_BYTES
from dualchain.chain.types import HASH_BYTES, Block, Transaction, TxKind

REWARD_TAG = b"DCW2"  # DCW1 had no amount and no account


@dataclass(frozen=True)
class Reward:
    """The miner's reward: the first transaction of every CMBC block, bound to its position."""

    height: int
    parent_hash: bytes
    amount: int  # micro-units minted, the genesis's pow.block_reward
    account: bytes  # the identity id credited

    def encode(self) -> bytes:
        return (Writer(REWARD_TAG).u64(self.height).fixed(self.parent_hash, HASH_BYTES)
                .u64(self.amount).fixed(self.account, ID_BYTES).bytes())

    @classmethod
    def decode(cls, data: bytes) -> Reward:
        r = Reader(data, REWARD_TAG, "reward")
        value = cls(r.u64("height"), r.fixed(HASH_BYTES, "parent_hash"), r.u64("amount"),
                    r.fixed(ID_BYTES, "account"))
        r.finish()
        return value


def check_reward(block: Block, block_reward: int) -> tuple[Transaction, Reward]:
    """The block's reward transaction and record, checked against its header and the chain's
    ``block_reward`` (needs no chain state)."""
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
    if reward.amount != block_reward:
        raise ValidationError(f"the reward claims {reward.amount} micro-units, the chain pays "
                              f"{block_reward}", code="bad_reward")
    return reward_tx, reward
