"""The miner's reward account: ``--reward-account`` parsing and its check in the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualchain.chain.miner import MinerConfig, parse_account


def test_parse_account() -> None:
    assert parse_account("") == b""
    assert parse_account("ab" * 32) == b"\xab" * 32
    for bad in ("zz" * 32, "ab" * 31, "ab" * 33, "abc"):
        with pytest.raises(ValueError, match=r"^--reward-account must be 64 hex digits$"):
            parse_account(bad)


def test_config_refuses_an_account_of_the_wrong_length() -> None:
    assert MinerConfig("127.0.0.1:1", Path("k"), reward_account=b"\x01" * 32).reward_account
    with pytest.raises(ValueError, match=r"--reward-account must be 32 bytes"):
        MinerConfig("127.0.0.1:1", Path("k"), reward_account=b"\x01" * 5)
