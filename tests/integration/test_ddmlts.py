"""DDMLTS end to end with real processes: 2 server nodes (each with its CTBC and CMBC daemon),
1 miner and 4 clients on digits, two of them emulated 4x slower.

The node that commits a version plans the tasks after it once its anchor is final on CMBC;
both CMBC replicas re-execute the scheduler before they accept the plan; nodes hand out tasks
from the final plan only, so slow clients get fewer batches. A forged plan never lands.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dualchain.apps.cmbc.app import ZERO_DIGEST
from dualchain.apps.cmbc.payloads import GroupAssignment, TaskPlan
from dualchain.bench.fig8 import version_rounds
from dualchain.chain import wire
from dualchain.chain.identity import load_key_file
from dualchain.chain.types import Block, TxKind
from dualchain.chain.validation import sign_transaction
from dualchain.deploy.up import CMBC_CHAIN, Testbed
from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc
from tests.integration.testbed_reads import blocks_up_to, chain_stub
from tests.integration.testbeds import running_testbed

EVENT_TIMEOUT_S = 150.0
SLOWDOWNS = [1.0, 1.0, 4.0, 4.0]
FAST, SLOW = ("client-0", "client-1"), ("client-2", "client-3")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("ddmlts") / "testbed"
    with running_testbed(workdir, nodes=2, clients=4, miners=1, mode="ddmlts",
                         slowdowns=SLOWDOWNS, batches=10, cmbc_interval_s=1.0,
                         finality_depth=3, deadline_s=20.0, max_staleness=30) as tb:
        yield tb


def _cmbc(tb: Testbed, i: int) -> chain_pb2_grpc.ChainServiceStub:
    return chain_stub(tb, f"cmbc-{i}")


def _final_blocks(tb: Testbed, i: int) -> list[Block]:
    stub = _cmbc(tb, i)
    return blocks_up_to(stub, stub.GetStatus(chain_pb2.GetStatusRequest(),
                                             timeout=10).final_height)


def _records(blocks: list[Block], kind: TxKind) -> list[bytes]:
    return [tx.hash for b in blocks for tx in b.transactions if tx.kind == kind]


def _planned_task(tb: Testbed, name: str) -> dict:
    """The next task event of client ``name`` sized by a plan (not the default batches)."""
    return tb.wait_for(lambda p, e: p.name == name and e["event"] == "task"
                       and e.get("batches") not in (None, tb.config.batches),
                       EVENT_TIMEOUT_S, past=True)


def test_plans_land_on_both_replicas_and_size_tasks_by_speed(testbed: Testbed) -> None:
    plan_event = testbed.wait_for(lambda p, e: e["event"] == "plan", EVENT_TIMEOUT_S)
    groups = plan_event["groups"]
    assert sum(g["clients"] for g in groups) == 4
    for g in groups:  # ddmlts (alpha 1) sizes each group at the OLAR optimum
        assert g["planned_s"] <= g["olar_s"] * 1.05 + 1e-9, plan_event
    for name in (*FAST, *SLOW):
        _planned_task(testbed, name)
    # A plan made before every client's state report was final may size them alike, or the
    # other way round: wait for the latest planned tasks to give the fast clients more.
    latest: dict[str, int] = {}

    def fast_get_more(p, e) -> bool:
        if e["event"] == "task" and e.get("batches") not in (None, testbed.config.batches):
            latest[p.name] = e["batches"]
        return (all(n in latest for n in (*FAST, *SLOW))
                and min(latest[n] for n in FAST) > max(latest[n] for n in SLOW))

    testbed.wait_for(fast_get_more, EVENT_TIMEOUT_S, past=True)
    # Both replicas hold the assignment and the plan, in the same final blocks.
    chains = [_final_blocks(testbed, i) for i in range(2)]
    common = min(len(c) for c in chains)
    assert [b.hash for b in chains[0][:common]] == [b.hash for b in chains[1][:common]]
    assert _records(chains[0][:common], TxKind.GROUP_ASSIGNMENT)
    assert _records(chains[0][:common], TxKind.TASK_PLAN)


def test_training_goes_on_under_plans(testbed: Testbed) -> None:
    first = max(testbed.versions) if testbed.versions else 0
    event = testbed.wait_for(lambda p, e: e["event"] == "version"
                             and e["version"] >= first + 3, EVENT_TIMEOUT_S)
    assert event["accuracy"] > 0.5, testbed.versions


def test_each_round_splits_into_the_critical_training_and_communication(
        testbed: Testbed) -> None:
    """The events bench paper fig8 reads: a version both nodes reported names the update it
    waited for last, whose client reported its training; the pieces add up to the round."""
    first = max(testbed.versions) if testbed.versions else 0
    testbed.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= first + 2,
                     EVENT_TIMEOUT_S)
    rows = version_rounds([(p.name, e) for p, e in testbed.history], nodes=2)
    measured = [r for r in rows if r["complete"] and r["communication_s"] is not None]
    assert measured, rows
    for row in measured:
        assert 0 < row["training_s"] < row["round_s"], row
        assert row["upload_s"] >= 0 and row["commit_s"] > 0, row
        parts = row["to_training_s"] + row["training_s"] + row["upload_s"] + row["commit_s"]
        if row["to_training_s"] > 0:  # (training that began before the round is clipped)
            assert parts == pytest.approx(row["round_s"], abs=0.01), row


def test_a_forged_plan_never_takes_effect(testbed: Testbed) -> None:
    """Node 1 signs a plan that gives one client five batches more; CMBC admits it (a plan is
    checked when a block applies it) but no replica puts it in a block while its assignment is
    in force (once another assignment replaced it, it may land as a superseded record, with no
    effect)."""
    blocks = _final_blocks(testbed, 0)
    plan_tx = next(tx for b in reversed(blocks) for tx in b.transactions
                   if tx.kind == TxKind.TASK_PLAN)
    plan = TaskPlan.decode(plan_tx.payload)
    # Five batches more for one client: its group's total comes from the states alone, so no
    # seed (the version's) can reproduce it. (Swapping two clients' counts could: with equal
    # speeds another seed's plan may be exactly that swap.)
    tasks = list(plan.tasks)
    client, batches = tasks[0]
    tasks[0] = (client, batches + 5)
    forged = TaskPlan(plan.version + 1000, plan.basis_height, plan.assignment, tuple(tasks))
    signer = load_key_file(testbed.workdir / "keys" / "node-1.key")
    stub = _cmbc(testbed, 0)
    nonce = stub.GetNonce(chain_pb2.GetNonceRequest(sender=signer.id), timeout=10).next_nonce
    tx = sign_transaction(signer, CMBC_CHAIN, TxKind.TASK_PLAN, forged.encode(), nonce,
                          time.time_ns() // 1_000_000)
    stub.SubmitTx(chain_pb2.SubmitTxRequest(tx=wire.tx_to_proto(tx)), timeout=10)
    start = stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).final_height
    # Six more final blocks: templates are rebuilt many times meanwhile.
    stream = stub.SubscribeBlocks(chain_pb2.SubscribeBlocksRequest(
        from_height=start + 6, final_only=True), timeout=EVENT_TIMEOUT_S)
    next(iter(stream))
    stream.cancel()
    for i in range(2):
        in_force = None
        for t in (t for b in _final_blocks(testbed, i) for t in b.transactions):
            if t.kind == TxKind.GROUP_ASSIGNMENT:
                # Only an assignment over the one in force replaces it: a late copy of an older
                # one (a node that re-plans a version) lands superseded, with no effect.
                record = GroupAssignment.decode(t.payload)
                if record.previous == (in_force or ZERO_DIGEST):
                    in_force = record.digest
            elif t.hash == tx.hash:
                assert in_force != forged.assignment, f"cmbc-{i} took the forged plan"
