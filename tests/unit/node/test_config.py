"""The server node's config: the join keys, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualchain.chain.daemon.config import ConfigError
from dualchain.node.config import NodeConfig

JOINER = "ab" * 32


def _config(**extra: object) -> dict:
    return {"key": "k", "listen": "127.0.0.1:1", "ctbc": "127.0.0.1:2", "cmbc": "127.0.0.1:3",
            "ctbc_genesis": "c.json", "cmbc_genesis": "m.json", "nodes": {"cd" * 32: "x:1"},
            **extra}


def test_a_node_admits_no_joiner_unless_its_config_names_it() -> None:
    assert NodeConfig.from_json(_config(), Path(".")).admit == frozenset()
    listed = NodeConfig.from_json(_config(admit=[JOINER], join=True), Path("."))
    assert listed.admit == {bytes.fromhex(JOINER)} and listed.join
    assert NodeConfig.from_json(_config(admit="any"), Path(".")).admit is None


@pytest.mark.parametrize("admit, message", [
    ("all", "list of hex node ids"), (["zz"], "hex node ids"), (["abcd"], "32-byte"),
    ([1], "list of hex node ids")])
def test_bad_admit_lists_are_clear_errors(admit: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeConfig.from_json(_config(admit=admit), Path("."))


def test_a_node_is_honest_unless_its_config_names_an_adversary_strategy() -> None:
    assert NodeConfig.from_json(_config(), Path(".")).adversary.kind == "none"
    tamper = NodeConfig.from_json(_config(adversary={"strategy": "tamper_model"}), Path("."))
    assert tamper.adversary.kind == "tamper_model"
    poison = NodeConfig.from_json(
        _config(adversary={"strategy": "poison", "rho": 0.5, "versions": [3]}), Path("."))
    assert poison.adversary.poisons(3) and not poison.adversary.poisons(4)


@pytest.mark.parametrize("adversary, message", [
    ({"strategy": "nonsense"}, "unknown node attack kind 'nonsense'; known: "),
    ({"strategy": "tamper_model", "offset": 0}, "non-zero"),
    ({"strategy": "tamper_model", "rate": 1}, "unknown parameter 'rate'"),
    ({"offset": 1}, "'strategy' is missing"),
    ("tamper_model", "must be a table")])
def test_bad_adversary_tables_are_one_line_config_errors(adversary: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        NodeConfig.from_json(_config(adversary=adversary), Path("."))
    assert "\n" not in str(caught.value)


def test_the_retired_test_flag_is_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match="unknown node config keys: test_tamper_model"):
        NodeConfig.from_json(_config(test_tamper_model=True), Path("."))
