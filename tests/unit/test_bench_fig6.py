"""The fig6 experiment: which clients go bad, what each testbed run is told, and the points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualchain.bench import fig6 as fig6_bench
from dualchain.bench import paper
from dualchain.deploy.up import Testbed, UpConfig


def test_the_last_clients_drop_out() -> None:
    assert fig6_bench.bad_client_attacks(10, 0, 2) == {}
    assert fig6_bench.bad_client_attacks(10, 2, 3) == {
        "8": {"kind": "dropout", "from_version": 3}, "9": {"kind": "dropout", "from_version": 3}}
    with pytest.raises(ValueError):
        fig6_bench.bad_client_attacks(4, 5, 2)


def test_the_nodes_are_told_how_long_a_fedavg_round_waits(tmp_path: Path) -> None:
    tb = fig6_bench._Testbed(UpConfig(nodes=2, clients=2, workdir=str(tmp_path / "t")), 4.5,
                             lambda line: None)
    tb.write()
    for i in range(2):
        data = json.loads((tmp_path / "t" / f"node-{i}.json").read_text())
        assert data["aggregation"]["fedavg_timeout_s"] == 4.5


def test_one_run_per_count_and_mode_with_the_same_wait(tmp_path: Path, monkeypatch) -> None:
    runs = []

    class FakeTestbed:
        def __init__(self, config: UpConfig, wait_s: float, progress) -> None:
            runs.append((config, wait_s))
            self.config = config

        def run(self) -> dict:
            bad = len(self.config.client_attacks)
            acc = 0.97 - 0.01 * bad - (0.01 if self.config.mode == "fedavg" else 0.0)
            return {"final_accuracy": acc, "time_to_final_s": 30.0,
                    "versions": [{"accuracy": acc, "round_s": r} for r in (None, 1.0, 3.0)]}

    monkeypatch.setattr(fig6_bench, "_Testbed", FakeTestbed)
    document = paper.run_experiment("fig6", UpConfig(clients=10, stragglers=0.2), tmp_path,
                                    lambda line: None,
                                    bad_clients=(0, 4), wait_s=6.0)
    assert [(c.mode, len(c.client_attacks), c.deadline_s, w) for c, w in runs] == [
        ("fedavg", 0, 6.0, 6.0), ("ddmlts", 0, 6.0, 6.0),
        ("fedavg", 4, 6.0, 6.0), ("ddmlts", 4, 6.0, 6.0)]
    assert document["stragglers"] == 0.0 and {c.stragglers for c, _ in runs} == {0.0}
    first = document["points"][0]
    assert {"bad_clients", "mode", "final_accuracy"} <= set(first)
    assert first["mean_round_s"] == 2.0 and first["best_accuracy"] == 0.96
    assert (tmp_path / "fig6.csv").read_text().startswith("bad_clients,mode,final_accuracy")
    assert (tmp_path / "fig6.png").stat().st_size > 0


def test_the_testbed_used_is_the_real_one() -> None:
    assert issubclass(fig6_bench._Testbed, Testbed)
