"""The miner's pieces that need no daemon: its settings and one worker's chunk of nonces (the
miner as a process is exercised by tests/integration/test_cmbc*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualchain.chain.consensus.pow import MAX_TARGET, target_to_bytes
from dualchain.chain.miner import MinerConfig, _search


@pytest.mark.parametrize(
    ("change", "message"),
    [({"workers": 0}, "--workers"), ({"duty": 0.0}, "--duty"), ({"duty": 1.5}, "--duty"),
     ({"chunk": 0}, "chunk"), ({"refresh_s": 0.0}, "refresh")],
)
def test_bad_settings_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MinerConfig(cmbc="127.0.0.1:1", key=Path("k"), **change)


def test_a_chunk_reports_its_nonce_and_the_hashes_it_took() -> None:
    nonce, hashed = _search(b"prefix", target_to_bytes(MAX_TARGET), 1000, 50, 1.0)
    assert (nonce, hashed) == (1000, 1)  # every hash meets the largest target
    nonce, hashed = _search(b"prefix", target_to_bytes(MAX_TARGET >> 6), 0, 100_000, 1.0)
    assert nonce is not None and hashed == nonce + 1
    assert _search(b"prefix", bytes(32), 7, 300, 1.0) == (None, 300)


def test_a_partial_duty_pauses_after_hashing(monkeypatch) -> None:
    import dualchain.chain.miner as miner

    slept: list[float] = []
    monkeypatch.setattr(miner.time, "sleep", slept.append)
    miner._search(b"prefix", bytes(32), 0, 2000, 0.25)
    assert len(slept) == 1 and slept[0] > 0  # three times the hashing time
    miner._search(b"prefix", bytes(32), 0, 2000, 1.0)
    assert len(slept) == 1  # full duty never sleeps
