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

from dualchain.chain.cmbc.payloads import StateReport
from dualchain.chain.types import TxKind
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import blocks_up_to, chain_stub
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
    stub = chain_stub(testbed, "cmbc-0")
    height = stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height
    reports = [StateReport.decode(tx.payload) for b in blocks_up_to(stub, height)
               for tx in b.transactions if tx.kind == TxKind.STATE_REPORT]
    assert reports and all(r.epsilon is not None and 0 < r.epsilon <= EPSILON for r in reports)

    # The launcher's figures: privacy.json while it runs, report.json's section.
    live = json.loads((testbed.workdir / "privacy.json").read_text())
    assert set(live) == {"client-0", "client-1"} and live["client-1"]["exhausted"]
    report = testbed.report({}, interrupted=False)["privacy"]
    assert report["within_budget"] and 0 < report["max_epsilon_spent"] <= EPSILON
    assert json.loads(Path(testbed.workdir / "report.json").read_text())["privacy"] == report
