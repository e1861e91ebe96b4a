"""Data poisoning, free riding and dropping out across real processes: 2 server nodes, 1 miner
and 6 client processes on digits in fedavg rounds, with the cluster defense and the PN watermark.

Client 3 trains on flipped labels from version 1 on, client 4 is a free rider (it uploads zeros,
which carry no watermark) and client 5 drops out from version 1 on. The committed discard sets
name the free rider's uploads (``unmarked``) and the label flipper's (``low_contribution``), and
rounds go on without the dropped-out client (the fedavg timeout).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualchain.apps.ctbc.fl import ModelCommit, SignedUpdate
from dualchain.chain.identity import load_key_file
from dualchain.chain.types import TxKind
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import blocks_up_to, chain_stub
from tests.integration.testbeds import running_testbed

EVENT_TIMEOUT_S = 240.0
FLIPPER, FREE_RIDER, DROPOUT = 3, 4, 5


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("attacks-data") / "testbed"

    def prepare(tb: Testbed) -> None:
        for i in range(2):  # a round gives up on the dropped-out client after 4 s
            path = workdir / f"node-{i}.json"
            data = json.loads(path.read_text())
            data["aggregation"]["fedavg_timeout_s"] = 4.0
            path.write_text(json.dumps(data))

    with running_testbed(
            workdir, prepare, nodes=2, clients=6, miners=1, batches=10, mode="fedavg",
            cmbc_interval_s=1.0, finality_depth=3, defense="cluster", watermark=True,
            defense_params={"exclude_after": 0},  # keep them in: each round shows detection
            client_attacks={str(FLIPPER): {"kind": "label_flip", "from_version": 1},
                            str(FREE_RIDER): {"kind": "free_rider"},
                            str(DROPOUT): {"kind": "dropout", "from_version": 1}}) as tb:
        yield tb


def test_poisoned_and_free_riding_updates_are_discarded_and_rounds_go_on(
        testbed: Testbed) -> None:
    clients = [load_key_file(Path(testbed.workdir) / "keys" / f"client-{j}.key").id
               for j in range(6)]
    testbed.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= 5,
                     EVENT_TIMEOUT_S)
    stub = chain_stub(testbed, "ctbc-1")
    height = stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height
    reasons: dict[bytes, list[str]] = {}
    for block in blocks_up_to(stub, height):
        for tx in block.transactions:
            if tx.kind != TxKind.MODEL_VERSION:
                continue
            for digest, reason in ModelCommit.decode(tx.payload).discarded:
                chunks = stub.GetBlob(chain_pb2.GetBlobRequest(hash=digest), timeout=10)
                client = SignedUpdate.decode(b"".join(c.data for c in chunks)).client
                reasons.setdefault(client, []).append(reason)
    assert set(reasons.get(clients[FREE_RIDER], [])) == {"unmarked"}, reasons
    assert "low_contribution" in reasons.get(clients[FLIPPER], []), reasons
    assert not set(reasons) & set(clients[:FLIPPER]), "an honest client discarded"
    testbed.wait_for(lambda p, e: p.name == f"client-{DROPOUT}"
                     and e.get("outcome") == "skipped", EVENT_TIMEOUT_S, past=True)
