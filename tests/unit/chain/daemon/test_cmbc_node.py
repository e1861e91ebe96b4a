"""The CMBC replica's block handling, in process: fork choice, reorgs with application rollback,
nonce restore and mempool reinjection, the finality bound, invalid branches, orphans, templates
and reloading from the store. Blocks are mined by hand at a trivial difficulty."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.apps.cmbc.payloads import Anchor, ClientRegistration, StateReport
from dualchain.apps.factory import cmbc_app, ctbc_app
from dualchain.chain import wire
from dualchain.chain.app import Validator
from dualchain.chain.app_context import AppContext
from dualchain.chain.consensus.blocktree import BlockTree
from dualchain.chain.consensus.pow import PowParams, seal_prefix, search_nonce, target_to_bytes
from dualchain.chain.consensus.reward import Reward
from dualchain.chain.daemon.cmbc import CmbcNode
from dualchain.chain.daemon.config import DaemonConfig
from dualchain.chain.daemon.servicers import ChainServicer
from dualchain.chain.errors import DecodeError, NotFoundError, ValidationError
from dualchain.chain.genesis import ConsensusParams, Genesis, LedgerLimits
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.merkle import merkle_root
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import Block, BlockHeader, CompactBlock, Transaction, TxKind
from dualchain.chain.validation import sign_transaction
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import miner_pb2 as miner_pb
from dualchain.proto.v1 import peer_pb2 as peer_pb

ALG = Algorithm.ML_DSA_44
CHAIN = "cmbc-unit"
K = 4
# Sixteen hashes a block; no retarget within a test (the rules are tested in test_pow).
POW = PowParams(initial_difficulty=16, block_interval_ms=1000, retarget_interval=10_000,
                finality_depth=K, median_window=11)
NOW = time.time_ns() // 1_000_000
GENESIS_TIME = NOW - 60_000  # blocks step 100 ms from here: hundreds fit before "now"
TX_TIME = NOW - 50_000  # within the clock bounds of every block and of the mempool

MINER = Signer.generate(ALG)
OTHER_MINER = Signer.generate(ALG)
CLIENT = Signer.generate(ALG)
SENDER = Signer.generate(ALG)
NODE_ID = b"\x07" * 32


# NOW is read when the module is imported, and pytest imports every module before it runs the
# first test: the whole integration suite may run in between. Transactions of TX_TIME must stay
# young enough for the mempool that long (the age rule has its own test, with its own limit).
PATIENT = LedgerLimits(max_tx_age_ms=6 * 3600 * 1000)


def make_genesis(pow_params: PowParams = POW,
                 limits: LedgerLimits | None = None) -> Genesis:
    return Genesis(chain_id=CHAIN, kind="cmbc", algorithm=ALG, genesis_time_ms=GENESIS_TIME,
                   validators=(), pow=pow_params, limits=limits or PATIENT)


def make_node(directory: Path, genesis: Genesis, signer: Signer) -> CmbcNode:
    config = DaemonConfig(kind="cmbc", genesis=directory / "genesis.json",
                          key=directory / "node.key", data_dir=directory / "data",
                          listen="127.0.0.1:1")
    return CmbcNode(config, genesis, signer, cmbc_app)


@contextlib.asynccontextmanager
async def running_node(directory: Path, pow_params: PowParams = POW,
                       limits: LedgerLimits | None = None):
    n = make_node(directory, make_genesis(pow_params, limits), Signer.generate(ALG))
    n.template_tx_age_ms = 0  # templates take what was just admitted (no peers to wait for)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


@pytest_asyncio.fixture
async def node(tmp_path: Path):
    async with running_node(tmp_path) as n:
        yield n


@functools.cache
def tx(signer: Signer, nonce: int, kind: TxKind = TxKind.MEMO,
       payload: bytes = b"m") -> Transaction:
    """A signed transaction, the same object for the same arguments (ML-DSA signing is
    randomized, and a transaction's hash covers its signature)."""
    return sign_transaction(signer, CHAIN, kind, payload, nonce, TX_TIME)


def register(client: Signer, nonce: int = 0) -> Transaction:
    return tx(client, nonce, TxKind.CLIENT_REGISTER, ClientRegistration(NODE_ID).encode())


def report(client: Signer, nonce: int) -> Transaction:
    payload = StateReport(task=1, rtt_ms=5, completion_ms=100, speed_milli=1000, failures=0,
                          disconnected_ms=0).encode()
    return tx(client, nonce, TxKind.STATE_REPORT, payload)


class Forge:
    """Mines blocks on any branch by hand and keeps them, to compute what a branch implies
    (the miner's next nonce, the application state after a block)."""

    def __init__(self, genesis: Genesis) -> None:
        g = genesis.genesis_block()
        self.genesis = g
        self.block_reward = genesis.pow.block_reward
        self.blocks: dict[bytes, Block] = {g.hash: g}
        self.tree = BlockTree(genesis.pow)  # for the target the rules give each block
        self.tree.add(g.header, work=0)

    def branch(self, tip: bytes) -> list[Block]:
        out = []
        while tip != self.genesis.hash:
            block = self.blocks[tip]
            out.append(block)
            tip = block.header.parent_hash
        return out[::-1]

    def next_nonce(self, tip: bytes, sender: bytes) -> int:
        nonces = [t.nonce for b in self.branch(tip) for t in b.transactions if t.sender == sender]
        return max(nonces) + 1 if nonces else 0

    def app_hash(self, tip: bytes) -> bytes:
        app = CmbcApp(block_reward=self.block_reward)
        for block in self.branch(tip):
            app.apply_block(block)
        return app.app_hash()

    def block(self, parent: Block, txs: Sequence[Transaction] = (), miner: Signer = MINER,
              app_hash: bytes | None = None, reward: Transaction | None = None,
              dt: int = 100, **header_fields) -> Block:
        header = parent.header
        ts = header.timestamp_ms + dt
        if reward is None:
            reward = sign_transaction(miner, CHAIN, TxKind.REWARD,
                                      Reward(header.height + 1, header.hash,
                                             self.block_reward, miner.id).encode(),
                                      self.next_nonce(header.hash, miner.id), ts)
        all_txs = (reward, *txs)
        unsealed = BlockHeader(
            chain_id=CHAIN, height=header.height + 1, parent_hash=header.hash,
            tx_root=merkle_root([t.hash for t in all_txs]), timestamp_ms=ts,
            proposer=miner.id,
            app_hash=self.app_hash(header.hash) if app_hash is None else app_hash,
            pow_target=target_to_bytes(self.tree.expected_target(header.hash)),
        )
        unsealed = replace(unsealed, **header_fields)
        nonce = search_nonce(seal_prefix(unsealed), unsealed.pow_target, 0, 1 << 30)
        sealed = replace(unsealed, pow_nonce=nonce)
        block = Block(sealed.with_signature(miner.sign(Domain.BLOCK, sealed.signing_bytes)),
                      all_txs)
        self.blocks[block.hash] = block
        self.tree.add(block.header)
        return block

    def chain(self, parent: Block, count: int, miner: Signer = MINER,
              dt: int = 100) -> list[Block]:
        out = []
        for _ in range(count):
            parent = self.block(parent, miner=miner, dt=dt)
            out.append(parent)
        return out


async def accept_all(node: CmbcNode, blocks: Sequence[Block]) -> list[str]:
    return [await node.accept_block(b) for b in blocks]


async def canonical(node: CmbcNode) -> list[bytes]:
    return [await node.in_store(node.store.canonical_hash, h) for h in range(1, node.height + 1)]


def counter(node: CmbcNode, name: str) -> float:
    value = node.metrics.registry.get_sample_value(f"dualchain_pow_{name}_total")
    return value or 0.0


# -- fork choice and reorgs ------------------------------------------------------------------------


async def test_reorg_rolls_the_app_back_and_reinjects_transactions(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    a0 = forge.block(forge.genesis)
    a1 = forge.block(a0, [register(CLIENT), tx(SENDER, 0)])
    a2 = forge.block(a1, [tx(SENDER, 1)])
    assert await accept_all(node, [a0, a1, a2]) == ["connected"] * 3
    assert node.app.client(CLIENT.id) is not None
    assert node.next_nonce(SENDER.id) == 2

    # A competing branch from a0, mined by someone else: equal work stays a side branch (the
    # first seen wins a tie); one block more moves the head.
    b1 = forge.block(a0, miner=OTHER_MINER)
    b2 = forge.block(b1, [tx(SENDER, 0, payload=b"other")], miner=OTHER_MINER)
    b3 = forge.block(b2, miner=OTHER_MINER)
    assert await accept_all(node, [b1, b2]) == ["side_branch", "side_branch"]
    assert node.head == a2.header
    assert await node.accept_block(b3) == "connected"

    assert node.head == b3.header
    assert await canonical(node) == [a0.hash, b1.hash, b2.hash, b3.hash]
    assert node.app.app_hash() == forge.app_hash(b3.hash)
    assert node.app.client(CLIENT.id) is None  # its registration was on the lost branch
    # Nonces follow the new branch: the client's registration is pending again at nonce 0,
    # SENDER used nonce 0 on the new branch, so its lost nonce-1 memo is executable next.
    assert node.next_nonce(CLIENT.id) == 0 and node.next_nonce(SENDER.id) == 1
    assert register(CLIENT).hash in node.mempool
    assert tx(SENDER, 1).hash in node.mempool
    assert tx(SENDER, 0).hash not in node.mempool  # its nonce is taken on the new branch
    assert not any(t.kind == TxKind.REWARD for t in node.mempool.pending(MINER.id))
    assert counter(node, "reorgs") == 1

    # A template on the new head carries the lost transactions again.
    template = await node.block_template(MINER.public_key, 0.0)
    assert set(template.tx_hashes) == {register(CLIENT).hash, tx(SENDER, 1).hash}
    assert template.parent_hash == b3.hash
    outcome, mined = await node.submit_solution(*solve(template, MINER))
    assert outcome == "connected" and node.head == mined.header
    assert node.app.client(CLIENT.id) is not None
    assert len(node.mempool) == 0


async def test_a_transaction_on_both_branches_is_not_reinjected(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    shared = tx(SENDER, 0)
    a1 = forge.block(forge.genesis, [shared])
    b1 = forge.block(forge.genesis, [shared], miner=OTHER_MINER)
    b2 = forge.block(b1, miner=OTHER_MINER)
    assert await accept_all(node, [a1, b1, b2]) == ["connected", "side_branch", "connected"]
    assert len(node.mempool) == 0
    assert node.next_nonce(SENDER.id) == 1


async def test_a_reorg_never_takes_back_a_final_block(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    a = forge.chain(forge.genesis, 6)  # heights 1..6: final up to 6 - K + 1 = 3
    await accept_all(node, a)
    assert node.final_height == 3
    status = node.status_message()
    assert (status.final_height, bytes(status.final_hash)) == (3, a[2].hash)

    # From height 2 (below the final height 3): more work, refused.
    deep = forge.chain(a[1], 6, miner=OTHER_MINER)  # heights 3..8
    outcomes = await accept_all(node, deep)
    assert outcomes == ["side_branch"] * 6
    assert node.head == a[-1].header
    assert counter(node, "refused_reorgs") == 2  # heights 7 and 8 had more work

    # From height 3 (the final block itself stays): allowed.
    shallow = forge.chain(a[2], 5, miner=OTHER_MINER)  # heights 4..8
    outcomes = await accept_all(node, shallow)
    assert outcomes[-1] == "connected" and node.head == shallow[-1].header
    assert (await canonical(node))[:3] == [b.hash for b in a[:3]]


async def test_an_invalid_branch_is_marked_and_the_old_chain_restored(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    a1 = forge.block(forge.genesis, [register(CLIENT)])
    a2 = forge.block(a1)
    await accept_all(node, [a1, a2])
    before = node.app.app_hash()

    # b2 passes every rule its branch alone decides, but a state report from a client that is
    # not registered on that branch breaks the application rules when it is connected.
    b1 = forge.block(forge.genesis, miner=OTHER_MINER)
    b2 = forge.block(b1, [report(SENDER, 0)], miner=OTHER_MINER)
    b3 = forge.block(b2, miner=OTHER_MINER, app_hash=bytes(32))
    assert await accept_all(node, [b1, b2]) == ["side_branch", "side_branch"]
    with pytest.raises(ValidationError) as info:
        await node.accept_block(b3)
    assert info.value.code == "unknown_client"

    assert node.head == a2.header and await canonical(node) == [a1.hash, a2.hash]
    assert node.app.app_hash() == before and node.app.client(CLIENT.id) is not None
    assert not node.tree.get(b1.hash).invalid
    assert node.tree.get(b2.hash).invalid and node.tree.get(b3.hash).invalid
    # The rest of that branch is refused without another try.
    with pytest.raises(ValidationError) as info:
        await node.accept_block(forge.block(b3, miner=OTHER_MINER, app_hash=bytes(32)))
    assert info.value.code == "invalid_parent"
    with pytest.raises(ValidationError) as info:
        await node.accept_block(b3)
    assert info.value.code == "invalid_block"
    # The chain goes on.
    assert await node.accept_block(forge.block(a2)) == "connected"


@pytest.mark.parametrize("fault", ["nonce_gap", "replay", "bad_app_hash"])
async def test_chain_state_faults_on_a_branch(node: CmbcNode, fault: str) -> None:
    forge = Forge(node.genesis)
    a1 = forge.block(forge.genesis, [tx(SENDER, 0)])
    await node.accept_block(a1)
    txs = {"nonce_gap": [tx(SENDER, 2)], "replay": [], "bad_app_hash": []}[fault]
    b1 = forge.block(forge.genesis, txs, miner=OTHER_MINER,
                     app_hash=b"\x01" * 32 if fault == "bad_app_hash" else None)
    if fault == "replay":  # the new branch repeats a1's transaction at a used nonce
        b1 = forge.block(forge.genesis, [tx(SENDER, 0), tx(SENDER, 0, payload=b"again")],
                         miner=OTHER_MINER)
    b2 = forge.block(b1, miner=OTHER_MINER, app_hash=bytes(32))
    await node.accept_block(b1)
    with pytest.raises(ValidationError) as info:
        await node.accept_block(b2)
    assert info.value.code == fault
    assert node.head == a1.header and node.next_nonce(SENDER.id) == 1


# -- rules checked on arrival ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"chain_id": "other"}, "wrong_chain"),
        ({"pow_target": target_to_bytes(2**255)}, "bad_target"),
        ({"timestamp_ms": GENESIS_TIME}, "bad_timestamp"),
        ({"timestamp_ms": NOW + 3_600_000}, "future_timestamp"),
        ({"tx_root": b"\x00" * 32}, "bad_root"),
    ],
)
async def test_branch_rules_refuse_on_arrival(node: CmbcNode, change: dict, code: str) -> None:
    forge = Forge(node.genesis)
    a1 = forge.block(forge.genesis)
    await node.accept_block(a1)
    bad = forge.block(a1, **change)
    with pytest.raises(ValidationError) as info:
        await node.accept_block(bad)
    assert info.value.code == code
    assert bad.hash not in node.tree and node.head == a1.header


async def test_rewards_are_checked_on_arrival(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    stolen = sign_transaction(OTHER_MINER, CHAIN, TxKind.REWARD,
                              Reward(1, forge.genesis.hash, POW.block_reward,
                                     OTHER_MINER.id).encode(), 0, GENESIS_TIME + 100)
    with pytest.raises(ValidationError) as info:
        await node.accept_block(forge.block(forge.genesis, reward=stolen))
    assert info.value.code == "bad_reward"
    unsealed = forge.block(forge.genesis)
    header = replace(unsealed.header, pow_nonce=unsealed.header.pow_nonce + 1)
    forged = Block(header.with_signature(OTHER_MINER.sign(Domain.BLOCK, header.signing_bytes)),
                   unsealed.transactions)
    with pytest.raises(ValidationError):  # a bad seal, or a signature that is not the miner's
        await node.accept_block(forged)
    assert node.height == 0


async def test_orphans_are_parked_until_their_parent_arrives(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    a = forge.chain(forge.genesis, 3)
    assert await node.accept_block(a[2]) == "orphan"
    assert await node.accept_block(a[1]) == "orphan"
    assert node.known_block(a[1].hash) == a[1]
    assert node.height == 0
    assert await node.accept_block(a[0]) == "connected"
    assert node.head == a[2].header and node.known_block(a[1].hash) is None


async def test_an_announced_block_serves_its_transactions_to_peers(node: CmbcNode) -> None:
    """A peer that rebuilds an announced block from its mempool asks the announcer for what it
    misses: the announcer serves the block's transactions even after they left its mempool."""
    forge = Forge(node.genesis)
    txs = [register(CLIENT), tx(SENDER, 0)]
    block = forge.block(forge.genesis, txs)
    assert await node.accept_block(block) == "connected"
    assert all(t.hash not in node.mempool for t in txs)
    unknown = b"\x01" * 32
    served = node.block_transactions(block.hash, [t.hash for t in txs] + [unknown])
    assert served == txs
    assert node.block_transactions(b"\x02" * 32, [txs[0].hash]) == []


class Aborted(Exception):
    pass


class FakeContext:
    """What a servicer calls on refusal: ``abort`` ends the call (here: raises)."""

    async def abort(self, code, details: str) -> None:
        raise Aborted(code, details)


async def test_get_block_transactions_refuses_malformed_requests(node: CmbcNode) -> None:
    from dualchain.chain.daemon.servicers import PeerServicer
    from dualchain.proto.v1 import peer_pb2 as peer_pb

    servicer = PeerServicer(node)
    forge = Forge(node.genesis)
    block = forge.block(forge.genesis, [register(CLIENT)])
    await node.accept_block(block)
    bad = [peer_pb.GetBlockTransactionsRequest(block_hash=b"short", tx_hashes=[]),
           peer_pb.GetBlockTransactionsRequest(block_hash=block.hash, tx_hashes=[b"x"]),
           peer_pb.GetBlockTransactionsRequest(
               block_hash=block.hash, tx_hashes=[bytes(32)] * (node.params.max_block_txs + 1))]
    for request in bad:
        with pytest.raises(Aborted) as info:
            await servicer.GetBlockTransactions(request, FakeContext())
        assert info.value.args[0] == grpc.StatusCode.INVALID_ARGUMENT
    reply = await servicer.GetBlockTransactions(peer_pb.GetBlockTransactionsRequest(
        block_hash=block.hash, tx_hashes=[t.hash for t in block.transactions[1:]]),
        FakeContext())
    assert [Transaction.decode(t) for t in reply.txs] == list(block.transactions[1:])


# -- telling miners of a block before it is validated ----------------------------------------------


def record_mining_tips(node: CmbcNode) -> list[tuple[bytes, bool, int]]:
    """What WatchTip would send at each notification: (tip hash, pending, head height then)."""
    seen: list[tuple[bytes, bool, int]] = []
    notify = node._notify_grown

    def recording() -> None:
        tip, pending = node.mining_tip
        seen.append((tip.hash, pending, node.height))
        notify()

    node._notify_grown = recording  # type: ignore[method-assign]
    return seen


async def test_miners_hear_of_a_sealed_block_before_it_is_validated(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    block = forge.block(forge.genesis, [tx(SENDER, 0)])
    seen = record_mining_tips(node)
    assert await node.accept_block(block) == "connected"
    assert seen[0] == (block.hash, True, 0)  # announced while the head was still genesis
    assert node.mining_tip == (block.header, False) and seen[-1] == (block.hash, False, 1)


@pytest.mark.parametrize("fault", ["bad_root", "bad_app_hash"])
async def test_a_foretold_block_that_fails_releases_the_miners(node: CmbcNode,
                                                                fault: str) -> None:
    """Its seal holds, so miners hold off; it is refused (by a branch rule, or by the chain
    state), and they are sent back to the old head."""
    forge = Forge(node.genesis)
    a1 = forge.block(forge.genesis)
    await node.accept_block(a1)
    change = {"tx_root": b"\x00" * 32} if fault == "bad_root" else {"app_hash": b"\x01" * 32}
    bad = forge.block(a1, **change)
    seen = record_mining_tips(node)
    with pytest.raises(ValidationError) as info:
        await node.accept_block(bad)
    assert info.value.code == fault
    assert (bad.hash, True, 1) in seen
    assert seen[-1] == (a1.hash, False, 1) and node.mining_tip == (a1.header, False)


async def test_no_hold_for_a_bad_seal_or_a_side_branch(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    a1 = forge.block(forge.genesis)
    await node.accept_block(a1)
    seen = record_mining_tips(node)
    with pytest.raises(ValidationError):
        await node.accept_block(forge.block(a1, pow_target=target_to_bytes(2**255)))
    sibling = forge.block(forge.genesis, miner=OTHER_MINER)  # as much work as a1: no switch
    assert await node.accept_block(sibling) == "side_branch"
    assert not any(pending for _, pending, _ in seen)
    assert node.mining_tip == (a1.header, False)


async def test_a_hold_for_a_block_that_never_completes_times_out(node: CmbcNode,
                                                                 monkeypatch) -> None:
    """An announced block whose missing transactions never come (no peer has them) holds the
    miners for PENDING_MAX_S at most."""
    import dualchain.chain.daemon.cmbc as cmbc

    monkeypatch.setattr(cmbc, "PENDING_MAX_S", 0.05)
    forge = Forge(node.genesis)
    block = forge.block(forge.genesis, [tx(SENDER, 0)])  # the mempool lacks tx(SENDER, 0)
    await node.on_peer_message(
        peer_pb.PeerMessage(compact_block=CompactBlock.of(block).encoded), "nowhere:1")
    assert node.mining_tip == (block.header, True)
    while node.mining_tip[1]:
        await asyncio.wait_for(node.wait_for_change(node.head_version), 10)
    assert node.mining_tip == (forge.genesis.header, False) and node.height == 0


async def test_a_template_waits_for_the_verdict_on_a_held_block(node: CmbcNode,
                                                                 monkeypatch) -> None:
    """While miners hold off, a template on the old head would be stale at once: the request
    waits, and gets a template on the held block once it is accepted."""
    import dualchain.chain.daemon.cmbc as cmbc

    monkeypatch.setattr(cmbc, "PENDING_MAX_S", 600.0)
    forge = Forge(node.genesis)
    block = forge.block(forge.genesis, [tx(SENDER, 0)])
    await node.on_peer_message(
        peer_pb.PeerMessage(compact_block=CompactBlock.of(block).encoded), "nowhere:1")
    assert node.mining_tip == (block.header, True)
    template = asyncio.create_task(node.block_template(MINER.public_key, 0.0))
    for _ in range(5):  # let it run up to its wait
        await asyncio.sleep(0)
    assert not template.done()
    assert await node.accept_block(block) == "connected"
    got = await asyncio.wait_for(template, 10)
    assert bytes(got.parent_hash) == block.hash and got.height == 2


# -- templates and restarts ------------------------------------------------------------------------


def solve(template: miner_pb.BlockTemplate, miner: Signer) -> tuple[bytes, bytes, bytes]:
    reward = Transaction.decode(template.reward_tx)
    reward = reward.with_signature(miner.sign(Domain.TRANSACTION, reward.signing_bytes))
    header = BlockHeader(
        chain_id=template.chain_id, height=template.height,
        parent_hash=bytes(template.parent_hash),
        tx_root=merkle_root([reward.hash, *(bytes(h) for h in template.tx_hashes)]),
        timestamp_ms=template.timestamp_ms, proposer=miner.id,
        app_hash=bytes(template.app_hash), pow_target=bytes(template.target))
    header = replace(header, pow_nonce=search_nonce(seal_prefix(header), header.pow_target, 0,
                                                    1 << 30))
    header = header.with_signature(miner.sign(Domain.BLOCK, header.signing_bytes))
    return bytes(template.template_id), header.encoded, reward.encoded


async def test_templates_and_solutions(node: CmbcNode) -> None:
    (await node.submit([tx(SENDER, 0), tx(MINER, 0)]))
    template = await node.block_template(MINER.public_key, 1234.0)
    # The miner's own pending transaction stays out: its reward takes the miner's nonce.
    assert list(template.tx_hashes) == [tx(SENDER, 0).hash]
    assert Transaction.decode(template.reward_tx).nonce == 0
    solution = solve(template, MINER)
    outcome, block = await node.submit_solution(*solution)
    assert outcome == "connected" and block.transactions[1] == tx(SENDER, 0)
    # The same solution again is a duplicate; another solution of that template (its reward
    # signed anew) is a sibling with the same work: a side branch.
    assert (await node.submit_solution(*solution))[0] == "duplicate"
    assert (await node.submit_solution(*solve(template, MINER)))[0] == "side_branch"
    assert node.head == block.header
    with pytest.raises(NotFoundError):
        await node.submit_solution(b"\x00" * 16, block.header.encoded,
                                   block.transactions[0].encoded)
    with pytest.raises(DecodeError):
        await node.block_template(b"short", 0.0)


async def test_a_template_leaves_out_what_the_state_refuses(node: CmbcNode) -> None:
    """Two anchors of one version with different hashes are each fine alone, so both are
    admitted; a block with both breaks the rules. Templates must not carry both, or every
    block mined from them is invalid and the chain stalls."""
    first = tx(SENDER, 0, TxKind.ANCHOR, Anchor(1, b"\x01" * 32, 5).encode())
    conflicting = tx(CLIENT, 0, TxKind.ANCHOR, Anchor(1, b"\x02" * 32, 5).encode())
    later = tx(CLIENT, 1)  # the same sender's next transaction cannot follow a left-out one
    other = tx(OTHER_MINER, 0)
    outcomes = await node.submit([first, conflicting, later, other])
    assert all(o.error is None for o in outcomes)
    template = await node.block_template(MINER.public_key, 0.0)
    assert list(template.tx_hashes) == [first.hash, other.hash]
    outcome, _ = await node.submit_solution(*solve(template, MINER))
    assert outcome == "connected" and node.app.anchor(1).model_hash == b"\x01" * 32


async def test_a_template_leaves_out_transactions_too_old_for_its_block(tmp_path: Path) -> None:
    """A block refuses a transaction stamped more than ``max_tx_age`` before the block; one
    that was fine when admitted can be that old by the time it is mined (it waited, or the
    parent's timestamp runs ahead of this clock). Templates must leave it out."""
    async with running_node(tmp_path, limits=LedgerLimits(max_tx_age_ms=10_000)) as node:
        forge = Forge(node.genesis)
        now = time.time_ns() // 1_000_000
        ahead = forge.block(forge.genesis, dt=now + 8_000 - GENESIS_TIME)  # 8 s ahead: allowed
        assert await node.accept_block(ahead) == "connected"
        old = sign_transaction(SENDER, CHAIN, TxKind.MEMO, b"old", 0, now - 5_000)
        after_old = sign_transaction(SENDER, CHAIN, TxKind.MEMO, b"next", 1, now)
        fresh = sign_transaction(CLIENT, CHAIN, TxKind.MEMO, b"fresh", 0, now)
        assert all(o.error is None for o in await node.submit([old, after_old, fresh]))
        template = await node.block_template(MINER.public_key, 0.0)
        assert template.timestamp_ms == ahead.header.timestamp_ms
        assert list(template.tx_hashes) == [fresh.hash]
        outcome, _ = await node.submit_solution(*solve(template, MINER))
        assert outcome == "connected"


async def test_a_restarted_node_reloads_tree_head_and_state(tmp_path: Path) -> None:
    genesis, signer = make_genesis(), Signer.generate(ALG)
    first = make_node(tmp_path, genesis, signer)
    await first.start()
    forge = Forge(genesis)
    a1 = forge.block(forge.genesis, [register(CLIENT)])
    a2 = forge.block(a1)
    b2 = forge.block(a1, miner=OTHER_MINER)
    b3 = forge.block(b2, miner=OTHER_MINER)
    await accept_all(first, [a1, a2, b2, b3])
    head, app_hash, tree_size = first.head, first.app.app_hash(), len(first.tree)
    await first.stop()

    again = make_node(tmp_path, genesis, signer)
    await again.start()
    try:
        assert again.head == head and again.app.app_hash() == app_hash
        assert len(again.tree) == tree_size == 5  # genesis and every block, side ones too
        assert again.work == again.tree.get(b3.hash).work
        assert again.app.client(CLIENT.id) is not None
        # It goes on from there: a4 on the lost branch needs two more to win.
        assert await again.accept_block(forge.block(a2)) == "side_branch"
        assert await again.accept_block(forge.block(b3)) == "connected"
    finally:
        await again.stop()


async def test_a_store_of_another_chain_is_refused(tmp_path: Path) -> None:
    first = make_node(tmp_path, make_genesis(), Signer.generate(ALG))
    await first.start()
    await first.stop()
    other = replace(make_genesis(), chain_id="another")
    second = make_node(tmp_path, other, Signer.generate(ALG))
    with pytest.raises(ValidationError) as info:
        await second.start()
    assert info.value.code == "wrong_genesis"
    await second.stop()


# -- the block stream across reorgs ----------------------------------------------------------------


class Subscription:
    """A SubscribeBlocks stream of the chain servicer, driven in process by a task that queues
    what it yields."""

    def __init__(self, node: CmbcNode, from_height: int = 1, final_only: bool = False) -> None:
        request = chain_pb.SubscribeBlocksRequest(from_height=from_height, final_only=final_only)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(ChainServicer(node), request))

    async def _run(self, servicer: ChainServicer, request) -> None:
        async for message in servicer.SubscribeBlocks(request, None):
            await self._queue.put(wire.block_from_proto(message).hash)

    async def take(self, count: int) -> list[bytes]:
        return [await asyncio.wait_for(self._queue.get(), 5) for _ in range(count)]

    async def silent(self) -> bool:
        """Whether the stream yields nothing more within a moment."""
        try:
            await asyncio.wait_for(self._queue.get(), 0.3)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_the_block_stream_resends_a_replaced_branch_from_the_fork(
        node: CmbcNode, depth: int) -> None:
    forge = Forge(node.genesis)
    trunk = forge.chain(forge.genesis, 2)
    old = forge.chain(trunk[-1], depth)
    await accept_all(node, [*trunk, *old])
    sub = Subscription(node)
    try:
        assert await sub.take(2 + depth) == [b.hash for b in (*trunk, *old)]
        new = forge.chain(trunk[-1], depth + 1, miner=OTHER_MINER)
        await accept_all(node, new)
        assert node.head == new[-1].header
        # Every block of the new branch, from the fork on: none skipped.
        assert await sub.take(depth + 1) == [b.hash for b in new]
        assert await sub.silent()
    finally:
        await sub.close()


async def test_the_block_stream_follows_a_reorg_to_a_shorter_chain(tmp_path: Path) -> None:
    # Retarget at every third height over a window of two intervals, measured against one
    # block interval: a branch mined ten times faster gets a four times harder target (the
    # clamp) at height 6 and outweighs a longer one that kept its target.
    pow_params = replace(POW, retarget_interval=3, finality_depth=8)
    async with running_node(tmp_path, pow_params) as node:
        forge = Forge(node.genesis)
        trunk = forge.chain(forge.genesis, 1, dt=1000)
        long = forge.chain(trunk[-1], 6, dt=500)  # heights 2..7, all at the initial target
        assert forge.tree.expected_target(long[-1].hash) == POW.initial_target
        await accept_all(node, [*trunk, *long])
        sub = Subscription(node)
        try:
            assert len(await sub.take(7)) == 7
            short = forge.chain(trunk[-1], 5, dt=100, miner=OTHER_MINER)  # heights 2..6
            assert forge.tree.expected_target(short[3].hash) == POW.initial_target // 4
            assert await accept_all(node, short) == ["side_branch"] * 4 + ["connected"]
            assert node.head == short[-1].header and node.height == 6
            assert await sub.take(5) == [b.hash for b in short]
            assert await sub.silent()
        finally:
            await sub.close()


async def test_the_final_block_stream_never_resends(node: CmbcNode) -> None:
    forge = Forge(node.genesis)
    a = forge.chain(forge.genesis, K + 2)  # final up to 3
    await accept_all(node, a)
    sub = Subscription(node, final_only=True)
    try:
        assert await sub.take(3) == [b.hash for b in a[:3]]
        assert await sub.silent()
        # A reorg above the final height, then growth: the stream only moves forward.
        b = forge.chain(a[2], K + 2, miner=OTHER_MINER)
        await accept_all(node, b)
        assert await sub.take(node.final_height - 3) == \
            [h.hash for h in b[: node.final_height - 3]]
    finally:
        await sub.close()


async def test_admission_control_refuses_clients_while_the_backlog_is_old(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With max_pending_wait_ms set, client transactions are refused as busy (before their
    signature is checked) while an executable pending one has waited longer; a peer's gossiped
    transactions are still admitted. The base class serves CTBC and CMBC alike."""
    from dualchain.chain.daemon import base

    genesis = make_genesis()
    config = replace(make_node(tmp_path, genesis, MINER).config, max_pending_wait_ms=500)
    n = CmbcNode(config, genesis, Signer.generate(ALG), cmbc_app)
    await n.start()
    try:
        first, late = tx(SENDER, 0), tx(CLIENT, 0)
        assert (await n.submit([first]))[0].error is None
        assert n.busy_reason(base.now_ms()) is None
        later = base.now_ms() + 2_000
        monkeypatch.setattr(base, "now_ms", lambda: later)
        monkeypatch.setattr(base, "BUSY_CHECK_S", 0.0)  # no cached verdict between the calls
        monkeypatch.setattr(base, "BUSY_MIN_PENDING", 1)
        checked = n.verifier.checked
        [outcome] = await n.submit([late])
        assert outcome.error is not None and outcome.error.code == "busy"
        assert "above the limit of 500 ms" in outcome.error.reason
        assert late.hash not in n.mempool and n.verifier.checked == checked
        monkeypatch.setattr(base, "BUSY_MIN_PENDING", 2)  # a stall, not a backlog
        assert n.busy_reason(later) is None
        [outcome] = await n.submit([late], gossip=False)  # from a peer
        assert outcome.error is None and late.hash in n.mempool
    finally:
        await n.stop()


async def test_admission_control_is_off_by_default_on_cmbc(
        node: CmbcNode, monkeypatch: pytest.MonkeyPatch) -> None:
    from dualchain.chain.daemon import base

    assert (await node.submit([tx(SENDER, 0)]))[0].error is None
    later = base.now_ms() + 60_000
    monkeypatch.setattr(base, "now_ms", lambda: later)
    assert (await node.submit([tx(CLIENT, 0)]))[0].error is None


def test_a_daemon_runs_the_application_its_factory_gives_and_refuses_the_wrong_kind(
        tmp_path: Path) -> None:
    """The daemon builds no application itself: it calls the factory it is handed with its
    context, and a proof-of-work daemon refuses an application that cannot take blocks back."""
    seen: list[AppContext] = []

    def factory(context: AppContext) -> CmbcApp:
        seen.append(context)
        return CmbcApp(max_undo=4)

    genesis = make_genesis()
    config = make_node(tmp_path, genesis, MINER).config
    node = CmbcNode(config, genesis, MINER, factory)
    assert isinstance(node.app, CmbcApp) and node.app.state is not None
    assert seen[0].genesis is genesis and seen[0].verifier is node.verifier
    assert seen[0].data_dir == config.data_dir
    node.verifier.close()
    ctbc_genesis = Genesis(chain_id=CHAIN, kind="ctbc", algorithm=ALG,
                           genesis_time_ms=GENESIS_TIME,
                           validators=(Validator(MINER.id, MINER.public_key, "127.0.0.1:1"),),
                           consensus=ConsensusParams(committee_size=1))
    with pytest.raises(TypeError, match="a cmbc daemon runs a ReorgApplication, the factory "
                                        "gave a RegistryApp"):
        CmbcNode(config, genesis, MINER, lambda context: ctbc_app(
            AppContext(ctbc_genesis, context.verifier, context.data_dir)))
