"""Bad input against a running four-replica CTBC cluster of real daemon processes.

Clients: a bad signature, a wrong chain id, a replayed transaction, oversized payloads, and a
batch mixing good and bad transactions. Peers: garbage on the Gossip stream after a good hello,
a stream that does not start with hello, a wrong genesis. Each is refused with its gRPC status
and a reason; the last test checks that the cluster shrugged all of it off: every node alive and
advancing, no bad transaction in any block or mempool.

These tests share one cluster (module scope); the bad transactions they send are collected in
``BAD`` for the final audit, which runs last. The first test, a forged peer height that must not
stop block sync, runs its own cluster (it damages the replica it targets).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from dualchain.chain import wire
from dualchain.chain.identity import Signer
from dualchain.chain.types import Transaction, TxKind, Vote, VoteStep
from dualchain.chain.validation import sign_transaction
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import ledger_pb2 as ledger_pb
from dualchain.proto.v1 import peer_pb2 as peer_pb
from tests.integration.cluster import FAST, Cluster, make_senders, sign_memos

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

TARGET = 1  # the node that gets the bad input
COMMIT_TIMEOUT_S = 20.0
FORGED_CATCH_UP_S = 15.0  # a healthy restarted replica catches up in about 3 s here
RPC_TIMEOUT_S = 10.0
# One epoch for the whole module: future-height votes below always have a known committee.
CONSENSUS = replace(FAST, epoch_length=100_000)

BAD: list[bytes] = []  # hashes of refused transactions: none may ever be committed or pending
GOOD: list[bytes] = []  # hashes of accepted transactions: each committed exactly once


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    cluster = Cluster(Path(tmp_path_factory.mktemp("bad-input")), nodes=4, consensus=CONSENSUS)
    try:
        await cluster.wait_all(range(cluster.nodes), 2, timeout=30)
        yield cluster
    finally:
        await cluster.aclose()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def memo(
    cluster: Cluster, nonce: int = 0, payload: bytes = b"memo", chain_id: str | None = None,
    signer: Signer | None = None,
) -> Transaction:
    signer = signer or make_senders(1)[0]
    return sign_transaction(signer, chain_id or cluster.chain_id, TxKind.MEMO, payload, nonce,
                            now_ms())


def corrupt_signature(tx: Transaction) -> Transaction:
    signature = bytearray(tx.signature)
    signature[10] ^= 0x01
    return tx.with_signature(bytes(signature))


async def refused(cluster: Cluster, tx: Transaction) -> grpc.aio.AioRpcError:
    """Submits ``tx`` to the target with SubmitTx, expecting a refusal; returns the error."""
    BAD.append(tx.hash)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cluster.submit_one(TARGET, tx)
    return info.value


# -- a forged peer height ------------------------------------------------------------------------
# First in the file, so that its own cluster runs before the module's cluster starts (2 cores).


@pytest.mark.slow
async def test_forged_peer_height_does_not_stop_block_sync(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "forged", nodes=4, consensus=CONSENSUS)
    try:
        await cluster.wait_all(range(cluster.nodes), 3, timeout=30)
        cluster.kill(TARGET)
        await cluster.wait_height(0, await cluster.height(0) + 10, timeout=30)
        await cluster.astart(TARGET)
        # Right after the restart, before its first sync check: a stream from nobody, with a
        # made-up address, carrying a vote of nobody for a height far ahead.
        forged = Vote(cluster.chain_id, 10**12, 0, VoteStep.PREVOTE, b"\x42" * 32,
                      os.urandom(32), b"\x00" * cluster.genesis.algorithm.signature_bytes)
        fake = hello(cluster)
        fake.hello.address = "127.0.0.1:1"
        with contextlib.suppress(grpc.aio.AioRpcError):  # refused or ignored: either is fine
            await cluster.peer(TARGET).Gossip(
                iter([fake, peer_pb.PeerMessage(vote=forged.encoded)]), timeout=RPC_TIMEOUT_S
            )
        # The replica must still catch up with the others by block sync.
        top = await cluster.height(0)
        await cluster.wait_height(TARGET, top, timeout=FORGED_CATCH_UP_S)
        status = await cluster.status(TARGET)
        assert all(p.height < 10**12 for p in status.peers), "a forged peer height is reported"
    finally:
        await cluster.aclose()


# -- clients -------------------------------------------------------------------------------------


async def test_bad_signature_is_unauthenticated(cluster: Cluster) -> None:
    error = await refused(cluster, corrupt_signature(memo(cluster)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signature does not verify" in error.details()

    # A key that is not the sender's: the id check, before any signature is verified.
    tx, other = memo(cluster), make_senders(1)[0]
    error = await refused(cluster, replace(tx, public_key=other.public_key))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "sender id" in error.details()


async def test_wrong_chain_id_is_invalid_argument(cluster: Cluster) -> None:
    error = await refused(cluster, memo(cluster, chain_id="some-other-chain"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("wrong_chain:")
    assert "some-other-chain" in error.details()


async def test_replayed_tx_is_failed_precondition(cluster: Cluster) -> None:
    signer = make_senders(1)[0]
    tx = memo(cluster, payload=b"once", signer=signer)
    start = await cluster.height(TARGET)
    assert await cluster.submit_one(TARGET, tx) == tx.hash
    GOOD.append(tx.hash)
    # While it is pending, the same bytes again are a duplicate (unless it was committed already).
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cluster.submit_one(TARGET, tx)
    assert info.value.code() in (grpc.StatusCode.ALREADY_EXISTS,
                                 grpc.StatusCode.FAILED_PRECONDITION)
    # Deterministic part: once it is committed (on every node), replaying it fails everywhere.
    for i in range(cluster.nodes):
        await cluster.wait_txs(i, [tx.hash], COMMIT_TIMEOUT_S, from_height=start + 1)
    for i in range(cluster.nodes):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await cluster.submit_one(i, tx)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION, f"node {i}"
        assert "nonce 0 is below" in info.value.details()
    # Another transaction reusing the committed nonce is refused the same way.
    error = await refused(cluster, memo(cluster, payload=b"twice", signer=signer))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "nonce" in error.details()


async def test_oversized_payload_is_invalid_argument(cluster: Cluster) -> None:
    limit = cluster.genesis.limits.max_payload_bytes
    error = await refused(cluster, memo(cluster, payload=b"x" * (limit + 1)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("oversized:")
    assert f"limit {limit}" in error.details()

    # Above the whole-transaction bound too (the payload check would also refuse it).
    tx_limit = cluster.genesis.limits.max_tx_bytes
    error = await refused(cluster, memo(cluster, payload=b"y" * tx_limit))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"limit {tx_limit}" in error.details()


async def test_submit_txs_reports_each_tx(cluster: Cluster) -> None:
    (good,) = sign_memos(make_senders(1), 3, cluster.chain_id, tag=b"batch")
    limit = cluster.genesis.limits.max_payload_bytes
    source = memo(cluster)
    BAD.append(source.hash)
    malformed = wire.tx_to_proto(source)
    malformed.sender = b"\x01" * 31  # ids are 32 bytes
    cases: list[tuple[Transaction | ledger_pb.Transaction, str]] = [
        (good[0], ""),
        (corrupt_signature(memo(cluster)), "bad_signature"),
        (memo(cluster, chain_id="some-other-chain"), "wrong_chain"),
        (malformed, "malformed"),
        (good[1], ""),
        (memo(cluster, payload=b"z" * (limit + 1)), "oversized"),
        (good[0], "duplicate"),  # the same bytes twice in one batch
        (replace(good[2], kind=TxKind.UNSPECIFIED), "bad_kind"),
        (good[2], ""),
    ]
    messages = [c if not isinstance(c, Transaction) else wire.tx_to_proto(c) for c, _ in cases]
    reply = await cluster.chain(TARGET).SubmitTxs(
        chain_pb.SubmitTxsRequest(txs=messages), timeout=RPC_TIMEOUT_S
    )
    assert len(reply.results) == len(cases)
    for n, ((value, code), result) in enumerate(zip(cases, reply.results, strict=True)):
        assert result.code == code, f"tx {n}: {result.code!r} ({result.reason}), wanted {code!r}"
        assert result.accepted == (code == ""), f"tx {n}"
        if code:
            assert result.reason, f"tx {n} refused without a reason"
        else:
            assert result.reason == ""
        if isinstance(value, Transaction):
            assert bytes(result.tx_hash) == value.hash, f"tx {n}"
            if code and code != "duplicate":
                BAD.append(value.hash)
    assert "sender must be 32 bytes" in reply.results[3].reason
    GOOD.extend(tx.hash for tx in good)
    await cluster.wait_txs(TARGET, [tx.hash for tx in good], COMMIT_TIMEOUT_S)


# -- peers ---------------------------------------------------------------------------------------


async def gossip(cluster: Cluster, messages: Sequence[peer_pb.PeerMessage]) -> grpc.aio.AioRpcError:
    """Opens a Gossip stream to the target, sends ``messages`` and keeps the stream open: only
    the server may end it. Returns the error it was aborted with."""
    finished = asyncio.Event()

    async def requests() -> AsyncIterator[peer_pb.PeerMessage]:
        for message in messages:
            yield message
        await finished.wait()

    try:
        await cluster.peer(TARGET).Gossip(requests(), timeout=RPC_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        return exc
    finally:
        finished.set()
    pytest.fail("the gossip stream was not aborted")


def hello(cluster: Cluster, genesis_hash: bytes | None = None) -> peer_pb.PeerMessage:
    return peer_pb.PeerMessage(hello=peer_pb.Hello(
        genesis_hash=cluster.genesis.hash if genesis_hash is None else genesis_hash,
        node_id=os.urandom(32), height=0, address="127.0.0.1:1",
    ))


async def test_gossip_garbage_after_hello_is_invalid_argument(cluster: Cluster) -> None:
    for garbage in (
        peer_pb.PeerMessage(vote=b"\x00garbage, not a vote"),
        peer_pb.PeerMessage(vote=b""),
        peer_pb.PeerMessage(proposal=os.urandom(300)),
        peer_pb.PeerMessage(txs=peer_pb.TxBatch(txs=[b"DCT1" + os.urandom(40)])),
    ):
        error = await gossip(cluster, [hello(cluster), garbage])
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, garbage
        assert error.details().startswith("malformed:"), error.details()

    # Well-formed, but not signed by the member it names: refused as unauthenticated.
    status = await cluster.status(TARGET)
    vote = Vote(cluster.chain_id, status.height + 5, 0, VoteStep.PREVOTE, b"\x42" * 32,
                cluster.ids[0], b"\x00" * cluster.genesis.algorithm.signature_bytes)
    error = await gossip(cluster, [hello(cluster), peer_pb.PeerMessage(vote=vote.encoded)])
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signature does not verify" in error.details()


async def test_gossip_without_hello_is_invalid_argument(cluster: Cluster) -> None:
    error = await gossip(cluster, [peer_pb.PeerMessage(vote=b"\x00")])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must start with hello" in error.details()


async def test_gossip_with_wrong_genesis_is_failed_precondition(cluster: Cluster) -> None:
    error = await gossip(cluster, [hello(cluster, genesis_hash=b"\x11" * 32)])
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "wrong_genesis" in error.details()

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cluster.peer(TARGET).Handshake(hello(cluster, b"\x11" * 32).hello,
                                             timeout=RPC_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "wrong_genesis" in info.value.details()


# -- the aftermath (runs last) -------------------------------------------------------------------


async def test_cluster_unharmed_by_bad_input(cluster: Cluster) -> None:
    assert all(cluster.alive(i) for i in range(cluster.nodes)), "a daemon died"
    # Still advancing, on every node.
    heights = await asyncio.gather(*(cluster.height(i) for i in range(cluster.nodes)))
    top = max(heights) + 3
    await cluster.wait_all(range(cluster.nodes), top, timeout=COMMIT_TIMEOUT_S)

    # Nothing bad in any block of any node; every good transaction exactly once.
    chains = await asyncio.gather(*(cluster.blocks(i, 1, top) for i in range(cluster.nodes)))
    assert len({tuple(b.hash for b in chain) for chain in chains}) == 1, "the replicas forked"
    committed = [tx.hash for block in chains[0] for tx in block.transactions]
    assert not set(BAD) & set(committed), "a refused transaction was committed"
    assert sorted(committed) == sorted(GOOD), "committed txs differ from the accepted ones"

    # Nothing kept in any mempool; the peer links of the target are all up.
    statuses = await asyncio.gather(*(cluster.status(i) for i in range(cluster.nodes)))
    assert [s.mempool_size for s in statuses] == [0] * cluster.nodes
    assert all(p.connected for p in statuses[TARGET].peers)
    print(f"{len(BAD)} bad txs refused, {len(GOOD)} good committed; height {top} on all nodes")

