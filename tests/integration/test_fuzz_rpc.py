"""Bad input against every gRPC method of a real small testbed: a CTBC and a CMBC daemon, a
miner and a server node, each its own process (``Testbed`` of ``dualchain up``, no clients).

First one test per defect found by an outside fuzz run (issue 13): an out-of-range height, an
undecodable request, blob uploads from nobody known, over quota or with a wrong hash, gossip
refusals logged under the address the peer only claims, and nonces that GetNonce named but the
mempool refused. Then the sweep: every method of every service, enumerated from the proto
descriptors (``fuzz_requests``), gets random bytes, truncated, oversized and well-formed
requests (with wrong signatures, wrong chain ids, huge repeated fields), seeded and bounded in
time. It asserts that no process dies, every answer is a documented status with a one-line
reason that carries no path and no traceback, the chains and the blob store do not change, and
the processes' logs grow by a bounded amount (refusals are logged under a rate limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator

import grpc
import pytest

from dualchain.apps.genesis import Genesis
from dualchain.chain import wire
from dualchain.chain.identity import Signer, load_key_file
from dualchain.chain.rpc import message_limit
from dualchain.chain.types import TxKind
from dualchain.chain.uploads import sign_upload
from dualchain.chain.validation import sign_transaction
from dualchain.deploy.up import Testbed, UpConfig
from dualchain.node.uploads import upload_chunks
from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc, peer_pb2, peer_pb2_grpc
from tests.integration.fuzz_requests import (
    Case,
    Fuzzer,
    Target,
    methods,
    over_the_limit,
    path,
)

pytestmark = pytest.mark.timeout(300)

SEED = 13
SWEEP_BUDGET_S = 60.0  # the sweep sends what fits; every method gets its first cases
CONCURRENCY = 8
UNARY_DEADLINE_S = 20.0
STREAM_DEADLINE_S = 1.0  # streams that wait for new blocks or tips end at our deadline
STREAM_READS = 3
LOG_GROWTH_BYTES = 64 * 1024  # per process during the sweep
PER_UPLOADER_QUOTA = 4 * 1024 * 1024
TARGETS = ("ctbc-0", "cmbc-0", "node-0")
# What a refusal may be (chain.proto, node.proto, peer.proto, miner.proto, the edge), plus the
# ends of our own calls: a stream we stop reading, a waiting stream at our deadline.
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.UNIMPLEMENTED,
}
OUR_OWN_END = {grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("fuzz") / "testbed"
    tb = Testbed(UpConfig(nodes=1, clients=1, miners=1, workdir=str(workdir),
                          cmbc_interval_s=1.0, finality_depth=3),
                 progress=lambda line: None)
    tb.write()
    config = workdir / "ctbc-0.json"
    data = json.loads(config.read_text())
    data.update(blob_quota_per_uploader_bytes=PER_UPLOADER_QUOTA,
                blob_quota_total_bytes=2 * PER_UPLOADER_QUOTA)
    config.write_text(json.dumps(data))
    try:
        tb.start_roles(("ctbc", "cmbc", "miner", "node"))
        yield tb
    finally:
        tb.stop()


def channel(tb: Testbed, name: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(tb.proc(name).address, options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])


def genesis(tb: Testbed, kind: str) -> Genesis:
    return Genesis.load(tb.workdir / f"{kind}-genesis.json")


def blob_files(tb: Testbed) -> dict[str, int]:
    root = tb.workdir / "data" / "ctbc-0" / "blobs"
    return {p.name: p.stat().st_size for p in root.rglob("*") if p.is_file()}


def assert_safe(tb: Testbed, code: grpc.StatusCode, details: str | None, what: str) -> None:
    """A documented status with one line of reason, no path, no traceback."""
    details = details or ""
    if code == grpc.StatusCode.OK:  # a well-formed request may be a fine one
        return
    assert code in DOCUMENTED | OUR_OWN_END, f"{what}: {code.name} {details!r}"
    if code not in OUR_OWN_END:
        assert details.strip(), f"{what}: {code.name} without a reason"
    for leak in ("\n", "/tmp", str(tb.workdir), "Traceback", 'File "', "Unexpected <class"):
        assert leak not in details, f"{what}: {code.name} {details!r} carries {leak!r}"


async def refusal(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# -- one test per defect ---------------------------------------------------------------------


async def test_a_height_beyond_the_chain_is_not_found_on_both_chains(testbed) -> None:
    for name in ("ctbc-0", "cmbc-0"):
        async with channel(testbed, name) as ch:
            stub = chain_pb2_grpc.ChainServiceStub(ch)
            error = await refusal(stub.GetBlock(chain_pb2.GetBlockRequest(height=2**64 - 1),
                                                timeout=10))
            assert error.code() == grpc.StatusCode.NOT_FOUND, (name, error.details())
            assert_safe(testbed, error.code(), error.details(), name)
            error = await refusal(stub.GetBlock(chain_pb2.GetBlockRequest(hash=b"x"),
                                                timeout=10))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_undecodable_request_is_invalid_argument_with_a_one_line_reason(
        testbed) -> None:
    calls = [("ctbc-0", "/dualchain.v1.ChainService/GetBlock"),
             ("cmbc-0", "/dualchain.v1.PeerService/GetBlocks"),
             ("node-0", "/dualchain.v1.NodeService/GetTask")]
    for name, method in calls:
        async with channel(testbed, name) as ch:
            call = ch.unary_unary(method, request_serializer=None, response_deserializer=None)
            error = await refusal(call(b"\xff\xff\xff\xff\x0f", timeout=10))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.details())
            assert error.details().startswith("malformed: "), error.details()
            assert_safe(testbed, error.code(), error.details(), name)


async def test_blob_uploads_need_a_validator_signature_and_stay_within_the_quota(
        testbed) -> None:
    chain_id = genesis(testbed, "ctbc").chain_id
    node = load_key_file(testbed.workdir / "keys" / "node-0.key")
    stranger = Signer.generate(node.algorithm)
    before = blob_files(testbed)
    data = b"not from anyone known " * 100
    digest = hashlib.sha256(data).digest()
    unsigned = [chain_pb2.BlobChunk(data=data, expected_hash=digest)]
    async with channel(testbed, "ctbc-0") as ch:
        stub = chain_pb2_grpc.ChainServiceStub(ch)
        for chunks in (unsigned, upload_chunks(stranger, chain_id, data)):
            error = await refusal(stub.PutBlob(iter(chunks), timeout=30))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
            assert_safe(testbed, error.code(), error.details(), "PutBlob")
        too_much = b"\x01" * (PER_UPLOADER_QUOTA + 1)
        # One chunk: the refusal comes after the first, and a client still sending more
        # may see its own send fail before the status.
        error = await refusal(stub.PutBlob(iter(upload_chunks(
            node, chain_id, too_much, chunk=len(too_much))), timeout=30))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert blob_files(testbed) == before  # nothing of the refused uploads on disk

        reply = await stub.PutBlob(iter(upload_chunks(node, chain_id, data)), timeout=30)
        assert bytes(reply.hash) == digest and reply.size == len(data)
        stored = [c.data async for c in stub.GetBlob(chain_pb2.GetBlobRequest(hash=digest),
                                                     timeout=30)]
        assert b"".join(stored) == data
        assert blob_files(testbed) == {**before, digest.hex(): len(data)}


async def test_a_wrong_expected_hash_is_invalid_argument_and_stores_nothing(testbed) -> None:
    chain_id = genesis(testbed, "ctbc").chain_id
    node = load_key_file(testbed.workdir / "keys" / "node-0.key")
    before = blob_files(testbed)
    data = b"the content" * 50
    claimed = hashlib.sha256(b"other content").digest()
    upload = sign_upload(node, chain_id, claimed, len(data), time.time_ns() // 1_000_000)
    chunk = chain_pb2.BlobChunk(data=data, expected_hash=claimed, upload=chain_pb2.BlobUpload(
        uploader=node.id, size=len(data), timestamp_ms=upload.timestamp_ms,
        signature=upload.signature))
    async with channel(testbed, "ctbc-0") as ch:
        error = await refusal(chain_pb2_grpc.ChainServiceStub(ch).PutBlob(iter([chunk]),
                                                                          timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert error.details().startswith("hash_mismatch: ")
    assert blob_files(testbed) == before


async def test_a_refused_gossip_stream_is_logged_under_its_transport_address(testbed) -> None:
    log = testbed.workdir / "logs" / "ctbc-0.log"
    start = log.stat().st_size
    claimed = "127.0.0.1:9"
    hello = peer_pb2.Hello(genesis_hash=genesis(testbed, "ctbc").hash, node_id=b"\x07" * 32,
                           address=claimed)
    messages = [peer_pb2.PeerMessage(hello=hello), peer_pb2.PeerMessage(vote=b"garbage")]
    async with channel(testbed, "ctbc-0") as ch:
        error = await refusal(peer_pb2_grpc.PeerServiceStub(ch).Gossip(iter(messages),
                                                                        timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    deadline = time.monotonic() + 10
    while "gossip" not in log.read_bytes()[start:].decode().lower():
        assert time.monotonic() < deadline, "the refusal was not logged"
        await asyncio.sleep(0.1)  # the daemon's log is a file: nothing to await
    written = log.read_bytes()[start:].decode()
    assert claimed not in written, written
    line = next(li for li in written.splitlines() if "PeerService/Gossip" in li)
    assert "from ipv4:127.0.0.1:" in line


async def test_get_nonce_names_a_nonce_the_mempool_admits(testbed) -> None:
    """A sender with a gap in its pending nonces (0, 1, 2 and 4): committed + pending (4)
    was taken; the nonce after the unbroken run (3) is admitted. Then, with the window full
    (65 pending), GetNonce says so instead of naming a nonce refused as nonce_gap."""
    chain_id = genesis(testbed, "cmbc").chain_id
    sender = Signer.generate(genesis(testbed, "cmbc").algorithm)

    def tx(nonce: int):
        return wire.tx_to_proto(sign_transaction(sender, chain_id, TxKind.MEMO, b"n%d" % nonce,
                                                 nonce, time.time_ns() // 1_000_000))

    async with channel(testbed, "cmbc-0") as ch:
        stub = chain_pb2_grpc.ChainServiceStub(ch)
        reply = await stub.SubmitTxs(chain_pb2.SubmitTxsRequest(txs=[tx(n) for n in
                                                                     (0, 1, 2, 4)]), timeout=30)
        assert all(r.accepted for r in reply.results), reply
        answer = await stub.GetNonce(chain_pb2.GetNonceRequest(sender=sender.id), timeout=10)
        assert answer.next_nonce == 3 and answer.admissible > 0
        await stub.SubmitTx(chain_pb2.SubmitTxRequest(tx=tx(3)), timeout=10)
        # Fill the window: what GetNonce names is admitted while it says there is room.
        for _ in range(80):
            answer = await stub.GetNonce(chain_pb2.GetNonceRequest(sender=sender.id),
                                         timeout=10)
            if answer.admissible == 0:
                break
            await stub.SubmitTx(chain_pb2.SubmitTxRequest(tx=tx(answer.next_nonce)), timeout=10)
        else:
            pytest.fail("the window never filled (80 transactions in a block each time?)")


# -- the sweep -------------------------------------------------------------------------------


# What grpc's Python client reports, in place of the server's status, when the server ends a
# client-streaming call while the client is still writing (grpc/grpc#36066): a node refuses an
# upload by its first chunk. The server never sends this text (the edge's INTERNAL says
# chain.edge.INTERNAL_DETAILS), so the case is sent again to read the server's own status.
CLIENT_WRITE_RACE = (grpc.StatusCode.INTERNAL, "Internal error from Core")
WRITE_RACE_TRIES = 5


async def _send(ch: grpc.aio.Channel, method, case: Case) -> tuple[grpc.StatusCode, str]:
    """Sends one case as raw bytes; the call's final status and details."""
    for _ in range(WRITE_RACE_TRIES if method.client_streaming else 1):
        answer = await _send_once(ch, method, case)
        if answer != CLIENT_WRITE_RACE:
            break
    return answer


