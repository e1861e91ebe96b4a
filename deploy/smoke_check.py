"""The checks of deploy/container-smoke.sh, run inside a container of the stack (it reaches the
services by name):

    python - versions N SECONDS ctbc-0:7000 ...   wait until every CTBC replica reports model
                                                   version >= N (exit 1 at the timeout)
    python - agree ctbc-0:7000 ctbc-1:7000 ...     every replica has the same block at the
                                                   lowest of their heights, and the same genesis

It uses only the generated gRPC stubs, so it runs with the image's dualchain. Prints one line per
check.
"""

from __future__ import annotations

import sys
import time

import grpc

from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc


def status(address: str) -> chain_pb2.ChainStatus:
    with grpc.insecure_channel(address) as channel:
        return chain_pb2_grpc.ChainServiceStub(channel).GetStatus(
            chain_pb2.GetStatusRequest(), timeout=5)


def block_at(address: str, height: int) -> bytes:
    with grpc.insecure_channel(address) as channel:
        reply = chain_pb2_grpc.ChainServiceStub(channel).GetBlock(
            chain_pb2.GetBlockRequest(height=height), timeout=10)
    return reply.block.SerializeToString(deterministic=True)


def wait_versions(target: int, seconds: float, replicas: list[str]) -> int:
    deadline = time.monotonic() + seconds
    while True:
        try:
            versions = {a: status(a).model_version for a in replicas}
        except grpc.RpcError as exc:
            versions = {}
            print(f"  not answering yet: {exc.code().name}", flush=True)
        if versions:
            print(f"  model versions {versions}", flush=True)
            if min(versions.values()) >= target:
                return 0
        if time.monotonic() >= deadline:
            print(f"timed out waiting for model version {target}", file=sys.stderr)
            return 1
        time.sleep(5)


def agree(replicas: list[str]) -> int:
    statuses = {a: status(a) for a in replicas}
    genesis = {s.genesis_hash for s in statuses.values()}
    if len(genesis) != 1:
        print(f"replicas run different genesis blocks: {genesis}", file=sys.stderr)
        return 1
    common = min(s.height for s in statuses.values())
    if common < 1:
        print("no replica has committed a block", file=sys.stderr)
        return 1
    blocks = {a: block_at(a, common) for a in replicas}
    if len(set(blocks.values())) != 1:
        print(f"replicas differ at height {common}", file=sys.stderr)
        return 1
    heights = {a: s.height for a, s in statuses.items()}
    print(f"  {len(replicas)} CTBC replicas agree at height {common} (heights {heights})")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["versions"]:
        return wait_versions(int(argv[1]), float(argv[2]), argv[3:])
    if argv[:1] == ["agree"]:
        return agree(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
