"""The CMBC application's balances: each block's reward credits its account, a block claiming
another amount changes nothing, a rolled-back block (a reorg) takes its credit back, and the
balances are part of the app hash replicas compare."""

from __future__ import annotations

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.chain.app import Application
from tests.unit.apps.cmbc.test_app import CLIENT, MINER, OTHER_MINER, Chain, refused

PAY = 2_500_000


def test_each_block_credits_its_reward_account() -> None:
    c, app = Chain(), CmbcApp(block_reward=PAY)
    app.apply_block(c.block([], reward=c.reward(MINER, amount=PAY)))
    app.apply_block(c.block([c.register(CLIENT)], reward=c.reward(MINER, amount=PAY)))
    # A miner with a key of its own names the client's identity as the reward account.
    app.apply_block(c.block([], reward=c.reward(OTHER_MINER, amount=PAY, account=CLIENT.id),
                            miner=OTHER_MINER))
    assert app.balances() == dict(sorted({MINER.id: 2 * PAY, CLIENT.id: PAY}.items()))
    assert app.balance(OTHER_MINER.id) == 0 and app.balance(CLIENT.id) == PAY


def test_a_wrong_amount_is_refused_and_changes_nothing() -> None:
    c, app = Chain(), CmbcApp(block_reward=PAY)
    app.apply_block(c.block([], reward=c.reward(amount=PAY)))
    before = app.app_hash()
    for amount in (PAY + 1, PAY - 1, 0):
        block = c.block([c.register(CLIENT)], reward=c.reward(amount=amount), advance=False)
        error = refused("bad_reward", app.validate_block, block)
        assert f"claims {amount} micro-units, the chain pays {PAY}" in error.reason
        refused("bad_reward", app.apply_block, block)
        c.nonces[MINER.id] -= 1
        c.nonces[CLIENT.id] -= 1
    assert app.app_hash() == before and app.balances() == {MINER.id: PAY}


def test_a_rolled_back_block_takes_its_credit_back() -> None:
    """A reorg: the lost branch's credits go, the new branch's come, state as if never mined."""
    c, app = Chain(), CmbcApp(block_reward=PAY)
    shared = c.block([], reward=c.reward(MINER, amount=PAY))
    app.apply_block(shared)
    after_shared = app.app_hash()
    lost = [c.block([], reward=c.reward(MINER, amount=PAY)) for _ in range(2)]
    for block in lost:
        app.apply_block(block)
    assert app.balances() == {MINER.id: 3 * PAY}
    for block in reversed(lost):
        app.rollback_block(block)
    assert app.balances() == {MINER.id: PAY} and app.app_hash() == after_shared

    fork = Chain()
    fork.parent, fork.nonces = shared.header, {MINER.id: 1}
    won = [fork.block([], reward=fork.reward(OTHER_MINER, amount=PAY), miner=OTHER_MINER)
           for _ in range(3)]
    for block in won:
        app.apply_block(block)
    assert app.balances() == dict(sorted({MINER.id: PAY, OTHER_MINER.id: 3 * PAY}.items()))
    # A replica that only ever saw the winning branch holds the same state.
    fresh = CmbcApp(block_reward=PAY)
    for block in [shared, *won]:
        fresh.apply_block(block)
    assert fresh.app_hash() == app.app_hash() and fresh.balances() == app.balances()


def test_balances_are_in_the_app_hash_and_a_chain_without_reward_mints_nothing() -> None:
    c = Chain()
    paid, free = CmbcApp(block_reward=PAY), CmbcApp(block_reward=0)
    paid.apply_block(c.block([], reward=c.reward(amount=PAY), advance=False))
    free.apply_block(c.block([], reward=c.reward(amount=0), advance=False))
    assert free.balances() == {} and paid.app_hash() != free.app_hash()


def test_an_overflowing_balance_is_refused() -> None:
    big = (1 << 64) - 1
    c, app = Chain(), CmbcApp(block_reward=big)
    app.apply_block(c.block([], reward=c.reward(amount=big)))
    refused("bad_reward", app.apply_block, c.block([], reward=c.reward(amount=big),
                                                   advance=False))
    assert app.balances() == {MINER.id: big}


def test_the_application_interface_has_no_balances_by_default() -> None:
    class Bare(Application):
        def check_tx(self, tx): ...
        def validate_block(self, block): ...
        def apply_block(self, block): return b""
        def app_hash(self): return b""

    assert Bare().balances() == {}
