"""The health helper of every dualchain gRPC server (``chain.rpc.add_health``) and the stop
helpers of every process (``chain.lifecycle``), on a real in-process grpc.aio server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dualchain.chain.lifecycle import until_stopped
from dualchain.chain.rpc import Health, add_health, server_options, service_names
from dualchain.proto.v1 import chain_pb2, miner_pb2, node_pb2, peer_pb2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ["dualchain.v1.ChainService", "dualchain.v1.PeerService"]


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[Health, health_pb2_grpc.HealthStub]]:
    server = grpc.aio.server(options=server_options())
    health = await add_health(server, SERVICES)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield health, health_pb2_grpc.HealthStub(channel)
    finally:
        await channel.close()
        await server.stop(grace=None)


async def check(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return (await stub.Check(request, timeout=5)).status


def test_service_names_are_the_full_proto_names() -> None:
    assert service_names(chain_pb2, peer_pb2) == SERVICES
    assert service_names(miner_pb2, node_pb2) == ["dualchain.v1.MinerService",
                                                  "dualchain.v1.NodeService"]


async def test_a_server_is_not_serving_until_it_says_it_is_ready(served) -> None:
    health, stub = served
    assert [await check(stub, s) for s in ["", *SERVICES]] == [NOT_SERVING] * 3
    await health.serving()
    assert [await check(stub, s) for s in ["", *SERVICES]] == [SERVING] * 3


async def test_a_service_it_does_not_serve_is_not_found(served) -> None:
    _, stub = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await check(stub, "dualchain.v1.MinerService")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_shutting_down_turns_every_service_not_serving_for_good(served) -> None:
    health, stub = served
    await health.serving()
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert (await watch.read()).status == SERVING
    await health.shutting_down()
    assert (await watch.read()).status == NOT_SERVING  # a watcher hears it at once
    watch.cancel()
    await health.serving()  # a late "ready" cannot undo the shutdown
    assert [await check(stub, s) for s in ["", *SERVICES]] == [NOT_SERVING] * 3


async def test_until_stopped_returns_true_when_the_work_finishes_first() -> None:
    stop = asyncio.Event()
    assert await until_stopped(asyncio.sleep(0), stop) is True


async def test_until_stopped_cancels_the_work_when_stop_comes_first() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_start() -> None:
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_soon(stop.set)
    assert await until_stopped(slow_start(), stop) is False
    assert cancelled.is_set()


async def test_until_stopped_passes_on_a_failed_start() -> None:
    async def broken() -> None:
        raise ValueError("wrong genesis")

    with pytest.raises(ValueError, match="wrong genesis"):
        await until_stopped(broken(), asyncio.Event())
