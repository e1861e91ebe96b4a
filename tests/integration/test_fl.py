"""Federated learning end to end over the dual chain, with real processes: 2 server nodes (each
with a CTBC and a CMBC daemon), 1 miner and 4 client processes training on digits.

One testbed serves the whole module (starting it costs tens of seconds); the tests run in file
order and the disruptive ones (restarts) come last. Every process is started by the launcher's
``Testbed`` and killed by PID when the module ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from dualchain.apps.cmbc.payloads import ClientRegistration
from dualchain.apps.ctbc.fl import SignedUpdate, sign_update
from dualchain.apps.ctbc.payloads import Evidence, EvidenceKind
from dualchain.chain import wire
from dualchain.chain.identity import Signer, load_key_file
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import Block, TxKind
from dualchain.chain.validation import sign_transaction
from dualchain.deploy.up import CMBC_CHAIN, CTBC_CHAIN, Testbed
from dualchain.learning.codec import encode_params
from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc, node_pb2, node_pb2_grpc
from tests.integration.testbed_reads import blocks_up_to, chain_stub
from tests.integration.testbeds import running_testbed

# Digits with 10 classes: chance is 10%, the central model reaches ~98%. After 6 versions of
# 2-4 updates of 10 batches each the global model is well past 80% in every run we made
# (typically ~90%); 0.8 leaves room for scheduling noise without accepting a broken pipeline.
ACCURACY_THRESHOLD = 0.8
EVENT_TIMEOUT_S = 120.0
OFFLINE_CLIENT = 3
OFFLINE_WINDOW = [30.0, 38.0]  # seconds after the client process starts: after it registered


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("fl") / "testbed"

    def prepare(tb: Testbed) -> None:
        for i in range(2):  # a short takeover so the tamper test does not wait long
            _edit(workdir / f"node-{i}.json", aggregator_timeout_s=6.0)
        _edit(workdir / f"client-{OFFLINE_CLIENT}.json", offline=[OFFLINE_WINDOW])

    with running_testbed(workdir, prepare, nodes=2, clients=4, miners=1, batches=10,
                         min_updates=2, window_s=2.0, cmbc_interval_s=1.0, finality_depth=3,
                         # versions come every second or two: room for the offline client's
                         # averaged update (weighted 1/(1+s)) to be admitted after its
                         # absence, also when a loaded machine made it wait long for its first
                         # task (its run then starts from version 0; seen at 30)
                         max_staleness=120) as tb:
        yield tb


def _edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def _version_at_least(v: int):
    return lambda proc, event: event["event"] == "version" and event["version"] >= v


def _ctbc(tb: Testbed, i: int) -> chain_pb2_grpc.ChainServiceStub:
    return chain_stub(tb, f"ctbc-{i}")


def _node(tb: Testbed, i: int) -> node_pb2_grpc.NodeServiceStub:
    return node_pb2_grpc.NodeServiceStub(grpc.insecure_channel(tb.proc(f"node-{i}").address))


def test_accuracy_rises_and_every_replica_holds_the_same_ctbc_chain(testbed: Testbed) -> None:
    event = testbed.wait_for(_version_at_least(6), EVENT_TIMEOUT_S)
    best = max(v["accuracy"] for v in testbed.versions.values())
    assert best >= ACCURACY_THRESHOLD, testbed.versions
    assert event["accuracy"] > testbed.versions[min(testbed.versions)]["accuracy"] - 0.05
    heights = [_ctbc(testbed, i).GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height
               for i in range(2)]
    for h in range(1, min(heights) + 1):
        hashes = {_ctbc(testbed, i).GetBlock(chain_pb2.GetBlockRequest(height=h),
                                             timeout=10).block.header.SerializeToString()
                  for i in range(2)}
        assert len(hashes) == 1, f"replicas differ at height {h}"
    statuses = [_ctbc(testbed, i).GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
                for i in range(2)]
    assert statuses[0].model_version >= 6


async def _register(tb: Testbed, signer: Signer) -> None:
    """Registers ``signer`` as a client of node 0 and returns once node 0 knows it (its CMBC
    registration is final)."""
    node_id = load_key_file(tb.workdir / "keys" / "node-0.key").id
    async with grpc.aio.insecure_channel(tb.proc("cmbc-0").address) as ch:
        stub = chain_pb2_grpc.ChainServiceStub(ch)
        nonce = (await stub.GetNonce(chain_pb2.GetNonceRequest(sender=signer.id))).next_nonce
        tx = sign_transaction(signer, CMBC_CHAIN, TxKind.CLIENT_REGISTER,
                              ClientRegistration(node_id, "test").encode(), nonce,
                              time.time_ns() // 1_000_000)
        await stub.SubmitTx(chain_pb2.SubmitTxRequest(tx=wire.tx_to_proto(tx)))
        stream = stub.SubscribeBlocks(chain_pb2.SubscribeBlocksRequest(from_height=1,
                                                                       final_only=True))
        async for message in stream:  # wait for the block that makes it final
            if any(t.hash == tx.hash for t in wire.block_from_proto(message).transactions):
                break
        stream.cancel()
    async with grpc.aio.insecure_channel(tb.proc("node-0").address) as ch:
        node = node_pb2_grpc.NodeServiceStub(ch)
        deadline = time.monotonic() + 20
        while True:  # the node reads the same final block from its own stream
            try:
                await node.GetTask(node_pb2.TaskRequest(client_id=signer.id))
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def _submit(tb: Testbed, update: SignedUpdate) -> grpc.aio.AioRpcError | None:
    async with grpc.aio.insecure_channel(tb.proc("node-0").address) as ch:
        try:
            head = node_pb2.UpdateHead(params_hash=update.params_hash,
                                       signature=update.signature)
            await node_pb2_grpc.NodeServiceStub(ch).SubmitUpdate(
                iter([node_pb2.UpdateChunk(data=update.encoded, head=head)]), timeout=30)
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


async def test_bad_updates_are_refused_with_their_reasons(testbed: Testbed) -> None:
    alg = Algorithm.parse(testbed.config.algorithm)
    client, stranger = Signer.generate(alg), Signer.generate(alg)
    await _register(testbed, client)
    async with grpc.aio.insecure_channel(testbed.proc("node-0").address) as ch:
        node = node_pb2_grpc.NodeServiceStub(ch)
        task = await node.GetTask(node_pb2.TaskRequest(client_id=client.id))
        blob = b"".join([c.data async for c in node.GetModel(
            node_pb2.GetModelRequest(model_hash=task.model_hash))])
    assert hashlib.sha256(blob).digest() == task.model_hash
    from dualchain.learning.codec import decode_params

    decoded = decode_params(blob)
    small = np.full(decoded.flat.size, 1e-4, np.float32)

    def signed(signer: Signer, delta: np.ndarray, task_id: int) -> SignedUpdate:
        return sign_update(signer, CTBC_CHAIN, task.version, 64, task_id,
                           encode_params(delta, decoded.shapes))

    good = signed(client, small, task.task_id)
    tampered = SignedUpdate(good.chain_id, good.client, good.public_key, good.base_version,
                            good.samples, good.task, encode_params(small * 2, decoded.shapes),
                            good.signature)
    nan = small.copy()
    nan[0] = np.nan
    cases = {
        "tampered": (tampered, grpc.StatusCode.UNAUTHENTICATED, "bad_signature"),
        "unregistered": (signed(stranger, small, 1), grpc.StatusCode.UNAUTHENTICATED,
                         "unknown_client"),
        "nan": (signed(client, nan, task.task_id + 1000), grpc.StatusCode.INVALID_ARGUMENT,
                "non_finite"),
    }
    for name, (update, code, reason) in cases.items():
        error = await _submit(testbed, update)
        assert error is not None, name
        assert error.code() == code and error.details().startswith(reason), (name, error)
    assert await _submit(testbed, good) is None
    replay = await _submit(testbed, good)
    assert replay is not None and replay.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert replay.details().startswith("replay")
    refused = (await asyncio.to_thread(
        _node(testbed, 0).GetNodeStatus, node_pb2.NodeStatusRequest(), timeout=10)
    ).updates_refused
    for reason in ("bad_signature", "unknown_client", "non_finite", "replay"):
        assert refused[reason] >= 1, refused


def test_a_client_that_loses_its_node_trains_on_and_its_averaged_update_gets_in(
        testbed: Testbed) -> None:
    name = f"client-{OFFLINE_CLIENT}"
    try:
        testbed.wait_for(lambda p, e: p.name == name and e["event"] == "disconnected",
                         EVENT_TIMEOUT_S, past=True)
    except Exception as exc:
        seen = [e for p, e in testbed.history if p.name == name]
        raise AssertionError(f"no disconnection; {name} said {seen}") from exc
    testbed.wait_for(lambda p, e: p.name == name and e["event"] == "task"
                     and e.get("outcome") == "buffered", EVENT_TIMEOUT_S, past=True)
    event = testbed.wait_for(lambda p, e: p.name == name and e["event"] == "flush",
                             EVENT_TIMEOUT_S, past=True)
    assert event["outcome"] == "accepted", event
    assert event["updates"] >= 2, event


def _ctbc_blocks(tb: Testbed, i: int) -> list[Block]:
    stub = _ctbc(tb, i)
    return blocks_up_to(stub, stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height)


def test_a_node_restarted_mid_run_resumes_serving_the_latest_version(testbed: Testbed) -> None:
    testbed.kill("node-1")
    committed = _ctbc(testbed, 1).GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
    ready = testbed.restart("node-1")
    assert ready["version"] >= committed.model_version
    status = _node(testbed, 1).GetNodeStatus(node_pb2.NodeStatusRequest(), timeout=10)
    latest = _ctbc(testbed, 1).GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
    assert status.version == latest.model_version or status.version == latest.model_version - 1
    task = _node(testbed, 1).GetTask(node_pb2.TaskRequest(
        client_id=load_key_file(testbed.workdir / "keys" / "client-1.key").id), timeout=10)
    blob = b"".join(c.data for c in _node(testbed, 1).GetModel(
        node_pb2.GetModelRequest(model_hash=task.model_hash), timeout=10))
    assert hashlib.sha256(blob).digest() == task.model_hash
    before = max(testbed.versions)
    testbed.wait_for(_version_at_least(before + 2), EVENT_TIMEOUT_S)
    assert (status.version, ready["version"]) != (0, 0)


def test_a_tampered_model_commit_is_refused_by_the_committee(testbed: Testbed) -> None:
    """Node 0 restarts as a tamperer: its commits are refused, the offence lands on CTBC as
    evidence, and training goes on through node 1."""
    testbed.kill("node-0")
    # An honest commit node 0 signed before it died may still be in the mempool and commit later.
    turned_at_ms = int(time.time() * 1000)
    restart_height = _ctbc(testbed, 1).GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height
    _edit(testbed.workdir / "node-0.json", adversary={"strategy": "tamper_model"})
    testbed.restart("node-0")
    tamperer = load_key_file(testbed.workdir / "keys" / "node-0.key").id
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    found: Evidence | None = None
    while found is None and time.monotonic() < deadline:
        testbed.wait_for(lambda p, e: e["event"] == "version", EVENT_TIMEOUT_S)
        for block in _ctbc_blocks(testbed, 1):
            for tx in block.transactions:
                if tx.kind == TxKind.EVIDENCE:
                    evidence = Evidence.decode(tx.payload)
                    if evidence.kind == EvidenceKind.BAD_MODEL:
                        found = evidence
    assert found is not None, "no bad-model evidence on CTBC"
    offending, _ = found.items
    assert offending.sender == tamperer
    # No version the tamperer signed since it turned was committed (each is re-executed).
    for block in _ctbc_blocks(testbed, 0)[restart_height:]:
        for tx in block.transactions:
            assert not (tx.kind == TxKind.MODEL_VERSION and tx.sender == tamperer
                        and tx.timestamp_ms >= turned_at_ms), block.height
