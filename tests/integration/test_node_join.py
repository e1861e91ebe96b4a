"""A server node joins a running testbed through the two stages of seed 000 §3.1, with real
processes: 2 genesis nodes (each with its CTBC and CMBC replica), 1 miner, 4 clients in ddmlts
mode; then node-2 starts with its own CTBC and CMBC replicas and 2 clients of its own.

Stage 1: node-2's NodeJoinRequest is recorded on CMBC. Stage 2: the committee votes node-2 in
as a CTBC validator with VALIDATOR_REGISTER transactions naming that request. Only then is its
admission recorded on CMBC, after which it hands out tasks, manages a group in the next
assignment and takes aggregation turns: the committee accepts its model commits.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dualchain.apps.cmbc.payloads import GroupAssignment, NodeAdmission, NodeJoinRequest
from dualchain.apps.ctbc.payloads import ValidatorRegister
from dualchain.chain import wire
from dualchain.chain.identity import identity_id, load_key_file
from dualchain.chain.types import Block, TxKind
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import blocks_up_to, chain_stub
from tests.integration.testbeds import running_testbed

EVENT_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """The testbed once node-2 printed that its admission is final."""
    workdir = tmp_path_factory.mktemp("join") / "testbed"
    with running_testbed(workdir, nodes=2, clients=4, miners=1, mode="ddmlts", batches=10,
                         join_nodes=1, join_clients=2, deadline_s=20.0,
                         max_staleness=30) as tb:
        tb.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= 2, EVENT_TIMEOUT_S)
        tb.start_joiners()
        tb.wait_for(lambda p, e: p.name == "node-2" and e["event"] == "join"
                    and e["stage"] == "admitted", EVENT_TIMEOUT_S, past=True)
        yield tb


def _blocks(tb: Testbed, name: str) -> list[Block]:
    stub = chain_stub(tb, name)
    status = stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
    return blocks_up_to(stub, status.final_height)


def _joiner(tb: Testbed) -> bytes:
    return load_key_file(tb.workdir / "keys" / "node-2.key").id


def test_the_join_request_the_ctbc_membership_change_and_the_admission_land_in_order(
        joined: Testbed) -> None:
    joiner = _joiner(joined)
    cmbc = _blocks(joined, "cmbc-0")
    requests = [(b.header.height, tx) for b in cmbc for tx in b.transactions
                if tx.kind == TxKind.NODE_JOIN_REQUEST and tx.sender == joiner]
    assert len(requests) == 1
    request_height, request_tx = requests[0]
    assert isinstance(NodeJoinRequest.decode(request_tx.payload), NodeJoinRequest)
    admissions = [(b.header.height, NodeAdmission.decode(tx.payload)) for b in cmbc
                  for tx in b.transactions if tx.kind == TxKind.NODE_JOIN_REQUEST
                  and tx.sender != joiner]
    assert admissions and all(a.node == joiner for _, a in admissions)
    admission_height, admission = admissions[0]
    assert admission_height > request_height
    # Stage 2 on CTBC: votes naming the request, committed at or before the admission's height.
    ctbc = _blocks(joined, "ctbc-0")
    votes = [(b.header.height, tx.sender, ValidatorRegister.decode(tx.payload))
             for b in ctbc for tx in b.transactions if tx.kind == TxKind.VALIDATOR_REGISTER]
    assert votes
    assert all(identity_id(v.public_key) == joiner and v.join_request == request_tx.hash
               for _, _, v in votes)
    assert {voter for _, voter, _ in votes} <= set(load_key_file(
        joined.workdir / "keys" / f"node-{i}.key").id for i in range(2))
    assert min(h for h, _, _ in votes) <= admission.ctbc_height
    # Every CTBC replica, the joiner's own included, holds it as a validator on one chain.
    for name in ("ctbc-0", "ctbc-1", "ctbc-2"):
        status = chain_stub(joined, name).GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
        assert joiner in status.validators, name
    common = min(len(ctbc), len(_blocks(joined, "ctbc-2")))
    assert [b.hash for b in ctbc[:common]] == [b.hash for b in _blocks(joined, "ctbc-2")[:common]]


def test_the_joined_node_serves_its_clients_manages_a_group_and_commits_versions(
        joined: Testbed) -> None:
    joiner = _joiner(joined)
    # Its clients train, and got no task before the admission.
    order = [(p.name, e) for p, e in joined.history]
    admitted_at = next(i for i, (name, e) in enumerate(order)
                       if name == "node-2" and e["event"] == "join" and e["stage"] == "admitted")
    assert not [e for name, e in order[:admitted_at]
                if name in ("client-4", "client-5") and e["event"] == "task"]
    for name in ("client-4", "client-5"):
        joined.wait_for(lambda p, e, n=name: p.name == n and e["event"] == "task"
                        and e.get("outcome") == "accepted", EVENT_TIMEOUT_S, past=True)
    # A later assignment on CMBC gives it a group.
    deadline_versions = max(joined.versions) + 30

    def manages(_p, e) -> bool:
        if e["event"] != "version":
            return False
        assignments = [GroupAssignment.decode(tx.payload) for b in _blocks(joined, "cmbc-1")
                       for tx in b.transactions if tx.kind == TxKind.GROUP_ASSIGNMENT]
        assert e["version"] < deadline_versions, "no assignment with the joined node"
        return any(joiner in {node for node, _ in a.groups} for a in assignments)

    joined.wait_for(manages, EVENT_TIMEOUT_S, past=False)
    # It takes aggregation turns, and the committee accepts its commits.
    joined.wait_for(lambda p, e: p.name == "node-2" and e["event"] == "version"
                    and _committed_by(joined, e["ctbc_height"]) == joiner, EVENT_TIMEOUT_S)


def _committed_by(tb: Testbed, height: int) -> bytes | None:
    reply = chain_stub(tb, "ctbc-0").GetBlock(chain_pb2.GetBlockRequest(height=height),
                                             timeout=10)
    block = wire.block_from_proto(reply.block)
    return next((tx.sender for tx in block.transactions if tx.kind == TxKind.MODEL_VERSION), None)
