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
