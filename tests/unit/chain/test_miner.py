"""The miner's pieces that need no daemon: its settings and one worker's chunk of nonces (the
miner as a process is exercised by tests/integration/test_cmbc*.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dualchain.chain.consensus.pow import MAX_TARGET, target_to_bytes
from dualchain.chain.identity import Signer
from dualchain.chain.miner import MAX_PAUSE_S, Miner, MinerConfig, _search, duty_pause
from dualchain.chain.mldsa import Algorithm

ALG = Algorithm.ML_DSA_44


@pytest.mark.parametrize(
    ("change", "message"),
    [({"workers": 0}, "--workers"), ({"duty": 0.0}, "--duty"), ({"duty": 1.5}, "--duty"),
     ({"chunk": 0}, "chunk"), ({"refresh_s": 0.0}, "refresh")],
)
def test_bad_settings_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MinerConfig(cmbc="127.0.0.1:1", key=Path("k"), **change)


def test_a_chunk_reports_its_nonce_and_the_hashes_it_took() -> None:
    nonce, hashed = _search(b"prefix", target_to_bytes(MAX_TARGET), 1000, 50)
    assert (nonce, hashed) == (1000, 1)  # every hash meets the largest target
    nonce, hashed = _search(b"prefix", target_to_bytes(MAX_TARGET >> 6), 0, 100_000)
    assert nonce is not None and hashed == nonce + 1
    assert _search(b"prefix", bytes(32), 7, 300) == (None, 300)


def test_a_raised_abort_flag_cuts_a_chunk_short(monkeypatch) -> None:
    import threading

    import dualchain.chain.miner as miner

    flag = threading.Event()
    monkeypatch.setattr(miner, "_abort", flag)
    assert _search(b"prefix", bytes(32), 0, 10 * miner.ABORT_CHECK) == (None,
                                                                        10 * miner.ABORT_CHECK)
    flag.set()  # the tip moved: the chunk stops before hashing more than one slice
    assert _search(b"prefix", bytes(32), 0, 10 * miner.ABORT_CHECK) == (None, 0)


def test_the_duty_cycle_sets_the_pause_after_hashing() -> None:
    assert duty_pause(0.02, 0.25) == pytest.approx(0.06)  # hashing is a quarter of the time
    assert duty_pause(0.02, 1.0) == 0.0  # full duty never rests
    # A chunk that took 5 s on a busy machine (or with a worker starting up) would mean 20 s
    # of rest at duty 0.2: the pause is capped.
    assert duty_pause(5.0, 0.2) == MAX_PAUSE_S


async def test_a_tip_change_ends_the_pause_at_once() -> None:
    """A miner resting between chunks hears of a new tip (or of a block being validated)
    without waiting out its pause."""
    miner = Miner(MinerConfig(cmbc="127.0.0.1:1", key=Path("k")), Signer.generate(ALG))
    try:
        resting = asyncio.create_task(miner.rest(600.0))
        await asyncio.sleep(0)  # let it start waiting
        assert not resting.done()
        miner._tip_changed.set()
        await asyncio.wait_for(resting, 10)
    finally:
        miner.close()
