"""Crash safety of the block store: SIGKILL a real writer process mid-commit, then audit the file.

The writer (store_writer.py) appends blocks and sometimes reorgs to a side branch. It prints
``> A`` / ``> R`` just before an append or a head switch starts and ``A|R HEIGHT HASH`` once it
committed. Each round lets a random number of commits through, then kills the writer right after
the next announcement of the chosen kind, so the kill lands inside that write. The store must
reopen consistent and still hold everything reported (committed means durable). All rounds share
one file; each writer resumes from the stored head.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dualchain.chain.store import BlockStore

WRITER = Path(__file__).with_name("store_writer.py")
ROUNDS = 10
MAX_KILL_DELAY_S = 0.004
READ_DEADLINE_S = 20.0


def read_until(
    proc: subprocess.Popen[bytes], done: Callable[[list[bytes]], bool], deadline: float
) -> tuple[list[bytes], bytes]:
    """Complete stdout lines of the writer until ``done(lines)`` holds (or fail at the deadline).

    Also returns the start of a line not yet complete, so no report is lost at the boundary.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[bytes] = []
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not done(lines):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"writer too slow: {len(lines)} lines before the deadline")
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise AssertionError(f"writer exited early with code {proc.wait()}")
            *complete, pending = (pending + chunk).split(b"\n")
            lines.extend(complete)
    return lines, pending


def kill_round(
    store_path: Path, seed: int, commits: int, target: bytes, delay_s: float, log: Path
) -> list[bytes]:
    """Runs one writer for ``commits`` commits, SIGKILLs it ``delay_s`` after it announces a
    ``target`` write (b"A" or b"R"); returns every line it completed."""

    def done(lines: list[bytes]) -> bool:
        reported = [i for i, line in enumerate(lines) if not line.startswith(b">")]
        if len(reported) < commits:
            return False
        return any(line == b"> " + target for line in lines[reported[commits - 1] :])

    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(store_path), str(seed)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
        )
        try:
            lines, pending = read_until(proc, done, time.monotonic() + READ_DEADLINE_S)
            # Not a synchronisation wait: a random offset spreads the kill over the whole write
            # (a write takes a few milliseconds), instead of always hitting its first statements.
            time.sleep(delay_s)
            proc.kill()  # SIGKILL to this PID only: no cleanup, no rollback, no final commit
            proc.wait(timeout=10)
            assert proc.stdout is not None
            rest = proc.stdout.read()  # lines written before death are promises too
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    return [*lines, *(pending + rest).split(b"\n")]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkilled_writer_leaves_consistent_durable_store(tmp_path: Path) -> None:
    store_path = tmp_path / "chain.db"
    rng = random.Random(20240611)
    reports: list[list[str]] = []
    best_height = -1
    for round_ in range(ROUNDS):
        target = b"AR"[round_ % 2 : round_ % 2 + 1]  # alternate: kill inside appends and reorgs
        commits = rng.randint(2, 10)
        delay_s = rng.uniform(0, MAX_KILL_DELAY_S)
        lines = kill_round(
            store_path, rng.randrange(1 << 30), commits, target, delay_s, tmp_path / "stderr.txt"
        )
        round_reports = [
            line.decode().split() for line in lines if line.strip() and not line.startswith(b">")
        ]
        assert len(round_reports) >= commits
        _, height, block_hash = round_reports[-1]
        reports.extend(round_reports)

        with BlockStore(store_path) as store:
            assert store.check_consistency() == [], f"round {round_}"
            assert store.height() >= int(height), f"round {round_}: lost reported commits"
            assert store.has_block(bytes.fromhex(block_hash))
            assert store.height() >= best_height  # heads only grow: reorgs go to longer branches
            best_height = store.height()
            assert store.next_nonce(store.canonical_block(1).transactions[0].sender) > 0

    assert {kind for kind, _, _ in reports} == {"A", "R"}, "the writer should append and reorg"
    with BlockStore(store_path) as store:
        assert len(store.tips()) > 1  # replaced branches stay stored
