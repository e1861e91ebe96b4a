"""Runs one server node process until SIGTERM or SIGINT.

Prints ``{"event": "ready", ...}`` once it serves, then a ``version`` line per committed model
version (accuracy, loss, round time) for launchers and operators.
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

from dualchain.chain.identity import load_key_file
from dualchain.chain.rpc import server_options
from dualchain.node.config import NodeConfig
from dualchain.node.server import ServerNode
from dualchain.node.service import NodeServicer
from dualchain.proto.v1 import node_pb2_grpc

log = logging.getLogger("dualchain.node")


async def serve(config: NodeConfig) -> None:
    signer = load_key_file(config.key)
    node = ServerNode(config, signer)
    await node.start()
    node.metrics.serve(config.metrics_port)
    server = grpc.aio.server(options=server_options())
    node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(node), server)
    if server.add_insecure_port(config.listen) == 0:
        raise SystemExit(f"cannot listen on {config.listen}")
    await server.start()
    print(json.dumps({"event": "ready", "id": signer.id.hex(), "listen": config.listen,
                      "version": node.version, "accuracy": round(node.accuracy, 4)}),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)
    await node.stop()


def run(config_path: Path, log_level: str = "INFO") -> int:
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(serve(NodeConfig.load(config_path)))
    return 0
