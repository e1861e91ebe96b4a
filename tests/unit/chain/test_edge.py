"""The error edge of every dualchain gRPC server (``chain.edge``), on a real in-process grpc.aio
server: undecodable requests, typed errors, unexpected exceptions and aborts in unary and
streaming methods, status details made safe, and refusal logging under a rate limit."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dualchain.chain.edge import RefusalLog, safe_details
from dualchain.chain.errors import NotFoundError, QuotaError, StoreError, ValidationError
from dualchain.chain.rpc import add_health, make_server
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc

SECRET_PATH = "/tmp/pytest-of-x/store/chain.sqlite"


class Faulty(chain_grpc.ChainServiceServicer):
    """A stand-in chain service whose methods fail in every way a real one might."""

    async def GetBlock(self, request, context):
        if request.height == 1:
            raise NotFoundError("no block at height 1")
        if request.height == 2:
            raise StoreError(f"block store {SECRET_PATH}: Python int too large")
        if request.height == 3:
            raise OverflowError(f"{SECRET_PATH}\nTraceback (most recent call last):")
        if request.height == 4:  # a servicer's own abort with a path in its text
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad {SECRET_PATH}\nline 2")
        return chain_pb.GetBlockResponse(canonical=True)

    async def GetNonce(self, request, context):
        raise ValidationError("nonce gap", code="nonce_gap")

    async def PutBlob(self, request_iterator, context):
        total = 0
        async for chunk in request_iterator:
            total += len(chunk.data)
        if total > 10:
            raise QuotaError("over quota")
        return chain_pb.PutBlobResponse(size=total)

    async def GetBlob(self, request, context) -> AsyncIterator:
        yield chain_pb.BlobChunk(data=b"first")
        raise KeyError(SECRET_PATH)


@pytest_asyncio.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = make_server()
    chain_grpc.add_ChainServiceServicer_to_server(Faulty(), server)
    await add_health(server, ["dualchain.v1.ChainService"])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield ch
    finally:
        await ch.close()
        await server.stop(grace=None)


def raw_unary(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    """A call that sends bytes as they are (no serializer): garbage reaches the server."""
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


async def failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def assert_safe(error: grpc.aio.AioRpcError) -> None:
    details = error.details() or ""
    assert "\n" not in details and "/tmp" not in details and "Traceback" not in details
    assert len(details) <= 300


async def test_undecodable_requests_are_invalid_argument_with_one_line(channel) -> None:
    garbage = b"\xff\xff\xff\xff\x0f"
    for method in ("/dualchain.v1.ChainService/GetBlock",
                   "/grpc.health.v1.Health/Check"):
        error = await failure(raw_unary(channel, method)(garbage, timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        assert error.details().startswith("malformed: the request is not a valid message")
        assert_safe(error)
    stream = channel.stream_unary("/dualchain.v1.ChainService/PutBlob",
                                  request_serializer=None, response_deserializer=None)
    error = await failure(stream(iter([b"\x0a\x01a", garbage]), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_safe(error)


async def test_typed_errors_become_their_status_and_internal_ones_say_nothing(channel) -> None:
    stub = chain_grpc.ChainServiceStub(channel)
    error = await failure(stub.GetBlock(chain_pb.GetBlockRequest(height=1), timeout=5))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND,
                                               "not_found: no block at height 1")
    for height in (2, 3):  # a store failure, an unexpected exception: nothing of their text
        error = await failure(stub.GetBlock(chain_pb.GetBlockRequest(height=height), timeout=5))
        assert error.code() == grpc.StatusCode.INTERNAL
        assert error.details() == "internal: the server could not complete this request"
    error = await failure(stub.GetBlock(chain_pb.GetBlockRequest(height=4), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "bad <path> line 2"
    error = await failure(stub.GetNonce(chain_pb.GetNonceRequest(), timeout=5))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    error = await failure(stub.SubscribeBlocks(chain_pb.SubscribeBlocksRequest(),
                                               timeout=5).read())
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED  # the generated default method
    error = await failure(stub.PutBlob(iter([chain_pb.BlobChunk(data=b"x" * 11)]), timeout=5))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await stub.PutBlob(iter([chain_pb.BlobChunk(data=b"x")]), timeout=5)).size == 1


async def test_a_stream_that_fails_midway_ends_with_a_safe_status(channel) -> None:
    stub = chain_grpc.ChainServiceStub(channel)
    got = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for chunk in stub.GetBlob(chain_pb.GetBlobRequest(), timeout=5):
            got.append(chunk.data)
    assert got == [b"first"]
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert_safe(info.value)


async def test_the_health_service_still_works_behind_the_edge(channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()


async def test_refusals_are_logged_one_line_each_and_rate_limited(channel, caplog) -> None:
    caplog.set_level(logging.INFO, logger="dualchain.edge")
    call = raw_unary(channel, "/dualchain.v1.ChainService/GetBlock")
    for _ in range(200):
        await failure(call(b"\xff\xff\xff", timeout=5))
    lines = [r for r in caplog.records if r.name == "dualchain.edge"]
    assert 1 <= len(lines) <= 6  # the burst, not one line per request
    assert all("\n" not in r.getMessage() for r in lines)
    assert "ipv4:127.0.0.1" in lines[0].getMessage()


def test_safe_details_keeps_one_short_line_without_paths() -> None:
    assert safe_details("a\nb\tc") == "a b c"
    assert safe_details(f"cannot open {SECRET_PATH}: locked") == "cannot open <path>: locked"
    assert safe_details("ratio 1/2 and host:port 127.0.0.1:70") == \
        "ratio 1/2 and host:port 127.0.0.1:70"
    assert len(safe_details("x" * 1000)) == 300


def test_the_refusal_log_refills_and_counts_what_it_suppressed() -> None:
    now = [0.0]
    limits = RefusalLog(per_key_burst=2, per_key_per_min=60, total_burst=100,
                        total_per_min=600, clock=lambda: now[0])
    peer = "ipv4:10.0.0.1:5000"
    assert limits.allow(peer, "/m") == (True, 0)
    assert limits.allow("ipv4:10.0.0.1:5001", "/m") == (True, 0)  # same host, other port
    assert limits.allow(peer, "/m") == (False, 0)
    assert limits.allow(peer, "/m") == (False, 0)
    assert limits.allow(peer, "/other") == (True, 0)  # per method
    now[0] += 1.0  # one token back (60 a minute)
    assert limits.allow(peer, "/m") == (True, 2)
    total = RefusalLog(per_key_burst=5, total_burst=3, total_per_min=0.0, clock=lambda: 0.0)
    assert [total.allow(f"ipv4:10.0.0.{i}:1", "/m")[0] for i in range(5)] == \
        [True, True, True, False, False]


async def test_a_status_set_without_a_reason_gets_one(channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    error = await failure(stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "not_found: refused without a reason given"
