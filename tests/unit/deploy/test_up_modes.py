"""`dualchain up`'s modes: what each one writes into the genesis files and node configs, the
straggler emulation, and eq. 14 over the nodes' per-group figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualchain.apps.genesis import Genesis
from dualchain.bench.paper import plan_optimality, run_experiment
from dualchain.chain.identity import load_key_file
from dualchain.deploy.plan import UpConfig, UpError, client_slowdowns, state_changes
from dualchain.deploy.up import Testbed, c_gmax_of_groups


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
    assert c_gmax_of_groups({"0": 2.0, "1": 6.0}) == 4.0
    assert c_gmax_of_groups({}) == 0.0


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


def test_single_chain_points_nodes_and_clients_at_ctbc(tmp_path: Path) -> None:
    workdir = tmp_path / "single"
    tb = Testbed(UpConfig(nodes=2, clients=2, mode="ddmlts", chains="single",
                          workdir=str(workdir)), progress=lambda line: None)
    tb.write()
    ctbc = Genesis.load(workdir / "ctbc-genesis.json")
    assert ctbc.single_chain and ctbc.sched is not None
    assert not (workdir / "cmbc-genesis.json").exists()
    assert {p.role for p in tb.procs} == {"ctbc", "node", "client"}  # no CMBC, no miner
    node = json.loads((workdir / "node-1.json").read_text())
    assert node["cmbc"] == node["ctbc"] and node["cmbc_genesis"] == "ctbc-genesis.json"
    client = json.loads((workdir / "client-1.json").read_text())
    assert client["cmbc_chain_id"] == client["ctbc_chain_id"]


def test_joining_nodes_are_written_outside_the_genesis_and_started_late(tmp_path: Path) -> None:
    workdir = tmp_path / "join"
    tb = Testbed(UpConfig(nodes=2, clients=2, join_nodes=1, join_clients=2,
                          workdir=str(workdir)), progress=lambda line: None)
    tb.write()
    assert len(Genesis.load(workdir / "ctbc-genesis.json").validators) == 2
    late = sorted(p.name for p in tb.procs if p.late)
    assert late == ["client-2", "client-3", "cmbc-2", "ctbc-2", "node-2"]
    joiner = json.loads((workdir / "node-2.json").read_text())
    assert joiner["join"] and len(joiner["nodes"]) == 3
    genesis_node = json.loads((workdir / "node-0.json").read_text())
    assert not genesis_node["join"] and len(genesis_node["nodes"]) == 2
    assert json.loads((workdir / "client-3.json").read_text())["node"] == joiner["listen"]
    with pytest.raises(UpError):
        UpConfig(join_clients=2)


def test_state_changes_are_seeded_and_within_the_run() -> None:
    config = UpConfig(clients=4, state_change_s=40.0, duration_s=300.0, seed=3)
    changes = state_changes(config, 4)
    assert changes == state_changes(config, 4)
    flat = [c for per_client in changes for c in per_client]
    assert 4 <= len(flat) <= 15  # about one per 40 s
    assert all(0 < at < 300 and 1.0 <= slowdown <= config.straggler_slowdown
               for at, slowdown in flat)
    assert state_changes(UpConfig(clients=4), 4) == [[], [], [], []]


def test_table4_round_time_grows_with_the_share_of_small_tasks(tmp_path: Path) -> None:
    document = run_experiment("table4", UpConfig(clients=8), tmp_path, lambda line: None,
                              ratios=[0.0, 0.5, 1.0])
    rounds = [p["round_s"] for p in document["points"]]
    assert rounds == sorted(rounds) and rounds[0] < rounds[-1]
    assert [p["small_clients"] for p in document["points"]] == [0, 4, 8]
    assert document["points"][0]["over_ra0"] == 1.0
    assert (tmp_path / "table4.json").exists() and (tmp_path / "table4.png").exists()


def test_with_metrics_up_writes_a_scrape_config_of_every_process(tmp_path: Path) -> None:
    workdir = tmp_path / "metrics"
    tb = Testbed(UpConfig(nodes=2, clients=3, metrics=True, workdir=str(workdir)),
                 progress=lambda line: None)
    tb.write()
    tb._write_state(running=True)
    text = (workdir / "prometheus.yml").read_text()
    for proc in tb.procs:  # every process, with the labels the dashboard groups by
        target = tb._metrics_target(proc)
        assert target is not None and target.startswith("127.0.0.1:")
        assert target in text and f"process: {proc.name}" in text
    assert "role: miner" in text and "role: client" in text


def test_genesis_nodes_admit_exactly_the_planned_joiners(tmp_path: Path) -> None:
    workdir = tmp_path / "admit"
    Testbed(UpConfig(nodes=2, clients=2, join_nodes=1, workdir=str(workdir)),
            progress=lambda line: None).write()
    joiner = json.loads((workdir / "node-2.json").read_text())
    joiner_id = load_key_file(workdir / "keys" / "node-2.key").id.hex()
    for i in range(2):
        assert json.loads((workdir / f"node-{i}.json").read_text())["admit"] == [joiner_id]
    assert joiner["join"]
