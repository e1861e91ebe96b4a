"""Runs one server node process until SIGTERM or SIGINT.

Prints ``{"event": "ready", ...}`` once it serves, then a ``version`` line per committed model
version (accuracy, loss, round time; ``adopted``, the Unix time the node took the version, and
``last_update``, the latest-received update of its own clients that the version includes:
client id, task id, ``arrived``) for launchers and operators.

Its gRPC server carries the standard health service (``grpc.health.v1.Health``): SERVING from the
ready line on (the node has read its chains and loaded the model), NOT_SERVING once shutdown
began. SIGTERM or SIGINT (also during startup) stops it cleanly: health goes NOT_SERVING, the
server stops taking calls and gives those in flight (an update upload, a model download)
``GRACE_S`` to end, then the node's tasks stop and its channels close; exit code 0. The node keeps
no store of its own: models and updates live in its CTBC daemon's blob store.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import uvloop

from dualchain.chain import heartbeat
from dualchain.chain.identity import load_key_file
from dualchain.chain.lifecycle import stop_on_signals, until_stopped
from dualchain.chain.rpc import add_health, listen, make_server, service_names
from dualchain.node.config import NodeConfig
from dualchain.node.server import ServerNode
from dualchain.node.service import NodeServicer
from dualchain.proto.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger("dualchain.node")

GRACE_S = 5.0  # an update upload in flight at shutdown may take a few seconds


async def serve(config: NodeConfig) -> None:
    stop = stop_on_signals()
    signer = load_key_file(config.key)
    node = ServerNode(config, signer)
    server = make_server()
    node_pb2_grpc.add_NodeServiceServicer_to_server(NodeServicer(node), server)
    health = await add_health(server, service_names(node_pb2))
    beat = None
    try:
        if not await until_stopped(node.start(), stop):
            return
        node.metrics.serve(config.metrics_port)
        if listen(server, config.listen, config.tls) == 0:
            raise SystemExit(f"cannot listen on {config.listen}")
        await server.start()
        await health.serving()
        print(json.dumps({"event": "ready", "id": signer.id.hex(), "listen": config.listen,
                          "version": node.version, "accuracy": round(node.accuracy, 4),
                          "metrics_port": config.metrics_port}), flush=True)
        beat = heartbeat.start()
        await stop.wait()
    finally:
        log.info("stopping")
        heartbeat.stop(beat)
        await health.shutting_down()
        await server.stop(grace=GRACE_S)
        await node.stop()


def run(config_path: Path, log_level: str = "INFO") -> int:
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(serve(NodeConfig.load(config_path)))
    return 0
