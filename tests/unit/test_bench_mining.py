"""`bench paper --experiment mining`: the plans follow K (tau t_T + t_B) <= T_sum over the
measured times, real blocks are mined at the difficulty t_B implies, and the files are written;
bad settings are refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualchain.bench.mining import mine_blocks, run_mining
from dualchain.cli import main


def test_a_small_sweep_plans_within_the_budget_and_writes_its_files(tmp_path: Path) -> None:
    document = run_mining(tmp_path, thetas=(1.0, 2.0), budget_blocks=5)
    measured = document["measured"]
    t_train = measured["t_T_s"]
    assert t_train > 0 and measured["hash_rate_hs"] > 0
    for theta in ("1", "2"):
        block = measured["blocks"][theta]
        assert block["t_B_s"] == pytest.approx(t_train / float(theta), rel=1e-3, abs=1e-6)
        assert block["blocks_mined"] == 10 and block["mined_mean_s"] > 0
    points = document["points"]
    # theta 1: t_B = t_T, T = 5 t_B: K = 1 (4 epochs), K = 2 (1 epoch); theta 2: t_T = 2 t_B.
    assert [(p["theta"], p["rounds"], p["epochs"]) for p in points] == [
        (1.0, 1, 4), (1.0, 2, 1), (2.0, 1, 2)]
    for p in points:
        t_block = t_train / p["theta"]
        spent = p["rounds"] * (p["epochs"] * t_train + t_block)
        # (the document's times are rounded to 1 us)
        assert spent <= 5 * t_block * 1.01 + 1e-3 and p["train_loss"] > 0
        assert p["budget_s"] == pytest.approx(5 * t_block, rel=0.01, abs=1e-3)
        assert p["mining_share"] == pytest.approx(t_block / (p["epochs"] * t_train + t_block),
                                                  abs=1e-4)
    assert document["best"]["1"]["rounds"] in (1, 2)
    assert json.loads((tmp_path / "mining.json").read_text())["benchmark"] == "paper/mining"
    assert (tmp_path / "mining.csv").read_text().startswith("theta,rounds,epochs")
    assert (tmp_path / "mining.png").stat().st_size > 0


def test_blocks_are_real_searches() -> None:
    assert len(mine_blocks(64, 3, seed=1)) == 3


@pytest.mark.parametrize("flags", [["--thetas", "0.5,x"], ["--thetas", "0"],
                                   ["--thetas", "-1"], ["--budget-blocks", "1"]])
def test_bad_settings_are_refused(tmp_path: Path, capsys, flags: list[str]) -> None:
    code = main(["bench", "paper", "--experiment", "mining", "--out", str(tmp_path), *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("dualchain bench paper: --thetas") and err.count("\n") == 1
    assert not (tmp_path / "mining.json").exists()
