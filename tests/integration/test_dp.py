"""Local differential privacy on a real testbed (`dualchain up --dp-epsilon 8`): 2 server nodes,
2 clients, a miner, every role its own process. Each client trains with per-example DP-SGD and
reports its spent epsilon on its CMBC state reports and events; client-1's budget is planned for
a single task, so it stops uploading after it while client-0 goes on and versions are still
committed. The launcher's privacy.json and report.json carry each client's epsilon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualchain.apps.cmbc.payloads import StateReport
from dualchain.chain import wire
from dualchain.chain.types import Transaction
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import chain_stub
from tests.integration.testbeds import running_testbed

EVENT_TIMEOUT_S = 180.0
EPSILON = 8.0


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("dp") / "testbed"

    def prepare(tb: Testbed) -> None:
        path = workdir / "client-1.json"
        data = json.loads(path.read_text())
        data["dp"]["tasks"] = 1  # its budget covers one task
        path.write_text(json.dumps(data, indent=2))

    with running_testbed(workdir, prepare, nodes=2, clients=2, miners=1, rounds=3, batches=5,
                         min_updates=1, window_s=2.0, max_staleness=60, dp_epsilon=EPSILON,
                         dp_schedule="adaptive") as tb:
        yield tb


def mined(tb: Testbed, hashes: set[bytes]) -> list[Transaction]:
    """The transactions ``hashes`` as cmbc-0 commits them, following its block stream."""
    found: dict[bytes, Transaction] = {}
    stream = chain_stub(tb, "cmbc-0").SubscribeBlocks(
        chain_pb2.SubscribeBlocksRequest(from_height=1), timeout=EVENT_TIMEOUT_S)
    try:
        for message in stream:
            for tx in wire.block_from_proto(message).transactions:
                if tx.hash in hashes:
                    found[tx.hash] = tx
            if len(found) == len(hashes):
                return list(found.values())
    finally:
        stream.cancel()
    raise AssertionError(f"cmbc-0 committed {len(found)} of {len(hashes)} state reports")


def test_clients_report_epsilon_within_budget_and_versions_commit(testbed: Testbed) -> None:
    spent = testbed.wait_for(lambda p, e: p.name == "client-1"
                             and e["event"] == "privacy_budget", EVENT_TIMEOUT_S, past=True)
    assert spent["exhausted"] and spent["epsilon_spent"] <= EPSILON
    assert "would spend" in spent["reason"]
    # Versions go on after client-1 stopped: client-0's noisy updates.
    # (client-1 may stop before version 1 is committed: 2 versions at least in any case.)
    wanted = max(max(testbed.versions, default=0) + 1, 2)
    testbed.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= wanted,
                     EVENT_TIMEOUT_S, past=True)
    # client-1 uploaded nothing after its budget was spent.
    history = [(p.name, e) for p, e in testbed.history if p.name == "client-1"]
    stop_at = next(i for i, (_, e) in enumerate(history) if e["event"] == "privacy_budget")
    assert not [e for _, e in history[stop_at:]
                if e["event"] == "task" and e["outcome"] == "accepted"]

    # The state reports on CMBC carry each client's spent epsilon, never above the budget.
    testbed.wait_for(lambda p, e: p.name == "client-0" and e["event"] == "report"
                     and e["privacy"]["releases"] > 0, EVENT_TIMEOUT_S, past=True)
    sent = {bytes.fromhex(e["tx"]) for p, e in testbed.history
            if p.role == "client" and e["event"] == "report"}
    reports = [StateReport.decode(tx.payload) for tx in mined(testbed, sent)]
    assert {r.epsilon is not None and 0 < r.epsilon <= EPSILON for r in reports} == {True}

    # The launcher's figures: privacy.json while it runs, report.json's section.
    live = json.loads((testbed.workdir / "privacy.json").read_text())
    assert set(live) == {"client-0", "client-1"} and live["client-1"]["exhausted"]
    report = testbed.report({}, interrupted=False)["privacy"]
    assert report["within_budget"] and 0 < report["max_epsilon_spent"] <= EPSILON
    assert json.loads(Path(testbed.workdir / "report.json").read_text())["privacy"] == report
