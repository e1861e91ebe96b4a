"""`bench paper --experiment dp`: the document's shape, its files, and the budget kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dualchain.bench.dp import run_dp


def test_dp_points_files_and_budget(tmp_path: Path) -> None:
    document = run_dp(tmp_path, seeds=1, epsilons=(8.0, math.inf))
    points = document["points"]
    assert [(p["epsilon"], p["schedule"]) for p in points] == [
        (8.0, "constant"), (8.0, "adaptive"), ("inf", "none")]
    for p in points:
        assert {"epsilon", "schedule", "final_accuracy", "accounted_epsilon"} <= set(p)
        assert 0 <= p["final_accuracy"] <= 1
    assert points[-1]["accounted_epsilon"] is None
    assert all(0 < p["accounted_epsilon"] <= 8.0 for p in points[:2])
    assert document["target"]["within_budget"]
    assert json.loads((tmp_path / "dp.json").read_text())["points"][0]["epsilon"] == 8.0
    assert (tmp_path / "dp.csv").read_text().startswith("epsilon,schedule,final_accuracy")
    assert (tmp_path / "dp.png").stat().st_size > 0
