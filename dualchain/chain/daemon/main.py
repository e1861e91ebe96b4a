"""Runs one chain daemon process until SIGTERM or SIGINT.

On start it prints one JSON line ``{"event": "ready", ...}`` to standard output once its services
listen, so launchers and tests can wait for that line instead of polling or sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import grpc
import uvloop

from dualchain.chain.daemon.cmbc import CmbcNode
from dualchain.chain.daemon.config import ConfigError, DaemonConfig
from dualchain.chain.daemon.ctbc import CtbcNode
from dualchain.chain.daemon.servicers import ChainServicer, MinerServicer, PeerServicer
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import load_key_file
from dualchain.chain.rpc import message_limit, server_options
from dualchain.proto.v1 import chain_pb2_grpc, miner_pb2_grpc, peer_pb2_grpc

log = logging.getLogger("dualchain.chain")


async def serve(config: DaemonConfig) -> None:
    genesis = Genesis.load(config.genesis)
    if genesis.kind != config.kind:
        raise ConfigError(f"genesis {config.genesis} is for {genesis.kind}, config says "
                          f"{config.kind}")
    signer = load_key_file(config.key, config.backend)
    if signer.algorithm != genesis.algorithm:
        raise ConfigError(f"key {config.key} is {signer.algorithm.label}, the chain uses "
                          f"{genesis.algorithm.label}")
    node: CtbcNode | CmbcNode
    server = grpc.aio.server(options=server_options(message_limit(
        genesis.ledger_params().max_block_bytes)))
    if config.kind == "ctbc":
        node = CtbcNode(config, genesis, signer)
    else:
        node = CmbcNode(config, genesis, signer)
        miner_pb2_grpc.add_MinerServiceServicer_to_server(MinerServicer(node), server)
    chain_pb2_grpc.add_ChainServiceServicer_to_server(ChainServicer(node), server)
    peer_pb2_grpc.add_PeerServiceServicer_to_server(PeerServicer(node), server)
    if server.add_insecure_port(config.listen) == 0:
        raise ConfigError(f"cannot listen on {config.listen}")
    await server.start()
    await node.start()
    ready = {"event": "ready", "kind": config.kind, "id": signer.id.hex(),
             "listen": config.listen, "height": node.height,
             "metrics_port": config.metrics_port}
    if isinstance(node, CtbcNode):
        ready["member"] = signer.id in node.committee(node.height + 1)
    print(json.dumps(ready), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    # Our outgoing gossip streams first: peers then end theirs to us, and the server's grace
    # period covers only calls that are really in flight.
    await node.close_links()
    await server.stop(grace=1)
    await node.stop()


def run(config_path: Path, log_level: str = "INFO") -> int:
    logging.basicConfig(
        level=log_level, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = DaemonConfig.load(config_path)
    uvloop.run(serve(config))
    return 0
