"""The ledger demo runs every part end to end and reports honestly."""

from __future__ import annotations

import json
from pathlib import Path

from dualchain.bench.demo import DemoConfig, run_demo
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.store import BlockStore


def test_demo_commits_everything_refuses_the_bad_and_leaves_a_consistent_store(
    tmp_path: Path,
) -> None:
    out = tmp_path / "demo"
    report = run_demo(DemoConfig(out=out, senders=3, txs_per_sender=7, block_txs=5,
                                 algorithm=Algorithm.ML_DSA_44, ctbc_nodes=0))
    assert report["consistent"] is True
    assert report["ctbc"] is None  # part 2 runs real processes: tests/integration covers CTBC
    assert report["transactions_committed"] == 21
    assert report["blocks"] == 5  # ceil(21 / 5)
    assert report["refused_by_code"] == {
        "bad_signature": 1, "wrong_chain": 1, "stale_nonce": 1, "future_timestamp": 1,
    }
    assert report["merkle_proof"]["verified"] is True
    assert json.loads((out / "report.json").read_text()) == report
    with BlockStore(out / "chain.sqlite") as store:
        assert store.height() == 5
        assert store.check_consistency() == []
        assert sum(len(store.canonical_block(h).transactions) for h in range(6)) == 21
