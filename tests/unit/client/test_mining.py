"""A client that also mines: its ``mining`` config block, the duty theta gives its miner, the
miner's command line, the miner process it owns (real, started through the supervisor), and
what `dualchain up --client-mining` writes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from dualchain.apps.genesis import Genesis
from dualchain.chain.daemon.config import ConfigError
from dualchain.chain.identity import Signer, load_key_file
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.rpc import TlsFiles
from dualchain.client.config import ClientConfig
from dualchain.client.mining import (
    ClientMiner,
    MiningSettings,
    MiningTurns,
    miner_argv,
    round_split,
)
from dualchain.deploy.plan import UpConfig, UpError
from dualchain.deploy.up import Testbed
from tests.unit.client.test_config import base_config  # a valid client config

ACCOUNT = b"\x2a" * 32


@pytest.mark.parametrize("theta, duty", [(0.2, 1 / 1.2), (1.0, 0.5), (4.0, 0.2)])
def test_the_miner_hashes_one_over_one_plus_theta_of_the_time(theta: float, duty: float) -> None:
    plan = round_split(theta)
    assert plan.epochs == 1 and plan.train_seconds == pytest.approx(theta)
    assert plan.mining_duty == pytest.approx(duty)
    assert MiningSettings(theta, Path("k")).duty == pytest.approx(duty, abs=1e-6)


def test_settings_parse_relative_to_the_config(tmp_path: Path) -> None:
    settings = MiningSettings.from_json({"theta": 2, "key": "keys/m.key", "workers": 2,
                                         "log": "logs/m.log"}, tmp_path)
    assert settings == MiningSettings(2.0, tmp_path / "keys/m.key", 2, tmp_path / "logs/m.log")
    config = ClientConfig.from_json({**base_config(), "mining": {"theta": 0.5, "key": "m.key"}},
                                    tmp_path)
    assert config.mining == MiningSettings(0.5, tmp_path / "m.key")
    assert ClientConfig.from_json(base_config(), tmp_path).mining is None


@pytest.mark.parametrize("block, reason", [
    ([], "must be an object"),
    ({"theta": 1, "key": "k", "speed": 2}, "unknown mining keys: speed"),
    ({"key": "k"}, "'theta' must be a positive number, got None"),
    ({"theta": 0, "key": "k"}, "'theta' must be a positive number, got 0"),
    ({"theta": float("inf"), "key": "k"}, "'theta' must be a positive number"),
    ({"theta": True, "key": "k"}, "'theta' must be a positive number"),
    ({"theta": 1}, "mining needs 'key'"),
    ({"theta": 1, "key": "k", "workers": 0}, "'workers' must be an integer in 1..64"),
    ({"theta": 1, "key": "k", "log": ""}, "'log' must be a non-empty string or null"),
])
def test_bad_mining_blocks_are_refused(tmp_path: Path, block: object, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        ClientConfig.from_json({**base_config(), "mining": block}, tmp_path)
    assert reason in info.value.reason and "\n" not in info.value.reason


def test_the_miner_command_names_the_client_account_full_duty_and_tls(tmp_path: Path) -> None:
    """Full duty: the split is kept in time by ``MiningTurns``, not by the miner's duty."""
    settings = MiningSettings(1.0, tmp_path / "m.key", 2)
    argv = miner_argv(settings, "127.0.0.1:7100", ACCOUNT, None)
    assert argv[:4] == [sys.executable, "-m", "dualchain.cli", "miner"]
    flags = dict(zip(argv[4::2], argv[5::2], strict=False))
    assert flags == {"--cmbc": "127.0.0.1:7100", "--key": str(tmp_path / "m.key"),
                     "--reward-account": ACCOUNT.hex(), "--workers": "2", "--duty": "1",
                     "--log-level": "WARNING"}
    tls = TlsFiles(tmp_path / "ca.pem", tmp_path / "c.pem", tmp_path / "c.key")
    assert miner_argv(settings, "h:1", ACCOUNT, tls)[-6:] == [
        "--tls-ca", str(tls.ca), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]


