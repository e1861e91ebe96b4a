"""Local DP settings of a testbed: flags and TOML keys, the client configs they become, compose's
testbed-init carrying them, and the launcher's per-client figures (privacy.json, report.json,
status)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dualchain.cli import build_parser, main
from dualchain.cli.compose import config_from_args
from dualchain.client.config import ClientConfig
from dualchain.deploy import compose, status
from dualchain.deploy.privacy import privacy_entry, privacy_report, write_privacy
from dualchain.deploy.up import Testbed, UpConfig, UpError


def test_dp_settings_become_each_clients_dp_block(tmp_path: Path) -> None:
    workdir = tmp_path / "tb"
    config = UpConfig(nodes=1, clients=2, rounds=3, workdir=str(workdir), dp_epsilon=4.0,
                      dp_mechanism="laplace", dp_schedule="adaptive", dp_clip=0.5)
    Testbed(config, progress=lambda line: None).write()
    for j in range(2):
        client = ClientConfig.load(workdir / f"client-{j}.json")
        assert client.dp is not None
        assert (client.dp.epsilon, client.dp.delta, client.dp.clip) == (4.0, 1e-5, 0.5)
        assert (client.dp.mechanism, client.dp.schedule, client.dp.tasks) == (
            "laplace", "adaptive", 3)  # one per version
        assert (client.dp.steps, client.dp.batch_size, client.dp.learning_rate) == (2, 0, 0.5)
        assert client.dp.ledger == workdir / f"client-{j}.privacy.json"
    plain = tmp_path / "plain"
    Testbed(UpConfig(nodes=1, clients=1, workdir=str(plain)), progress=lambda line: None).write()
    assert "dp" not in json.loads((plain / "client-0.json").read_text())


def test_flags_and_toml_set_dp_and_bad_values_are_one_line(tmp_path: Path, capsys) -> None:
    args = build_parser().parse_args(["up", "--dp-epsilon", "2", "--dp-schedule", "adaptive",
                                      "--dp-tasks", "7", "--dp-steps", "3",
                                      "--dp-learning-rate", "0.25"])
    assert (args.dp_epsilon, args.dp_schedule, args.dp_tasks) == (2.0, "adaptive", 7)
    assert (args.dp_steps, args.dp_learning_rate) == (3, 0.25)
    toml = tmp_path / "up.toml"
    toml.write_text('dp_epsilon = 8.0\ndp_delta = 1e-6\ndp_mechanism = "laplace"\n')
    config = UpConfig.from_toml(toml, {"dp_clip": 2.0})
    assert (config.dp_epsilon, config.dp_delta, config.dp_mechanism, config.dp_clip) == (
        8.0, 1e-6, "laplace", 2.0)
    for bad in ({"dp_epsilon": -1.0}, {"dp_epsilon": 8.0, "dp_delta": 1.5},
                {"dp_epsilon": 8.0, "dp_schedule": "sometimes"},
                {"dp_epsilon": 8.0, "dp_steps": 0}, {"dp_epsilon": 8.0, "dp_learning_rate": 0.0}):
        with pytest.raises(UpError) as err:
            UpConfig(**bad)
        assert "\n" not in str(err.value)
    assert main(["up", "--dp-epsilon", "-3", "--workdir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "epsilon must be" in err or "positive" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_compose_testbed_init_carries_the_dp_settings() -> None:
    config = UpConfig(nodes=2, clients=2, dp_epsilon=8.0, dp_schedule="adaptive", dp_steps=3,
                      dp_learning_rate=0.25)
    init = compose.compose_document(config, [], keys="init")["services"]["testbed-init"]
    argv = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in init["command"][1:]]
    assert config_from_args(build_parser().parse_args(argv)) == config


def test_the_launcher_keeps_each_clients_spent_epsilon(tmp_path: Path) -> None:
    summary = {"epsilon_spent": 3.5, "epsilon_budget": 8.0, "delta": 1e-5, "releases": 40,
               "noise_multiplier": 1.1, "mechanism": "gaussian", "schedule": "constant",
               "exhausted": False}
    clients = {"client-1": privacy_entry({"event": "report", "privacy": summary}),
               "client-0": privacy_entry({"event": "privacy_budget", **summary,
                                          "epsilon_spent": 7.9, "exhausted": True})}
    report = privacy_report(8.0, clients)
    assert report is not None and report["max_epsilon_spent"] == 7.9 and report["within_budget"]
    assert list(report["clients"]) == ["client-0", "client-1"]
    assert privacy_report(0.0, clients) is None
    # While the testbed runs, status shows privacy.json; afterwards report.json's section.
    (tmp_path / "state.json").write_text(json.dumps(
        {"running": False, "processes": [], "launcher": None}))
    write_privacy(tmp_path, clients)
    assert status.testbed_status(tmp_path)["privacy"]["client-0"]["epsilon_spent"] == 7.9
    (tmp_path / "report.json").write_text(json.dumps({"versions": [], "privacy": report}))
    assert status.testbed_status(tmp_path)["report"]["privacy"]["max_epsilon_spent"] == 7.9
