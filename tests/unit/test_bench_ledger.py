"""`bench ledger` measures what it names (structure only: speed is never asserted)."""

from __future__ import annotations

from dualchain.bench.ledger import ledger_benchmark
from dualchain.chain.mldsa import Algorithm


def test_ledger_benchmark_reports_every_figure(tmp_path) -> None:
    result = ledger_benchmark(txs=40, block_txs=10, algorithm=Algorithm.ML_DSA_44,
                              workers=2, directory=tmp_path)
    assert result["txs"] == 40
    assert result["blocks"] == 4
    for key in ("tx_validate_per_s_one_core", "block_validate_tx_per_s", "append_blocks_per_s",
                "append_tx_per_s", "merkle_roots_per_s", "merkle_proofs_generated_per_s",
                "merkle_proofs_verified_per_s"):
        assert result[key] > 0, key
    assert list(tmp_path.iterdir()) == []  # the temporary store is removed