def test_the_client_starts_and_stops_a_real_miner_process(tmp_path: Path) -> None:
    """No CMBC daemon listens: the miner retries, and stopping it gives its totals."""
    Signer.generate(Algorithm.ML_DSA_44).save(tmp_path / "m.key")
    settings = MiningSettings(4.0, tmp_path / "m.key", log=tmp_path / "logs" / "m.log")
    miner = ClientMiner(settings, "127.0.0.1:9", ACCOUNT, None, tmp_path)
    miner.start()
    try:
        assert miner.pid is not None and miner.child is not None and miner.child.alive()
        # Running (its signal handlers set) once it has asked the absent daemon for a template.
        deadline = time.monotonic() + 60
        while "no template from 127.0.0.1:9" not in settings.log.read_text():
            assert time.monotonic() < deadline and miner.child.alive(), miner.child.log_tail()
            time.sleep(0.1)
        # Paused while the client trains: the whole group (miner and workers) stops.
        miner.pause()
        _await_state(miner.pid, "T")
        miner.resume()
        _await_state(miner.pid, "RS")
        miner.pause()  # stop() must wake a paused miner, or SIGTERM would wait forever
    finally:
        totals = miner.stop()
    assert totals["theta"] == 4.0 and totals["duty"] == 0.2 and totals["exit_code"] == 0
    assert totals["blocks"] == 0 and not miner.child.alive()
    assert (tmp_path / "logs" / "m.log").exists()


def test_up_writes_each_client_a_miner_key_and_mining_block(tmp_path: Path) -> None:
    workdir = tmp_path / "mining"
    tb = Testbed(UpConfig(nodes=1, clients=2, miners=0, client_mining=0.25,
                          workdir=str(workdir)), progress=lambda line: None)
    tb.write()
    assert [p.name for p in tb.procs if p.role == "miner"] == []  # only the clients mine
    for j in range(2):
        block = json.loads((workdir / f"client-{j}.json").read_text())["mining"]
        assert block == {"theta": 0.25, "key": f"keys/client-{j}-miner.key", "workers": 1,
                         "log": f"logs/client-{j}-miner.log"}
        miner = load_key_file(workdir / block["key"])
        assert miner.id != load_key_file(workdir / f"keys/client-{j}.key").id
    assert Genesis.load(workdir / "cmbc-genesis.json").pow.block_reward > 0


@pytest.mark.parametrize("bad, reason", [
    ({"client_mining": -1.0}, "client_mining (theta) must be a finite number >= 0"),
    ({"client_mining": float("nan")}, "client_mining (theta) must be a finite number >= 0"),
    ({"client_mining": 1.0, "chains": "single", "miners": 0}, "needs a CMBC"),
    ({"miners": 0}, "CMBC needs at least one miner"),
])
def test_bad_client_mining_settings_are_refused(bad: dict, reason: str) -> None:
    with pytest.raises(UpError) as info:
        UpConfig(**bad)
    assert reason in str(info.value)


def test_the_flag_and_the_toml_key_set_client_mining(tmp_path: Path, capsys) -> None:
    from dualchain.cli import build_parser, main

    assert build_parser().parse_args(["up", "--client-mining", "0.5"]).client_mining == 0.5
    toml = tmp_path / "up.toml"
    toml.write_text("client_mining = 0.8\nminers = 0\n")
    config = UpConfig.from_toml(toml, {})
    assert (config.client_mining, config.miners) == (0.8, 0)
    assert main(["up", "--client-mining", "-1", "--workdir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "client_mining (theta) must be a finite number >= 0" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def _await_state(pid: int, states: str) -> None:
    """Polls /proc until the process is in one of ``states`` (T: stopped; R, S: running)."""
    deadline = time.monotonic() + 10
    while True:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in states:
            return
        assert time.monotonic() < deadline, f"process {pid} stayed in state {state}"
        time.sleep(0.01)


class _Miner:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


@pytest.mark.parametrize("theta, turn", [(0.5, 4.0), (1.0, 2.0), (4.0, 0.5)])
def test_a_mining_turn_lasts_the_training_time_over_theta(theta: float, turn: float) -> None:
    """Seed 004's split: train t_T with the miner stopped, then mine t_B = t_T / theta."""
    now = [100.0]
    miner = _Miner()
    turns = MiningTurns(miner, theta, clock=lambda: now[0])
    turns.training()
    assert miner.calls == ["pause"]
    now[0] += 2.0  # a task trained for 2 s
    turns.trained()
    assert miner.calls == ["pause", "resume"]
    assert turns.totals() == {"training_s": 2.0, "mining_s": turn}
    now[0] += turn  # the turn is over: the next task is asked for at once
    asyncio.run(asyncio.wait_for(turns.mining_turn(), 1.0))

