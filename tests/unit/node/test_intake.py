"""Uploads admitted by their first chunk (``node.intake``): the rules, then a real gRPC server.

The server test runs the node's real servicer, ``ClientApi`` (open_upload, accept_update), gate
and intake on a grpc.aio server on 127.0.0.1; only the node around them is a small stand-in whose
``_put_blob`` writes to a real ``BlobStore`` in a temporary directory, so "nothing stored" is
read off the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from dualchain.apps.ctbc.fl import FlRules, SignedUpdate, sign_update
from dualchain.chain.blobs import BlobStore
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.aggregation import StalenessRule
from dualchain.learning.codec import encode_params
from dualchain.node.client_api import ClientApi, update_chunks
from dualchain.node.config import AggregationParams
from dualchain.node.gate import UpdateGate, UpdateRefused
from dualchain.node.intake import QUOTA_UPLOADS, UploadIntake
from dualchain.node.metrics import NodeMetrics
from dualchain.node.pool import UpdatePool
from dualchain.node.service import NodeServicer
from dualchain.proto.v1 import node_pb2 as node_pb
from dualchain.proto.v1 import node_pb2_grpc as node_grpc

ALG = Algorithm.ML_DSA_44
CHAIN = "ctbc-test"
SIZE = 3000  # 12 kB of parameters: several chunks of CHUNK bytes
SHAPES = [("w", (SIZE,))]
CHUNK = 4096
VERSION = 3


@pytest.fixture(scope="module")
def verifier():
    v = SignatureVerifier()
    yield v
    v.close()


@pytest.fixture(scope="module")
def client() -> Signer:
    return Signer.generate(ALG)


@pytest.fixture(scope="module")
def stranger() -> Signer:
    return Signer.generate(ALG)


def rules() -> FlRules:
    return FlRules(CHAIN, ALG, "fedasync", StalenessRule("eq2", max_staleness=2), 1.0, 100.0)


def params_bytes() -> int:
    return len(encode_params(np.zeros(SIZE, np.float32), SHAPES))


def make_intake(verifier, registered: dict[bytes, bytes], quota: int = 0) -> UploadIntake:
    gate = UpdateGate(rules(), verifier, registered.get, SIZE)
    return UploadIntake(gate, params_bytes(), quota)


def update(signer: Signer, task: int = 1, value: float = 0.01, size: int = SIZE) -> SignedUpdate:
    delta = np.full(size, value, np.float32)
    return sign_update(signer, CHAIN, VERSION, 64, task, encode_params(delta, [("w", (size,))]))


def stream(u: SignedUpdate) -> list[node_pb.UpdateChunk]:
    """The upload as a client sends it, in CHUNK-byte chunks."""
    data = u.encoded
    parts = [node_pb.UpdateChunk(data=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    parts[0].head.params_hash = u.params_hash
    parts[0].head.signature = u.signature
    return parts


def open_first(intake: UploadIntake, u: SignedUpdate, **head: bytes):
    first = u.encoded[:CHUNK]
    return intake.open(first, head.get("params_hash", u.params_hash),
                       head.get("signature", u.signature), VERSION)


def refusal(fn) -> str:
    with pytest.raises(UpdateRefused) as info:
        fn()
    return info.value.code


# -- the rules


def test_a_registered_clients_first_chunk_admits_the_upload_and_reserves_its_size(
        verifier, client) -> None:
    intake = make_intake(verifier, {client.id: client.public_key})
    u = update(client)
    head = open_first(intake, u)
    assert head.size == len(u.encoded) and head.client == client.id
    assert intake.inflight(client.id) == len(u.encoded)
    intake.check_assembled(head, u.encoded)
    intake.close(head)
    assert intake.inflight(client.id) == 0


def test_the_first_chunk_refuses_what_the_gate_would_refuse_at_the_end(
        verifier, client, stranger) -> None:
    intake = make_intake(verifier, {client.id: client.public_key})
    u = update(client)
    assert refusal(lambda: open_first(intake, update(stranger))) == "unknown_client"
    other = update(client, value=0.02)  # a signature over another blob's hash
    assert refusal(lambda: open_first(intake, u, signature=other.signature)) == "bad_signature"
    assert refusal(lambda: open_first(intake, u, params_hash=b"")) == "malformed"
    assert refusal(lambda: intake.open(b"garbage" * 10, u.params_hash, u.signature,
                                       VERSION)) == "malformed"
    assert refusal(lambda: open_first(intake, update(client, size=SIZE + 1))) == "shape"
    assert refusal(lambda: intake.open(u.encoded[:CHUNK], u.params_hash, u.signature,
                                       VERSION + 3)) == "too_stale"
    assert intake.inflight(client.id) == 0  # a refusal reserves nothing


def test_a_client_past_its_in_flight_quota_is_refused_until_an_upload_ends(
        verifier, client) -> None:
    intake = make_intake(verifier, {client.id: client.public_key})
    size = len(update(client).encoded)
    fit = intake.quota_bytes // size  # four model-sized uploads, with room for their heads
    assert fit >= QUOTA_UPLOADS
    heads = [open_first(intake, update(client, task=t)) for t in range(fit)]
    late = update(client, task=fit)
    assert refusal(lambda: open_first(intake, late)) == "quota"
    assert intake.inflight(client.id) == fit * size
    intake.close(heads[0])
    intake.close(open_first(intake, late))


def test_an_upload_must_deliver_the_update_its_head_declared(verifier, client) -> None:
    intake = make_intake(verifier, {client.id: client.public_key})
    u = update(client)
    head = open_first(intake, u)
    swapped = update(client, value=0.5)  # same size and fields, another blob
    assert refusal(lambda: intake.check_assembled(head, swapped.encoded)) == "head_mismatch"
    assert refusal(lambda: intake.check_assembled(head, u.encoded[:-1])) == "malformed"


# -- a real gRPC server


class _Node(ClientApi):
    """What ``ClientApi`` reads of ``ServerNode``; blobs go to a real store on disk."""

    def __init__(self, verifier: SignatureVerifier, registered: dict[bytes, bytes],
                 blobs: Path) -> None:
        self.gate = UpdateGate(rules(), verifier, registered.get, SIZE)
        self.intake = UploadIntake(self.gate, params_bytes())
        self.store = BlobStore(blobs)
        self.version = VERSION
        self.metrics = NodeMetrics()
        self.pool = UpdatePool(rules(), AggregationParams())
        self.traffic = {"bytes_from_clients": 0, "bytes_relayed": 0}
        self._issued: dict = {}
        self._arrivals: dict = {}
        self._peers: dict = {}
        self._tasks: list = []
        self._version_changed = asyncio.Event()

    async def _put_blob(self, data: bytes) -> bytes:
        return self.store.put(data)


def stored(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def serve(node: _Node):
    server = grpc.aio.server()
    node_grpc.add_NodeServiceServicer_to_server(NodeServicer(node), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def first_then_hold(chunks: list[node_pb.UpdateChunk], sent: list[int],
                          release: asyncio.Event) -> AsyncIterator[node_pb.UpdateChunk]:
    """Sends the first chunk, then the rest only once ``release`` is set."""
    for i, chunk in enumerate(chunks):
        if i == 1:
            await release.wait()
        sent.append(i)
        yield chunk


async def test_an_unregistered_sender_is_refused_after_its_first_chunk_and_nothing_is_stored(
        verifier, client, stranger, tmp_path) -> None:
    node = _Node(verifier, {client.id: client.public_key}, tmp_path / "blobs")
    server, address = await serve(node)
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            stub = node_grpc.NodeServiceStub(ch)
            chunks = stream(update(stranger))
            assert len(chunks) > 2
            sent: list[int] = []
            never = asyncio.Event()  # the stranger never gets to send its second chunk
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(
                    stub.SubmitUpdate(first_then_hold(chunks, sent, never)), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert info.value.details().startswith("unknown_client: ")
            assert sent == [0]
            assert stored(tmp_path / "blobs") == []
            assert node.intake.inflight(stranger.id) == 0

            # No head: refused by the first chunk too.
            bare = [node_pb.UpdateChunk(data=c.data) for c in stream(update(client, task=9))]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SubmitUpdate(iter(bare), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details().startswith("malformed: ")
            assert stored(tmp_path / "blobs") == []

            # The registered client's upload, sent the way a client and a relay send it.
            good = update(client)
            reply = await stub.SubmitUpdate(iter(update_chunks(good)), timeout=10)
            assert bytes(reply.update_digest) == good.digest
            assert len(stored(tmp_path / "blobs")) == 1
            assert node.store.path(hashlib.sha256(good.encoded).digest()).exists()
            assert node.intake.inflight(client.id) == 0
            refused = {s.labels["reason"]: s.value for m in node.metrics.registry.collect()
                       for s in m.samples if m.name == "dualchain_node_updates_refused"
                       and s.name.endswith("_total")}
            assert refused == {"unknown_client": 1.0, "malformed": 1.0}
    finally:
        await server.stop(None)


async def test_a_stream_longer_than_its_head_declared_is_refused_and_not_stored(
        verifier, client, tmp_path) -> None:
    node = _Node(verifier, {client.id: client.public_key}, tmp_path / "blobs")
    server, address = await serve(node)
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            chunks = stream(update(client))
            chunks.append(node_pb.UpdateChunk(data=b"\x00" * 64))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await node_grpc.NodeServiceStub(ch).SubmitUpdate(iter(chunks), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.details().startswith("oversized: ")
        assert stored(tmp_path / "blobs") == []
        assert node.intake.inflight(client.id) == 0
    finally:
        await server.stop(None)