async def _send_once(ch: grpc.aio.Channel, method, case: Case) -> tuple[grpc.StatusCode, str]:
    name = path(method)
    kw = {"request_serializer": None, "response_deserializer": None}
    if method.server_streaming:
        caller = (ch.stream_stream if method.client_streaming else ch.unary_stream)(name, **kw)
        request = iter(case.messages) if method.client_streaming else case.messages[0]
        call = caller(request, timeout=STREAM_DEADLINE_S)
        try:
            reads = 0
            async for _ in call:
                reads += 1
                if reads >= STREAM_READS:
                    call.cancel()
                    break
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""
    caller = (ch.stream_unary if method.client_streaming else ch.unary_unary)(name, **kw)
    request = iter(case.messages) if method.client_streaming else case.messages[0]
    try:
        await caller(request, timeout=UNARY_DEADLINE_S)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not method.client_streaming:
            return grpc.StatusCode.INTERNAL, f"no answer within {UNARY_DEADLINE_S} s"
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def _state(tb: Testbed, strangers: list[Signer]) -> dict[str, object]:
    """What the sweep must not change: the chains up to now, the blob store, the strangers'
    nonces (nothing of theirs admitted or committed)."""
    state: dict[str, object] = {"blobs": blob_files(tb)}
    for name in ("ctbc-0", "cmbc-0"):
        async with channel(tb, name) as ch:
            stub = chain_pb2_grpc.ChainServiceStub(ch)
            status = await stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
            final = status.final_height
            state[name] = (final, wire.block_from_proto((await stub.GetBlock(
                chain_pb2.GetBlockRequest(height=final), timeout=10)).block).hash)
            state[f"{name} strangers"] = [
                (r.next_nonce, r.admissible) for r in [await stub.GetNonce(
                    chain_pb2.GetNonceRequest(sender=s.id), timeout=10) for s in strangers]]
    return state


