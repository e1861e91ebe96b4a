"""The client's JSON config: strict keys, clear errors, paths relative to the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualchain.cli import main
from dualchain.client.config import ClientConfig, ConfigError

NODE_ID = "ab" * 32


def base_config(**changes) -> dict:
    data = {
        "key": "keys/client-0.key", "node": "127.0.0.1:7300", "node_id": NODE_ID,
        "cmbc": "127.0.0.1:7100", "ctbc_chain_id": "ctbc-local", "cmbc_chain_id": "cmbc-local",
        "dataset": "digits", "data_dir": None,
        "partition": {"scheme": "iid", "clients": 4, "index": 1, "seed": 3, "alpha": 0.5},
    }
    data.update(changes)
    return data


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "client.json"
    path.write_text(json.dumps(data))
    return path


def test_a_minimal_config_gets_defaults_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    config = ClientConfig.load(write(tmp_path, base_config(data_dir="data")))
    assert config.key == (tmp_path / "keys" / "client-0.key").resolve()
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.node_id == bytes.fromhex(NODE_ID)
    assert config.partition.index == 1 and config.partition.seed == 3
    assert (config.seed, config.threads, config.slowdown, config.drop_prob) == (0, 1, 1.0, 0.0)
    assert config.offline == () and config.report_every == 1 and config.max_tasks is None
    assert config.max_update_norm == 100.0 and config.max_buffered == 16


def test_every_key_parses(tmp_path: Path) -> None:
    config = ClientConfig.load(write(tmp_path, base_config(
        seed=7, threads=2, slowdown=2.5, drop_prob=0.25, offline=[[30, 60], [5, 10.5]],
        report_every=3, max_tasks=10, label="phone-1", max_update_norm=50, max_buffered=4)))
    assert config.offline == ((5.0, 10.5), (30.0, 60.0))
    assert (config.slowdown, config.drop_prob, config.max_tasks) == (2.5, 0.25, 10)
    assert (config.label, config.max_update_norm, config.max_buffered) == ("phone-1", 50.0, 4)


@pytest.mark.parametrize(("changes", "message"), [
    ({"colour": "blue"}, "unknown config keys: colour"),
    ({"node_id": "abc"}, "64 hex digits"),
    ({"node_id": "zz" * 32}, "not hex"),
    ({"node": "localhost"}, "not host:port"),
    ({"cmbc": "h:99999"}, "not host:port"),
    ({"dataset": "imagenet"}, "dataset 'imagenet' is not one of"),
    ({"slowdown": 0.5}, "slowdown must be a number >= 1.0"),
    ({"drop_prob": 1.5}, "drop_prob must be a number in [0, 1]"),
    ({"threads": 0}, "'threads' must be at least 1"),
    ({"threads": True}, "'threads' must be an integer"),
    ({"report_every": 1.5}, "'report_every' must be an integer"),
    ({"max_tasks": 0}, "'max_tasks' must be at least 1"),
    ({"offline": [[10, 5]]}, "needs 0 <= start < end"),
    ({"offline": [[1, 2, 3]]}, "offline window 0 must be [start_s, end_s]"),
    ({"offline": {"a": 1}}, "must be a list"),
    ({"slowdown_changes": [[10, 0.5]]}, "slowdown change 0 must be [at_s >= 0, slowdown >= 1]"),
    ({"slowdown_changes": 3}, "'slowdown_changes' must be a list"),
    ({"label": "x" * 300}, "'label' must be a string of at most 256"),
    ({"backend": "nope"}, "backend 'nope' is not one of"),
    ({"max_update_norm": 0}, "'max_update_norm' must be positive"),
    ({"data_dir": ""}, "'data_dir' must be a non-empty string or null"),
    ({"partition": []}, "'partition' must be an object"),
    ({"partition": {"scheme": "iid", "clients": 4, "index": 4}}, "index 4 is not below"),
    ({"partition": {"scheme": "random", "clients": 4, "index": 0}}, "scheme 'random'"),
    ({"partition": {"scheme": "iid", "clients": 4}}, "partition needs 'index'"),
    ({"partition": {"scheme": "iid", "clients": 4, "index": 0, "beta": 1}},
     "unknown partition keys: beta"),
    ({"partition": {"scheme": "dirichlet", "clients": 4, "index": 0, "alpha": 0}},
     "alpha must be positive"),
    ({"dataset": "mine.data:load"}, "a dataset plug-in needs a model plug-in"),
    ({"dataset": "mine data:load", "model": "m:f"}, "not an import path of the form"),
    ({"model": "mine.model"}, "model 'mine.model': not an import path"),
])
def test_bad_values_are_clear_errors(tmp_path: Path, changes: dict, message: str) -> None:
    path = write(tmp_path, base_config(**changes))
    with pytest.raises(ConfigError) as info:
        ClientConfig.load(path)
    assert message in info.value.reason
    assert str(path) in info.value.reason


def test_missing_keys_are_named(tmp_path: Path) -> None:
    data = base_config()
    del data["cmbc"], data["partition"]
    with pytest.raises(ConfigError, match="missing config keys: cmbc, partition"):
        ClientConfig.load(write(tmp_path, data))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ClientConfig.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ClientConfig.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        ClientConfig.load(write(tmp_path, [1, 2]))


def test_overrides_are_checked_too(tmp_path: Path) -> None:
    config = ClientConfig.load(write(tmp_path, base_config()))
    assert config.with_overrides(slowdown=3, drop_prob=0.5).slowdown == 3.0
    assert config.with_overrides() is config
    with pytest.raises(ConfigError, match="slowdown"):
        config.with_overrides(slowdown=0.9)
    with pytest.raises(ConfigError, match="drop_prob"):
        config.with_overrides(drop_prob=-0.1)


def test_cli_reports_a_bad_config_and_exits_2(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, base_config(colour="blue"))
    assert main(["client", "--config", str(path)]) == 2
    assert "unknown config keys: colour" in capsys.readouterr().err


def test_cli_reports_a_missing_key_file(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, base_config())
    assert main(["client", "--config", str(path), "--slowdown", "2"]) == 2
    assert "client-0.key does not exist" in capsys.readouterr().err


def test_a_plugin_dataset_and_model_are_import_paths(tmp_path: Path) -> None:
    config = ClientConfig.load(write(tmp_path, base_config(dataset="mine.data:load",
                                                           model="mine.model:make")))
    assert (config.dataset, config.model) == ("mine.data:load", "mine.model:make")
    assert ClientConfig.load(write(tmp_path, base_config())).model == ""
