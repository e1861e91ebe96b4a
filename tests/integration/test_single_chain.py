"""Single-chain mode with real processes (seed 000 Table 5's baseline): 2 server nodes with a
CTBC daemon each and no CMBC or miner; registrations, state reports, anchors, group assignments
and task plans are committed on CTBC by its committee, and tasks are sized from those plans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dualchain.chain.types import TxKind
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import blocks_up_to, chain_stub
from tests.integration.testbeds import running_testbed

EVENT_TIMEOUT_S = 150.0


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("single") / "testbed"
    with running_testbed(workdir, nodes=2, clients=4, mode="ddmlts", chains="single",
                         slowdowns=[1.0, 1.0, 4.0, 4.0], batches=10, deadline_s=20.0,
                         max_staleness=30) as tb:
        yield tb


def test_management_records_and_versions_share_one_committed_chain(testbed: Testbed) -> None:
    assert {p.role for p in testbed.procs} == {"ctbc", "node", "client"}
    testbed.wait_for(lambda p, e: e["event"] == "plan", EVENT_TIMEOUT_S)
    # Tasks sized by a plan: the slow client gets fewer batches than the fast one. A plan made
    # before every client's state report was final may size them alike, so this waits for the
    # latest tasks of the two to differ so.
    latest: dict[str, int] = {}

    def fast_gets_more(p, e) -> bool:
        if p.name in ("client-0", "client-2") and e["event"] == "task" \
                and e.get("batches") not in (None, testbed.config.batches):
            latest[p.name] = e["batches"]
        return latest.get("client-0", 0) > latest.get("client-2", 1 << 30)

    testbed.wait_for(fast_gets_more, EVENT_TIMEOUT_S, past=True)
    stub = chain_stub(testbed, "ctbc-0")
    height = stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height
    blocks = blocks_up_to(stub, height)
    kinds = {tx.kind for b in blocks for tx in b.transactions}
    assert {TxKind.CLIENT_REGISTER, TxKind.STATE_REPORT, TxKind.ANCHOR, TxKind.GROUP_ASSIGNMENT,
            TxKind.TASK_PLAN, TxKind.MODEL_VERSION} <= kinds
    other = blocks_up_to(chain_stub(testbed, "ctbc-1"), height)
    assert [b.hash for b in other] == [b.hash for b in blocks]
