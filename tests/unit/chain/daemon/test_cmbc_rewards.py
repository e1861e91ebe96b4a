"""Block rewards with an amount on a CMBC daemon: templates name the genesis's block reward and
the miner's reward account, a block that claims another amount is refused on arrival, and the
application's balances follow the canonical branch through a reorg."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from dualchain.chain.consensus.reward import Reward
from dualchain.chain.daemon.cmbc import CmbcNode
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.types import Transaction, TxKind
from dualchain.chain.validation import sign_transaction
from tests.unit.chain.daemon.test_cmbc_node import (
    CHAIN,
    GENESIS_TIME,
    MINER,
    OTHER_MINER,
    POW,
    Forge,
    accept_all,
    running_node,
    solve,
)

CLIENT_ACCOUNT = b"\x2a" * 32


@pytest_asyncio.fixture
async def node(tmp_path: Path):
    async with running_node(tmp_path) as n:
        yield n


async def test_a_template_pays_the_block_reward_to_the_named_account(node: CmbcNode) -> None:
    template = await node.block_template(MINER.public_key, 0.0)
    reward = Reward.decode(Transaction.decode(template.reward_tx).payload)
    assert (reward.amount, reward.account) == (POW.block_reward, MINER.id)
    assert (await node.submit_solution(*solve(template, MINER)))[0] == "connected"
    assert node.app.balances() == {MINER.id: POW.block_reward}

    template = await node.block_template(MINER.public_key, 0.0, CLIENT_ACCOUNT)
    reward_tx = Transaction.decode(template.reward_tx)
    assert reward_tx.sender == MINER.id  # the miner signs, the client's account is credited
    assert Reward.decode(reward_tx.payload).account == CLIENT_ACCOUNT
    assert (await node.submit_solution(*solve(template, MINER)))[0] == "connected"
    assert node.app.balances() == {MINER.id: POW.block_reward, CLIENT_ACCOUNT: POW.block_reward}
    with pytest.raises(DecodeError, match="reward account is 5 bytes"):
        await node.block_template(MINER.public_key, 0.0, b"short")


@pytest.mark.parametrize("amount", [POW.block_reward + 1, POW.block_reward - 1, 0])
async def test_a_block_claiming_another_amount_is_refused(node: CmbcNode, amount: int) -> None:
    forge = Forge(node.genesis)
    greedy = sign_transaction(MINER, CHAIN, TxKind.REWARD,
                              Reward(1, forge.genesis.hash, amount, MINER.id).encode(), 0,
                              GENESIS_TIME + 100)
    hash_before = node.app.app_hash()
    with pytest.raises(ValidationError) as info:
        await node.accept_block(forge.block(forge.genesis, reward=greedy))
    assert info.value.code == "bad_reward"
    assert f"claims {amount} micro-units, the chain pays {POW.block_reward}" in info.value.reason
    assert node.height == 0 and node.app.balances() == {}
    assert node.app.app_hash() == hash_before


async def test_a_reorg_takes_the_lost_branch_rewards_back(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    a0 = forge.block(forge.genesis)
    a1 = forge.block(a0)
    a2 = forge.block(a1)
    assert await accept_all(node, [a0, a1, a2]) == ["connected"] * 3
    assert node.app.balances() == {MINER.id: 3 * POW.block_reward}

    b1 = forge.block(a0, miner=OTHER_MINER)
    b2 = forge.block(b1, miner=OTHER_MINER)
    b3 = forge.block(b2, miner=OTHER_MINER)
    assert await accept_all(node, [b1, b2, b3]) == ["side_branch", "side_branch", "connected"]
    assert node.head == b3.header
    assert node.app.balances() == {MINER.id: POW.block_reward,
                                   OTHER_MINER.id: 3 * POW.block_reward}
    assert node.app.app_hash() == forge.app_hash(b3.hash)
