"""The CMBC application: reward rules, client registration and state reports, anchors, and
rolling blocks back (as a reorg does) to exactly the state before them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.apps.cmbc.payloads import (
    Anchor,
    ClientRegistration,
    NodeAdmission,
    NodeJoinRequest,
    Reward,
    StateReport,
    decode_payload,
)
from dualchain.chain.consensus.reward import check_reward
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.identity import Signer
from dualchain.chain.merkle import merkle_root
from dualchain.chain.types import ZERO_HASH, Block, BlockHeader, Transaction, TxKind
from tests.ledger_builders import BASE_TIMESTAMP_MS, make_signer, make_tx

CHAIN = "cmbc-test"
MINER = make_signer(11)
OTHER_MINER = make_signer(12)
CLIENT = make_signer(21)
CLIENT_2 = make_signer(22)
NODE_ID = b"\x07" * 32
REPORT = StateReport(task=3, rtt_ms=12, completion_ms=4500, speed_milli=250_000, failures=0,
                     disconnected_ms=0)
ANCHOR = Anchor(version=1, model_hash=b"\xaa" * 32, ctbc_height=9)


class Chain:
    """Builds CMBC blocks one on another (headers unsealed: the app does not check seals)."""

    def __init__(self) -> None:
        self.parent = BlockHeader(chain_id=CHAIN, height=0, parent_hash=ZERO_HASH,
                                  tx_root=ZERO_HASH, timestamp_ms=BASE_TIMESTAMP_MS,
                                  proposer=bytes(32))
        self.nonces: dict[bytes, int] = {}

    def nonce(self, signer: Signer) -> int:
        n = self.nonces.get(signer.id, 0)
        self.nonces[signer.id] = n + 1
        return n

    def tx(self, signer: Signer, kind: TxKind, payload: bytes) -> Transaction:
        return make_tx(signer, self.nonce(signer), CHAIN, payload, kind)

    def reward(self, miner: Signer = MINER, height: int | None = None,
               parent: bytes | None = None, amount: int = 0,
               account: bytes | None = None) -> Transaction:
        payload = Reward(self.parent.height + 1 if height is None else height,
                         self.parent.hash if parent is None else parent, amount,
                         miner.id if account is None else account).encode()
        return self.tx(miner, TxKind.REWARD, payload)

    def block(self, txs: Sequence[Transaction], miner: Signer = MINER,
              reward: Transaction | None = None, advance: bool = True) -> Block:
        """A block of ``miner`` with its reward first (``reward`` overrides it) then ``txs``."""
        all_txs = (reward or self.reward(miner), *txs)
        header = BlockHeader(chain_id=CHAIN, height=self.parent.height + 1,
                             parent_hash=self.parent.hash,
                             tx_root=merkle_root([t.hash for t in all_txs]),
                             timestamp_ms=self.parent.timestamp_ms + 1000, proposer=miner.id)
        block = Block(header, tuple(all_txs))
        if advance:
            self.parent = header
        return block

    def register(self, client: Signer, node: bytes = NODE_ID, label: str = "") -> Transaction:
        return self.tx(client, TxKind.CLIENT_REGISTER, ClientRegistration(node, label).encode())

    def report(self, client: Signer, report: StateReport = REPORT) -> Transaction:
        return self.tx(client, TxKind.STATE_REPORT, report.encode())

    def anchor(self, sender: Signer, anchor: Anchor = ANCHOR) -> Transaction:
        return self.tx(sender, TxKind.ANCHOR, anchor.encode())


def refused(code: str, fn, *args) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        fn(*args)
    assert info.value.code == code, info.value.reason
    return info.value


# -- the reward ------------------------------------------------------------------------------------


def test_check_reward_accepts_a_well_formed_block() -> None:
    c = Chain()
    block = c.block([c.register(CLIENT)])
    assert check_reward(block, 0)[0] == block.transactions[0]


def test_check_reward_refusals() -> None:
    c = Chain()
    memo = c.tx(CLIENT, TxKind.MEMO, b"m")
    # No transactions at all, or a block whose first transaction is not the reward.
    empty = Block(c.block([]).header, ())
    refused("bad_reward", lambda b: check_reward(b, 0), empty)
    first_not_reward = c.block([], advance=False)
    first_not_reward = Block(first_not_reward.header, (memo, first_not_reward.transactions[0]))
    refused("bad_reward", lambda b: check_reward(b, 0), first_not_reward)
    # Two rewards.
    two = c.block([c.reward()], advance=False)
    refused("bad_reward", lambda b: check_reward(b, 0), two)
    # A reward sent by someone other than the header's miner.
    stolen = c.block([], miner=MINER, reward=c.reward(OTHER_MINER), advance=False)
    refused("bad_reward", lambda b: check_reward(b, 0), stolen)
    # A reward bound to another height or another parent (replayed from elsewhere).
    wrong_height = c.block([], reward=c.reward(height=c.parent.height + 2), advance=False)
    refused("bad_reward", lambda b: check_reward(b, 0), wrong_height)
    wrong_parent = c.block([], reward=c.reward(parent=b"\x05" * 32), advance=False)
    refused("bad_reward", lambda b: check_reward(b, 0), wrong_parent)


def test_check_reward_refuses_a_malformed_payload() -> None:
    c = Chain()
    bad = c.block([], reward=c.tx(MINER, TxKind.REWARD, b"DCW1short"), advance=False)
    with pytest.raises(DecodeError):
        check_reward(bad, 0)


def test_rewards_never_enter_the_mempool() -> None:
    c = Chain()
    refused("unsupported_kind", CmbcApp().check_tx, c.reward())


def test_apply_block_runs_the_reward_rules() -> None:
    c = Chain()
    app = CmbcApp()
    before = app.app_hash()
    block = c.block([c.register(CLIENT)], reward=c.reward(OTHER_MINER))  # miner != sender
    refused("bad_reward", app.apply_block, block)
    assert app.app_hash() == before


# -- clients, reports, anchors ---------------------------------------------------------------------


def test_register_then_report() -> None:
    c = Chain()
    app = CmbcApp()
    refused("unknown_client", app.check_tx, c.report(CLIENT))
    app.apply_block(c.block([c.register(CLIENT, label="phone-1")]))
    key, registration = app.client(CLIENT.id)
    assert key == CLIENT.public_key
    assert registration == ClientRegistration(NODE_ID, "phone-1")
    assert app.latest_report(CLIENT.id) is None
    app.check_tx(c.report(CLIENT))  # registered now
    newer = StateReport(task=4, rtt_ms=9, completion_ms=4000, speed_milli=260_000, failures=1,
                        disconnected_ms=5)
    app.apply_block(c.block([c.report(CLIENT), c.report(CLIENT, newer)]))
    assert app.latest_report(CLIENT.id) == newer  # the latest report is kept


def test_a_report_carries_the_spent_epsilon_and_old_reports_still_decode() -> None:
    c = Chain()
    app = CmbcApp()
    app.apply_block(c.block([c.register(CLIENT)]))
    private = replace(REPORT, epsilon_micro=3_250_000)
    assert StateReport.decode(private.encode()) == private and private.epsilon == 3.25
    old = REPORT.encode()  # a client without DP: the payload it always sent
    assert StateReport.decode(old) == REPORT and REPORT.epsilon is None
    assert len(private.encode()) == len(old) + 8
    with pytest.raises(DecodeError, match="truncated at epsilon_micro"):
        StateReport.decode(old + b"\0\0")
    with pytest.raises(DecodeError, match="trailing bytes"):
        StateReport.decode(private.encode() + b"\0")
    app.apply_block(c.block([c.report(CLIENT, private)]))
    assert app.latest_report(CLIENT.id) == private


def test_an_unregistered_state_report_refuses_its_whole_block() -> None:
    c = Chain()
    app = CmbcApp()
    app.apply_block(c.block([c.register(CLIENT)]))
    before = app.app_hash()
    # The first transaction of the block would change the state; the block fails as a whole.
    bad = c.block([c.report(CLIENT), c.report(CLIENT_2)], advance=False)
    refused("unknown_client", app.apply_block, bad)
    assert app.app_hash() == before
    assert app.latest_report(CLIENT.id) is None
    refused("unknown_client", app.validate_block, bad)


def test_register_and_report_in_one_block() -> None:
    c = Chain()
    app = CmbcApp()
    app.apply_block(c.block([c.register(CLIENT), c.report(CLIENT)]))
    assert app.latest_report(CLIENT.id) == REPORT


def test_registering_again_moves_the_client() -> None:
    c = Chain()
    app = CmbcApp()
    app.apply_block(c.block([c.register(CLIENT)]))
    app.apply_block(c.block([c.register(CLIENT, node=b"\x08" * 32)]))
    assert app.client(CLIENT.id)[1].node == b"\x08" * 32


def test_anchors_are_written_once() -> None:
    c = Chain()
    app = CmbcApp()
    app.apply_block(c.block([c.anchor(CLIENT)]))
    assert app.anchor(1) == ANCHOR and app.anchor(2) is None
    after_first = app.app_hash()
    app.apply_block(c.block([c.anchor(CLIENT_2)]))  # the same anchor again: accepted, no change
    assert app.app_hash() == after_first
    conflicting = Anchor(version=1, model_hash=b"\xbb" * 32, ctbc_height=10)
    refused("conflicting_anchor", app.check_tx, c.anchor(CLIENT, conflicting))
    bad = c.block([c.anchor(CLIENT_2, conflicting)], advance=False)
    refused("conflicting_anchor", app.apply_block, bad)
    assert app.anchor(1) == ANCHOR


def test_memos_are_accepted_and_not_stored() -> None:
    c = Chain()
    app = CmbcApp()
    before = app.app_hash()
    app.check_tx(c.tx(CLIENT, TxKind.MEMO, b"anything"))
    app.apply_block(c.block([c.tx(CLIENT, TxKind.MEMO, b"anything")]))
    assert app.app_hash() == before


@pytest.mark.parametrize("kind", [TxKind.VALIDATOR_REGISTER, TxKind.MODEL_VERSION])
def test_kinds_of_other_chains_are_refused(kind: TxKind) -> None:
    c = Chain()
    refused("unsupported_kind", CmbcApp().check_tx, c.tx(CLIENT, kind, b""))


@pytest.mark.parametrize("kind", [TxKind.CLIENT_REGISTER, TxKind.STATE_REPORT, TxKind.ANCHOR,
                                  TxKind.NODE_JOIN_REQUEST])
def test_malformed_payloads_are_refused(kind: TxKind) -> None:
    c = Chain()
    app = CmbcApp()
    app.apply_block(c.block([c.register(CLIENT)]))
    refused("bad_payload", app.check_tx, c.tx(CLIENT, kind, b"garbage"))
    good = {TxKind.CLIENT_REGISTER: ClientRegistration(NODE_ID).encode(),
            TxKind.STATE_REPORT: REPORT.encode(), TxKind.ANCHOR: ANCHOR.encode(),
            TxKind.NODE_JOIN_REQUEST: NodeJoinRequest("127.0.0.1:1", "127.0.0.1:2").encode(),
            }[kind]
    refused("bad_payload", app.check_tx, c.tx(CLIENT, kind, good + b"\x00"))  # trailing byte


def test_payloads_round_trip() -> None:
    for kind, value in [(TxKind.CLIENT_REGISTER, ClientRegistration(NODE_ID, "edge-é")),
                        (TxKind.STATE_REPORT, REPORT), (TxKind.ANCHOR, ANCHOR),
                        (TxKind.REWARD, Reward(5, b"\x01" * 32, 7, b"\x02" * 32)),
                        (TxKind.NODE_JOIN_REQUEST, NodeJoinRequest("10.0.0.5:7300",
                                                                   "10.0.0.5:7000")),
                        (TxKind.NODE_JOIN_REQUEST, NodeAdmission(NODE_ID, 42))]:
        assert decode_payload(kind, value.encode()) == value
    assert decode_payload(TxKind.MEMO, b"raw") == b"raw"


# -- rollback and the app hash ---------------------------------------------------------------------


def build_history(c: Chain) -> list[Block]:
    return [
        c.block([c.register(CLIENT)]),
        c.block([c.report(CLIENT), c.register(CLIENT_2)]),
        c.block([c.anchor(CLIENT), c.register(CLIENT, node=b"\x09" * 32)]),
        c.block([c.report(CLIENT_2, REPORT)]),
        c.block([]),
    ]


def test_rollback_restores_each_earlier_state() -> None:
    app = CmbcApp()
    blocks = build_history(Chain())
    hashes = [app.app_hash()]
    for block in blocks:
        assert app.apply_block(block) == app.app_hash()
        hashes.append(app.app_hash())
    assert len(set(hashes[:-1])) == len(hashes) - 1  # every non-empty block changed the state
    for block, expected in zip(reversed(blocks), reversed(hashes[:-1]), strict=True):
        app.rollback_block(block)
        assert app.app_hash() == expected
    assert app.client(CLIENT.id) is None and app.anchor(1) is None


def test_app_hash_equals_a_fresh_replay() -> None:
    """A replica that rolled back and switched branches ends with the hash of one that only
    ever saw the final branch."""
    trunk = Chain()
    history = build_history(trunk)
    reorged = CmbcApp()
    for block in history:
        reorged.apply_block(block)
    # A two-block side branch replaces the last two blocks.
    for block in reversed(history[-2:]):
        reorged.rollback_block(block)
    side = Chain()
    side.parent, side.nonces = history[2].header, _nonces_after(history[:3])
    branch = [side.block([side.report(CLIENT)], miner=OTHER_MINER),
              side.block([side.anchor(CLIENT_2, Anchor(2, b"\xcc" * 32, 30))],
                         miner=OTHER_MINER)]
    for block in branch:
        reorged.apply_block(block)
    fresh = CmbcApp()
    for block in [*history[:3], *branch]:
        fresh.apply_block(block)
    assert reorged.app_hash() == fresh.app_hash()
    assert reorged.anchor(2) == fresh.anchor(2) and reorged.latest_report(CLIENT_2.id) is None


def test_validate_block_changes_nothing() -> None:
    c = Chain()
    app = CmbcApp()
    applied = c.block([c.register(CLIENT)])
    app.apply_block(applied)
    before = app.app_hash()
    app.validate_block(c.block([c.report(CLIENT), c.anchor(CLIENT)], advance=False))
    assert app.app_hash() == before and app.latest_report(CLIENT.id) is None
    # The last applied block can still be rolled back (validate left no journal behind).
    app.rollback_block(applied)
    assert app.client(CLIENT.id) is None


def test_rollback_is_bounded_by_the_undo_depth() -> None:
    c = Chain()
    app = CmbcApp(max_undo=2)
    blocks = [c.block([c.tx(CLIENT, TxKind.MEMO, b"%d" % i)]) for i in range(3)]
    for block in blocks:
        app.apply_block(block)
    app.rollback_block(blocks[2])
    app.rollback_block(blocks[1])
    with pytest.raises(RuntimeError):
        app.rollback_block(blocks[0])


def _nonces_after(blocks: Sequence[Block]) -> dict[bytes, int]:
    nonces: dict[bytes, int] = {}
    for block in blocks:
        for tx in block.transactions:
            nonces[tx.sender] = tx.nonce + 1
    return nonces


# -- what a template may carry ---------------------------------------------------------------------


def test_executable_keeps_what_applies_in_order_and_changes_nothing() -> None:
    c = Chain()
    app = CmbcApp()
    app.apply_block(c.block([c.register(CLIENT)]))
    before = app.app_hash()
    first = c.anchor(CLIENT)
    conflicting = c.anchor(CLIENT_2, Anchor(1, b"\xbb" * 32, 9))
    after_conflict = c.tx(CLIENT_2, TxKind.MEMO, b"next")  # CLIENT_2's next nonce
    report = c.report(CLIENT)
    unregistered = c.report(OTHER_MINER)
    memo = c.tx(MINER, TxKind.MEMO, b"fine")
    txs = [first, conflicting, report, after_conflict, unregistered, memo]
    # Each alone is acceptable to the state as it is (except the unregistered report).
    for t in (first, conflicting, report, memo):
        app.check_tx(t)
    assert app.executable(txs) == [first, report, memo]
    assert app.app_hash() == before and app.anchor(1) is None
    # A registration earlier in the list makes a later report of that client executable.
    late_client = make_signer(31)
    register_then_report = [c.register(late_client), c.report(late_client)]
    assert app.executable(register_then_report) == register_then_report
    assert app.executable([]) == []
    assert app.app_hash() == before
