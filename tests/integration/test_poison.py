"""A poisoning aggregator (seed 003 §V-E) across real processes: 2 server nodes (each with a
CTBC and a CMBC daemon), 1 miner and 4 clients on digits, in fedavg rounds.

Node 0 publishes ``w - rho q`` at versions 3 and 6, taking the turn whoever's it is. Its own CTBC
replica re-executes the aggregate and refuses the commit; the refusal becomes BAD_MODEL evidence;
once the evidence is applied CTBC excludes node 0 from committing (misbehaviour in the reputation
window), node 1 sees it in the chain's status and takes every turn, and training goes on. No
poisoned model ever becomes a version, and the second attempt is refused as excluded (no second
evidence). The aggregator takeover timeout stays at its default (20 s): node 1 goes on because
the chain excluded node 0, not because node 0 went quiet.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dualchain.apps.ctbc.fl import ModelCommit
from dualchain.apps.ctbc.payloads import Evidence, EvidenceKind
from dualchain.chain.identity import load_key_file
from dualchain.chain.types import TxKind
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import blocks_up_to, chain_stub
from tests.integration.testbeds import running_testbed

EVENT_TIMEOUT_S = 240.0
POISONED = (3, 6)


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("poison") / "testbed"
    with running_testbed(
            workdir, nodes=2, clients=4, miners=1, batches=10, mode="fedavg",
            cmbc_interval_s=1.0, finality_depth=3,
            node_attacks={"0": {"kind": "poison", "versions": list(POISONED),
                                "rho": 1.0}}) as tb:
        yield tb


def test_a_poisoning_node_commits_nothing_and_is_excluded_while_training_goes_on(
        testbed: Testbed) -> None:
    poisoner = load_key_file(Path(testbed.workdir) / "keys" / "node-0.key").id
    testbed.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= POISONED[1] + 2,
                     EVENT_TIMEOUT_S)
    attempts = [(p.name, e) for p, e in testbed.history if e["event"] == "adversary_commit"]
    assert {e["version"] for _, e in attempts} == set(POISONED), attempts
    assert {name for name, _ in attempts} == {"node-0"}
    poisoned_hashes = {e["hash"] for _, e in attempts}
    committed = {e["hash"] for e in testbed.versions.values()}
    assert not committed & poisoned_hashes, "a poisoned model became a version"
    assert set(range(1, POISONED[1] + 3)) <= set(testbed.versions), "versions went missing"

    # Node 1 saw node 0 excluded before the first poisoned version was filled, and not
    # readmitted before the second attempt.
    excluded = [e for p, e in testbed.history
                if p.name == "node-1" and e["event"] == "node_excluded"]
    assert excluded and excluded[0]["node"] == poisoner.hex(), excluded
    assert excluded[0]["version"] == POISONED[0] - 1
    assert not [e for p, e in testbed.history if e["event"] == "node_readmitted"]

    # On chain: evidence against node 0 for the first poisoned version only (the second attempt
    # was refused as excluded), and CTBC still excludes node 0.
    stub = chain_stub(testbed, "ctbc-1")
    blocks = blocks_up_to(stub, stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height)
    evidence_versions = set()
    for block in blocks:
        for tx in block.transactions:
            if tx.kind == TxKind.EVIDENCE:
                ev = Evidence.decode(tx.payload)
                assert ev.kind == EvidenceKind.BAD_MODEL
                offending, _ = ev.items
                assert offending.sender == poisoner
                evidence_versions.add(ModelCommit.decode(offending.payload).version)
    assert evidence_versions == {POISONED[0]}
    status = stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
    assert list(status.excluded) == [poisoner]
