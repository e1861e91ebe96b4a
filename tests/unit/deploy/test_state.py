"""state.json: a workdir whose testbed still runs is refused, a stale one is taken over, and
status never calls a testbed of dead processes running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualchain import cli
from dualchain.deploy import status
from dualchain.deploy.state import alive, busy_reason, read_state, write_state
from dualchain.deploy.up import Testbed, UpConfig, UpError


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process standing in for a testbed's (killed by PID at the end)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def entries(*pids: int | None) -> list[dict]:
    return [{"name": f"node-{i}", "role": "client", "address": "127.0.0.1:9", "pid": pid}
            for i, pid in enumerate(pids)]


def kill_launcher_state(workdir: Path, running: bool, pids: list[int | None]) -> None:
    """A state.json as a SIGKILLed launcher left it: its own PID is dead."""
    write_state(workdir, running, entries(*pids))
    state = json.loads((workdir / "state.json").read_text())
    state["launcher_pid"], state["launcher_started"] = dead_pid(), None
    (workdir / "state.json").write_text(json.dumps(state))


def test_alive_sees_through_zombies_and_reused_pids(sleeper) -> None:
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        assert not alive(zombie.pid)
    finally:
        zombie.wait()
    assert alive(sleeper.pid)
    assert not alive(sleeper.pid, started=1.0)  # the same PID, another process
    assert not alive(dead_pid())
    assert not alive(None)


def test_a_live_process_makes_the_workdir_busy(tmp_path: Path, sleeper) -> None:
    kill_launcher_state(tmp_path, True, [sleeper.pid, dead_pid(), None])
    reason = busy_reason(tmp_path)
    assert reason is not None and "\n" not in reason
    assert f"processes {sleeper.pid} (node-0)" in reason and f"kill {sleeper.pid}" in reason
    before = (tmp_path / "state.json").read_bytes()
    tb = Testbed(UpConfig(nodes=1, clients=1, workdir=str(tmp_path)), progress=lambda line: None)
    with pytest.raises(UpError, match=f"still runs there.*{sleeper.pid}"):
        tb.write()
    tb.stop()
    assert (tmp_path / "state.json").read_bytes() == before  # the running testbed's, untouched


def test_a_live_launcher_is_named_as_the_one_to_stop(tmp_path: Path, sleeper) -> None:
    write_state(tmp_path, True, entries(dead_pid()))
    state = json.loads((tmp_path / "state.json").read_text())
    state["launcher_pid"], state["launcher_started"] = sleeper.pid, None
    (tmp_path / "state.json").write_text(json.dumps(state))
    assert f"'kill {sleeper.pid}' (its launcher" in (busy_reason(tmp_path) or "")


def test_up_on_a_busy_workdir_exits_non_zero_with_one_line(tmp_path: Path, sleeper,
                                                           capsys) -> None:
    kill_launcher_state(tmp_path, True, [sleeper.pid])
    assert cli.main(["up", "--workdir", str(tmp_path), "--nodes", "1", "--clients", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dualchain: error: ") and str(sleeper.pid) in err[0]


def test_a_stale_state_is_taken_over(tmp_path: Path) -> None:
    workdir = tmp_path / "stale"
    workdir.mkdir()
    kill_launcher_state(workdir, True, [dead_pid(), dead_pid()])
    assert busy_reason(workdir) is None
    tb = Testbed(UpConfig(nodes=1, clients=1, workdir=str(workdir)), progress=lambda line: None)
    tb.write()
    tb._write_state(running=False)
    state = read_state(workdir)
    assert state is not None and state["running"] is False
    assert [p["pid"] for p in state["processes"]] == [None] * len(tb.procs)


def test_status_of_a_killed_launchers_testbed_is_not_running(tmp_path: Path, sleeper) -> None:
    kill_launcher_state(tmp_path, True, [dead_pid(), dead_pid()])
    out = status.testbed_status(tmp_path)
    assert out["running"] is False and out["processes_alive"] == 0
    # Its launcher alive but every process dead: not running either.
    write_state(tmp_path, True, entries(dead_pid()))
    assert status.testbed_status(tmp_path)["running"] is False
    # A process alive (a client: status asks it nothing) and the launcher alive: running.
    write_state(tmp_path, True, entries(sleeper.pid))
    out = status.testbed_status(tmp_path)
    assert out["running"] is True and out["processes_alive"] == 1
