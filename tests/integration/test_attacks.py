"""Attacks and their detection across real processes: 2 server nodes (each with a CTBC and a CMBC
daemon), 1 miner and 6 client processes on digits, in fedavg rounds, with the cluster defense and
the PN watermark in the CTBC genesis.

Client 4 flips the sign of its update from version 1 on, client 5 is lazy from version 2 on (it
uploads a copy of an update the latest commit names, read from CTBC), and node 0 lies about its
discard set from version 3 on (it claims an honest update discarded). The honest node's commits
name the flipped update (``low_contribution``) and the copy (``copy``) in their discard sets, the
committee refuses every commit of the liar (BAD_MODEL evidence on CTBC), and training goes on.
After two discarded updates the flipper is excluded in the CTBC state of every replica: the nodes
refuse its uploads and rounds no longer wait for it, and a restarted replica and node still know
it. A re-admission signed with a node's key is refused; `dualchain readmit` with the operator's
key lifts the exclusion on every replica, and the flipper's next flipped update is discarded (an
offence again) instead of refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualchain.apps.ctbc.fl import ModelCommit, SignedUpdate
from dualchain.apps.ctbc.payloads import Evidence, EvidenceKind
from dualchain.chain.identity import load_key_file
from dualchain.chain.types import Block, TxKind
from dualchain.deploy.operator import OperatorError, readmit
from dualchain.deploy.status import testbed_status as status_of  # (not a test)
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import blocks_up_to, chain_stub
from tests.integration.testbeds import running_testbed

EVENT_TIMEOUT_S = 240.0
FLIPPER, LAZY, LIAR_FROM = 4, 5, 3


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("attacks") / "testbed"

    def prepare(tb: Testbed) -> None:
        for i in range(2):  # a short takeover after the liar's refused turn
            path = workdir / f"node-{i}.json"
            data = json.loads(path.read_text())
            data["aggregator_timeout_s"] = 6.0
            path.write_text(json.dumps(data))

    with running_testbed(
            workdir, prepare, nodes=2, clients=6, miners=1, batches=10, mode="fedavg",
            cmbc_interval_s=1.0, finality_depth=3, defense="cluster", watermark=True,
            client_attacks={str(FLIPPER): {"kind": "sign_flip", "from_version": 1},
                            str(LAZY): {"kind": "lazy", "from_version": 2}},
            node_attacks={"0": {"kind": "lie_discard", "mode": "drop_honest",
                                "from_version": LIAR_FROM}}) as tb:
        yield tb


def _blocks(tb: Testbed) -> list[Block]:
    stub = chain_stub(tb, "ctbc-1")
    return blocks_up_to(stub, stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height)


def _client_of(tb: Testbed, digest: bytes) -> bytes:
    chunks = chain_stub(tb, "ctbc-1").GetBlob(chain_pb2.GetBlobRequest(hash=digest), timeout=10)
    return SignedUpdate.decode(b"".join(c.data for c in chunks)).client


def _ids(tb: Testbed, role: str, count: int) -> list[bytes]:
    return [load_key_file(Path(tb.workdir) / "keys" / f"{role}-{i}.key").id
            for i in range(count)]


def test_attackers_are_discarded_by_the_honest_node_and_the_liar_is_refused(
        testbed: Testbed) -> None:
    clients = _ids(testbed, "client", 6)
    liar, honest_node = _ids(testbed, "node", 2)
    testbed.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= LIAR_FROM + 3,
                     EVENT_TIMEOUT_S)
    reasons: dict[bytes, set[str]] = {}
    evidence: list[ModelCommit] = []
    liar_hashes: set[str] = set()
    for block in _blocks(testbed):
        for tx in block.transactions:
            if tx.kind == TxKind.MODEL_VERSION and tx.sender == honest_node:
                for digest, reason in ModelCommit.decode(tx.payload).discarded:
                    reasons.setdefault(_client_of(testbed, digest), set()).add(reason)
            if tx.kind == TxKind.MODEL_VERSION and tx.sender == liar:
                commit = ModelCommit.decode(tx.payload)
                if commit.version >= LIAR_FROM:
                    liar_hashes.add(commit.model_hash.hex())
            if tx.kind == TxKind.EVIDENCE:
                ev = Evidence.decode(tx.payload)
                if ev.kind == EvidenceKind.BAD_MODEL:
                    offending, _ = ev.items
                    assert offending.sender == liar
                    evidence.append(ModelCommit.decode(offending.payload))
    assert reasons.get(clients[FLIPPER]) == {"low_contribution"}, reasons
    assert reasons.get(clients[LAZY]) == {"copy"}, reasons
    assert not set(reasons) - {clients[FLIPPER], clients[LAZY]}, "an honest client discarded"
    assert evidence, "no bad-model evidence against the lying node"
    lie = evidence[0]
    claimed = {_client_of(testbed, d) for d, _ in lie.discarded}
    assert claimed & set(clients[:FLIPPER]), "the lie names no honest client"
    # A refused commit may sit in a block (it used its nonce) but never becomes a version: no
    # version the nodes adopted has the hash of a lying commit.
    adopted = {e["hash"] for v, e in testbed.versions.items() if v >= LIAR_FROM}
    assert adopted and not adopted & liar_hashes


def test_a_repeat_offender_is_excluded_and_rounds_go_on_without_it(testbed: Testbed) -> None:
    flipper = _ids(testbed, "client", 6)[FLIPPER].hex()
    event = testbed.wait_for(lambda p, e: e["event"] == "offence" and e["client"] == flipper
                             and e["newly_excluded"], EVENT_TIMEOUT_S, past=True)
    assert event["offences"] == 2 and event["reputation"] == 1 / 3
    testbed.wait_for(lambda p, e: p.name == f"client-{FLIPPER}"
                     and e.get("outcome") == "refused:excluded", EVENT_TIMEOUT_S, past=True)
    after = max(testbed.versions)
    testbed.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= after + 2,
                     EVENT_TIMEOUT_S)


def _standing(tb: Testbed, client: bytes) -> list[chain_pb2.ClientStanding | None]:
    """The client's record in each CTBC replica's state."""
    rows = []
    for name in ("ctbc-0", "ctbc-1"):
        status = chain_stub(tb, name).GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
        rows.append(next((r for r in status.clients if r.client == client), None))
    return rows


def test_the_exclusion_is_chain_state_and_only_the_operator_lifts_it(testbed: Testbed) -> None:
    flipper = _ids(testbed, "client", 6)[FLIPPER]
    testbed.wait_for(lambda p, e: e["event"] == "offence" and e["client"] == flipper.hex()
                     and e["newly_excluded"], EVENT_TIMEOUT_S, past=True)
    assert all(r is not None and r.excluded and r.counted == 2 for r in _standing(
        testbed, flipper)), _standing(testbed, flipper)
    shown = {c["name"]: c for c in status_of(Path(testbed.workdir))["clients"]}
    assert shown[f"client-{FLIPPER}"]["excluded"], shown
    # A restart keeps it: the replica replays the chain, the node reads it before it serves.
    mark = len(testbed.history)
    for name in ("ctbc-1", "node-1"):
        testbed.kill(name)
        testbed.restart(name)
    assert any(p.name == "node-1" and e["event"] == "offence" and e["client"] == flipper.hex()
               and e["excluded"] for p, e in testbed.history[mark:])
    assert _standing(testbed, flipper)[1].excluded
    workdir = Path(testbed.workdir)
    with pytest.raises(OperatorError, match="not_an_operator"):  # a node is no operator
        readmit(workdir, f"client-{FLIPPER}", key=workdir / "keys" / "node-1.key")
    done = subprocess.run(
        [sys.executable, "-m", "dualchain.cli", "readmit", "--workdir", str(workdir),
         "--client", f"client-{FLIPPER}"], capture_output=True, text=True, timeout=120,
        check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["client"] == flipper.hex() and not result["excluded"]
    assert result["readmissions"] == 1
    testbed.wait_for(lambda p, e: e["event"] == "readmitted" and e["client"] == flipper.hex(),
                     EVENT_TIMEOUT_S, past=True)
    rows = _standing(testbed, flipper)
    assert all(r is not None and r.readmissions == 1 and r.offences >= 2 for r in rows), rows
    # Its uploads are taken again: the next flipped update is discarded, an offence from 0.
    event = testbed.wait_for(lambda p, e: e["event"] == "offence"
                             and e["client"] == flipper.hex(), EVENT_TIMEOUT_S)
    assert event["offences"] == 1 and event["reputation"] == 0.5
