"""`dualchain up`'s modes: what each one writes into the genesis files and node configs, the
straggler emulation, and eq. 14 over the nodes' per-group figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualchain.bench.paper import plan_optimality, run_experiment
from dualchain.chain.genesis import Genesis
from dualchain.deploy.up import Testbed, UpConfig, UpError, c_gmax, client_slowdowns


def test_stragglers_are_the_last_clients_and_the_rest_spread() -> None:
    slowdowns = client_slowdowns(UpConfig(clients=10, stragglers=0.2))
    assert slowdowns[-2:] == [8.0, 8.0]
    assert slowdowns[0] == 1.0 and slowdowns[7] == 2.0
    assert slowdowns[:8] == sorted(slowdowns[:8])
    assert client_slowdowns(UpConfig(clients=3, slowdowns=[2.0])) == [2.0, 1.0, 1.0]
    assert client_slowdowns(UpConfig(clients=4)) == [1.0, 1.333, 1.667, 2.0]


@pytest.mark.parametrize("bad", [{"mode": "sync"}, {"stragglers": 1.5},
                                 {"straggler_slowdown": 0.5}, {"sched_mode": "fifo"}])
def test_bad_mode_settings_are_refused(bad: dict) -> None:
    with pytest.raises(UpError):
        UpConfig(**bad)


@pytest.mark.parametrize("mode, rule, policy, sched", [
    ("fedasync", "fedasync", "window", False), ("fedavg", "fedavg", "window", False),
    ("ddmlts", "fedasync", "plan", True), ("semisync", "fedasync", "quorum", False)])
def test_each_mode_writes_its_rule_policy_and_sched(tmp_path: Path, mode: str, rule: str,
                                                    policy: str, sched: bool) -> None:
    workdir = tmp_path / mode
    Testbed(UpConfig(nodes=1, clients=2, mode=mode, workdir=str(workdir), sched_alpha=1.5,
                     quorum=0.75), progress=lambda line: None).write()
    assert Genesis.load(workdir / "ctbc-genesis.json").fl.mode == rule
    cmbc = Genesis.load(workdir / "cmbc-genesis.json")
    assert (cmbc.sched is not None) == sched
    if sched:
        assert cmbc.sched.alpha == 1.5
    aggregation = json.loads((workdir / "node-0.json").read_text())["aggregation"]
    assert aggregation["policy"] == policy and aggregation["quorum"] == 0.75


def test_c_gmax_is_the_mean_of_the_groups_longest_completions() -> None:
    assert c_gmax({"0": 2.0, "1": 6.0}) == 4.0
    assert c_gmax({}) == 0.0


def test_plan_optimality_compares_each_group_with_olar() -> None:
    plans = [{"groups": [{"planned_s": 2.0, "olar_s": 2.0, "equal_s": 3.0},
                         {"planned_s": 2.2, "olar_s": 2.0, "equal_s": 2.0}]}]
    summary = plan_optimality(plans)
    assert summary["mean_planned_over_olar"] == 1.05
    assert summary["max_planned_over_olar"] == 1.1
    assert summary["mean_equal_over_olar"] == 1.25


def test_an_unknown_experiment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="table3"):
        run_experiment("table9", UpConfig(), tmp_path, lambda line: None)
