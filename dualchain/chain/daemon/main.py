"""Runs one chain daemon process until SIGTERM or SIGINT.

The daemon runs the application its caller hands it (an ``AppFactory``): ``dualchain chain``
starts it through ``dualchain.apps.factory.run``, the composition root.

On start it prints one JSON line ``{"event": "ready", ...}`` to standard output once its services
listen, so launchers and tests can wait for that line instead of polling or sleeping. Its gRPC
server also serves the standard health service (``grpc.health.v1.Health``): NOT_SERVING while
the node loads its chain, SERVING from the ready line on, NOT_SERVING again once shutdown began.

SIGTERM or SIGINT (also during startup) starts a clean shutdown: health goes NOT_SERVING, our
gossip links close, the server stops taking calls and gives those in flight ``GRACE_S`` to end,
then the node's tasks stop, the store thread finishes the write it is doing and the block store
closes (SQLite checkpoints its WAL into the database file); the process exits with code 0.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import uvloop

from dualchain.chain import heartbeat
from dualchain.chain.app_context import AppFactory
from dualchain.chain.daemon.cmbc import CmbcNode
from dualchain.chain.daemon.config import ConfigError, DaemonConfig
from dualchain.chain.daemon.ctbc import CtbcNode
from dualchain.chain.daemon.servicers import ChainServicer, MinerServicer, PeerServicer
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import load_key_file
from dualchain.chain.lifecycle import stop_on_signals, until_stopped
from dualchain.chain.rpc import add_health, listen, make_server, message_limit, service_names
from dualchain.proto.v1 import (
    chain_pb2,
    chain_pb2_grpc,
    miner_pb2,
    miner_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
)

log = logging.getLogger("dualchain.chain")

GRACE_S = 1.0  # for calls in flight at shutdown; streams (blocks, tips, gossip) end after it


async def serve(config: DaemonConfig, make_app: AppFactory) -> None:
    stop = stop_on_signals()
    genesis = Genesis.load(config.genesis)
    if genesis.kind != config.kind:
        raise ConfigError(f"genesis {config.genesis} is for {genesis.kind}, config says "
                          f"{config.kind}")
    signer = load_key_file(config.key, config.backend)
    if signer.algorithm != genesis.algorithm:
        raise ConfigError(f"key {config.key} is {signer.algorithm.label}, the chain uses "
                          f"{genesis.algorithm.label}")
    node: CtbcNode | CmbcNode
    server = make_server(message_limit(genesis.ledger_params().max_block_bytes))
    services = [chain_pb2, peer_pb2]
    if config.kind == "ctbc":
        node = CtbcNode(config, genesis, signer, make_app)
    else:
        node = CmbcNode(config, genesis, signer, make_app)
        miner_pb2_grpc.add_MinerServiceServicer_to_server(MinerServicer(node), server)
        services.append(miner_pb2)
    chain_pb2_grpc.add_ChainServiceServicer_to_server(ChainServicer(node), server)
    peer_pb2_grpc.add_PeerServiceServicer_to_server(PeerServicer(node), server)
    health = await add_health(server, service_names(*services))
    beat = None
    try:
        if listen(server, config.listen, config.tls) == 0:
            raise ConfigError(f"cannot listen on {config.listen}")
        await server.start()
        if await until_stopped(node.start(), stop):
            ready = {"event": "ready", "kind": config.kind, "id": signer.id.hex(),
                     "listen": config.listen, "height": node.height,
                     "metrics_port": config.metrics_port}
            if isinstance(node, CtbcNode):
                ready["member"] = signer.id in node.committee(node.height + 1)
            await health.serving()
            print(json.dumps(ready), flush=True)
            beat = heartbeat.start()
            await stop.wait()
    finally:
        log.info("stopping")
        heartbeat.stop(beat)
        await health.shutting_down()
        # Our outgoing gossip streams first: peers then end theirs to us, and the server's grace
        # period covers only calls that are really in flight.
        await node.close_links()
        await server.stop(grace=GRACE_S)
        await node.stop()
        log.info("stopped at height %d", node.height)


def run(config_path: Path, log_level: str = "INFO", *,
        make_app: Callable[[str], AppFactory]) -> int:
    """Runs the daemon of a config file with the application ``make_app`` gives for its kind."""
    logging.basicConfig(
        level=log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = DaemonConfig.load(config_path)
    uvloop.run(serve(config, make_app(config.kind)))
    return 0
