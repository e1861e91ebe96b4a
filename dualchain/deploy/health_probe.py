"""`dualchain health`: asks a running dualchain process whether it is up (for operators).

    dualchain health ctbc-0:7000              grpc.health.v1 Check: healthy iff SERVING
    dualchain health --metrics 9100           a miner or client (no gRPC server): /metrics answers
    python -m dualchain.deploy.health_probe   the same without the CLI's imports; no arguments:
                                              $DUALCHAIN_HEALTH_ADDRESS or
                                              $DUALCHAIN_HEALTH_METRICS, else nothing to probe

Exits 0 when healthy and 1 otherwise, with the reason on stderr. Chain daemons and server
nodes answer NOT_SERVING while they start (a daemon replaying its chain) and from the moment
SIGTERM begins their shutdown (docs/operations.md). The image's own health check is cheaper:
``dualchain-healthy`` looks at the health file the process's event loop touches (a Python
process importing grpc per probe took 6-7 s on a busy machine; docs/deploy.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

TIMEOUT_S = 3.0


def grpc_problem(address: str, service: str = "", timeout_s: float = TIMEOUT_S) -> str | None:
    """None if the gRPC health service at ``address`` says SERVING for ``service``, else why
    not."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return f"{address}: {exc.code().name} {exc.details() or ''}".rstrip()
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return f"{address}: {service or 'server'} is {name}"
    return None


def metrics_problem(port: int, host: str = "127.0.0.1",
                    timeout_s: float = TIMEOUT_S) -> str | None:
    """None if the Prometheus endpoint on ``port`` answers with metrics, else why not."""
    url = f"http://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status != 200:
                return f"{url}: HTTP {response.status}"
            if b"dualchain_process_cpu_seconds" not in response.read():
                return f"{url}: no dualchain metrics"
    except (OSError, urllib.error.URLError) as exc:
        return f"{url}: {exc}"
    return None


def probe(address: str | None, service: str = "", metrics: int | None = None,
          timeout_s: float = TIMEOUT_S) -> int:
    """The exit status of one check (gRPC when ``address`` is given, else metrics)."""
    if address is None and metrics is None:
        address = os.environ.get("DUALCHAIN_HEALTH_ADDRESS") or None
        port = os.environ.get("DUALCHAIN_HEALTH_METRICS")
        metrics = int(port) if port else None
        if address is None and metrics is None:
            print("healthy: nothing to probe (no address or metrics port given)")
            return 0
    problem = grpc_problem(address, service, timeout_s) if address is not None \
        else metrics_problem(metrics, timeout_s=timeout_s)  # type: ignore[arg-type]
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", nargs="?", default=None,
                        help="host:port of a chain daemon or server node")
    parser.add_argument("--service", default="",
                        help="the service to ask about (default: the server as a whole)")
    parser.add_argument("--metrics", type=int, default=None, metavar="PORT",
                        help="check the Prometheus endpoint on this local port instead")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help=f"seconds (default {TIMEOUT_S})")


def cmd_health(args: argparse.Namespace) -> int:
    return probe(args.address, args.service, args.metrics, args.timeout)


def add_parser(sub: argparse._SubParsersAction) -> None:
    health = sub.add_parser(
        "health",
        help="health check of a running process (exit 0 healthy, 1 not)",
        description="Asks a chain daemon's or server node's grpc.health.v1 service, or a "
        "miner's or client's metrics endpoint (--metrics PORT), whether the process is up; "
        "without arguments reads $DUALCHAIN_HEALTH_ADDRESS or $DUALCHAIN_HEALTH_METRICS.",
    )
    _arguments(health)
    health.set_defaults(func=cmd_health)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dualchain.deploy.health_probe")
    _arguments(parser)
    return cmd_health(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
