"""Reads from a running testbed's chain daemons, shared by the testbed tests."""

from __future__ import annotations

import grpc

from dualchain.chain import wire
from dualchain.chain.types import Block
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc


def chain_stub(tb: Testbed, name: str) -> chain_pb2_grpc.ChainServiceStub:
    """The chain service of the testbed process ``name`` (e.g. "ctbc-0", "cmbc-1")."""
    return chain_pb2_grpc.ChainServiceStub(grpc.insecure_channel(tb.proc(name).address))


def blocks_up_to(stub: chain_pb2_grpc.ChainServiceStub, height: int) -> list[Block]:
    return [wire.block_from_proto(stub.GetBlock(chain_pb2.GetBlockRequest(height=h),
                                                timeout=10).block)
            for h in range(1, height + 1)]