async def _same_chains(tb: Testbed, before: dict[str, object]) -> None:
    for name in ("ctbc-0", "cmbc-0"):
        height, block_hash = before[name]  # type: ignore[misc]
        async with channel(tb, name) as ch:
            block = wire.block_from_proto((await chain_pb2_grpc.ChainServiceStub(ch).GetBlock(
                chain_pb2.GetBlockRequest(height=height), timeout=10)).block)
        assert block.hash == block_hash, f"{name} changed at or below height {height}"


async def test_every_method_shrugs_off_bad_input(testbed) -> None:
    algorithm = genesis(testbed, "ctbc").algorithm
    strangers = [Signer.generate(algorithm) for _ in range(3)]
    ctbc, cmbc = genesis(testbed, "ctbc"), genesis(testbed, "cmbc")
    fuzzer = Fuzzer(SEED, [ctbc.chain_id, cmbc.chain_id], strangers)
    targets = {
        "ctbc-0": Target(ctbc.chain_id, ctbc.hash,
                         message_limit(ctbc.ledger_params().max_block_bytes),
                         {"chain_id": [ctbc.chain_id], "genesis_hash": [ctbc.hash]}),
        "cmbc-0": Target(cmbc.chain_id, cmbc.hash,
                         message_limit(cmbc.ledger_params().max_block_bytes),
                         {"chain_id": [cmbc.chain_id], "genesis_hash": [cmbc.hash]}),
        "node-0": Target(hints={"model_hash": [bytes.fromhex(ctbc.fl.model_hash)]}),
    }
    logs = {p.name: p.stat().st_size for p in (testbed.workdir / "logs").glob("*.log")}
    before = await _state(testbed, strangers)
    channels = {name: channel(testbed, name) for name in TARGETS}
    # Round robin over (target, method): every method gets its first cases before any gets
    # its later ones, so a slow machine shortens the sweep evenly.
    queues = [(name, m, fuzzer.cases(m, targets[name])) for name in TARGETS for m in methods()]
    work: list[tuple[str, object, Case]] = []
    for name in TARGETS:  # one message over the size limit per process
        first_unary = next(m for m in methods() if not m.client_streaming)
        work.append((name, first_unary, over_the_limit(targets[name])))
    while queues:
        for item in list(queues):
            case = next(item[2], None)
            if case is None:
                queues.remove(item)
            else:
                work.append((item[0], item[1], case))
    answers: dict[tuple[str, str], set[str]] = {}
    violations: list[str] = []
    sent = 0
    deadline = time.monotonic() + SWEEP_BUDGET_S
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(name: str, method, case: Case) -> None:
        nonlocal sent
        async with semaphore:
            if time.monotonic() > deadline:
                return
            code, details = await _send(channels[name], method, case)
            sent += 1
        try:
            assert_safe(testbed, code, details, f"{name} {path(method)} ({case.label})")
        except AssertionError as exc:
            violations.append(str(exc).splitlines()[0])
        answers.setdefault((name, path(method)), set()).add(code.name)

    try:
        await asyncio.gather(*(one(*w) for w in work))
    finally:
        for ch in channels.values():
            await ch.close()
    assert not violations, "\n".join(sorted(set(violations))[:30])
    dead = [p.name for p in testbed.procs if p.popen is not None and p.popen.poll() is not None]
    assert not dead, f"processes died: {dead}"
    assert len(answers) == len(TARGETS) * len(methods()), "a method got no case at all"
    assert sent >= len(work) // 2, f"only {sent} of {len(work)} cases within the budget"
    after = await _state(testbed, strangers)
    await _same_chains(testbed, before)
    assert after["blobs"] == before["blobs"]
    for name in ("ctbc-0", "cmbc-0"):
        key = f"{name} strangers"
        assert after[key] == before[key], f"{name} admitted a stranger's transaction"
    for log in (testbed.workdir / "logs").glob("*.log"):
        grown = log.read_bytes()[logs.get(log.name, 0):]
        assert len(grown) <= LOG_GROWTH_BYTES, f"{log.name} grew {len(grown)} bytes"
        assert b"Traceback" not in grown, f"{log.name}: {grown[:2000]!r}"
    served = {k: v for k, v in answers.items() if v != {"UNIMPLEMENTED"}}
    print(json.dumps({"sent": sent, "cases": len(work), "methods_served": len(served)}))
