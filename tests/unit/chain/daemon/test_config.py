"""Daemon config files: a clear ConfigError naming the problem, never a half-read config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualchain.adversary.replica import HONEST, EquivocatingReplica
from dualchain.chain.daemon.config import ConfigError, DaemonConfig
from dualchain.chain.uploads import QuotaLimits
from dualchain.cli import main

GOOD = {"kind": "ctbc", "genesis": "genesis.json", "key": "keys/node-0.key",
        "data_dir": "data/node-0", "listen": "127.0.0.1:7000", "peers": ["127.0.0.1:7001"]}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "node.json"
    path.write_text(json.dumps(data))
    return path


def test_a_good_config_resolves_paths_against_its_own_directory(tmp_path: Path) -> None:
    config = DaemonConfig.load(write(tmp_path, GOOD))
    assert config.genesis == (tmp_path / "genesis.json").resolve()
    assert config.data_dir == (tmp_path / "data/node-0").resolve()
    assert config.peers == ("127.0.0.1:7001",)
    assert config.metrics_port == 0 and config.adversary == HONEST
    assert config.max_pending_wait_ms is None  # the chain kind's default
    assert DaemonConfig.load(write(tmp_path, {**GOOD, "max_pending_wait_ms": 0})
                             ).max_pending_wait_ms == 0
    assert config.blob_quota == QuotaLimits()  # 4 GiB per uploader, 16 GiB in all
    quota = DaemonConfig.load(write(tmp_path, {**GOOD, "blob_quota_per_uploader_bytes": 10,
                                               "blob_quota_total_bytes": 20})).blob_quota
    assert (quota.per_uploader_bytes, quota.total_bytes) == (10, 20)
    assert config.linear_votes  # votes go through collectors unless turned off
    assert not DaemonConfig.load(write(tmp_path, {**GOOD, "linear_votes": False})).linear_votes
    byzantine = {**GOOD, "adversary": {"strategy": "equivocate"}}
    assert DaemonConfig.load(write(tmp_path, byzantine)).adversary == EquivocatingReplica()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "blue"}, "unknown config keys: colour"),
        ({"kind": "pow"}, "kind 'pow'"),
        ({"listen": "localhost"}, "not host:port"),
        ({"peers": ["127.0.0.1:99999"]}, "not host:port"),
        ({"peers": "127.0.0.1:7001"}, "'peers' must be a list"),
        ({"metrics_port": -1}, "metrics_port"),
        ({"backend": "openssl"}, "backend 'openssl'"),
        ({"test_byzantine": "equivocate"}, "unknown config keys: test_byzantine"),
        ({"adversary": {"strategy": "lie"}}, "unknown replica strategy kind 'lie'"),
        ({"adversary": "equivocate"}, "adversary must be a table"),
        ({"adversary": {}}, "'strategy' is missing"),
        ({"adversary": {"strategy": "equivocate", "rate": 1}}, "unknown parameter 'rate'"),
        ({"kind": "cmbc", "adversary": {"strategy": "equivocate"}}, "for a ctbc replica"),
        ({"key": ""}, "'key' must be a non-empty string"),
        ({"max_pending_wait_ms": -1}, "'max_pending_wait_ms' must be milliseconds >= 0"),
        ({"max_pending_wait_ms": "1s"}, "'max_pending_wait_ms' must be milliseconds >= 0"),
        ({"blob_quota_total_bytes": 0}, "'blob_quota_total_bytes' must be a number of bytes"),
        ({"blob_quota_per_uploader_bytes": True}, "'blob_quota_per_uploader_bytes' must be"),
        ({"blob_quota_per_uploader_bytes": 2, "blob_quota_total_bytes": 1},
         "must not exceed 'blob_quota_total_bytes'"),
        ({"linear_votes": "yes"}, "'linear_votes' must be true or false"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(tmp_path: Path, change, message) -> None:
    with pytest.raises(ConfigError, match=message):
        DaemonConfig.load(write(tmp_path, {**GOOD, **change}))


def test_unreadable_config_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        DaemonConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        DaemonConfig.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="JSON object"):
        DaemonConfig.load(write(tmp_path, [1, 2]))


def test_the_cli_refuses_a_config_of_another_kind(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, {**GOOD, "kind": "cmbc"})
    assert main(["chain", "--kind", "ctbc", "--config", str(path)]) == 2
    assert "cmbc config" in capsys.readouterr().err
    assert main(["chain", "--kind", "ctbc", "--config", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
