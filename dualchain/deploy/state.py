"""``WORKDIR/state.json``: the processes of a ``dualchain up`` testbed, and whether they live.

``up`` writes it whenever a group of processes is ready and once they are stopped; ``status``
reads it, and a new ``up`` on the same workdir refuses to start while a process it names still
runs. A process counts as alive only when its PID exists, is no zombie and (where recorded)
was started at the recorded time: a PID the kernel reused for another process is no testbed's.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import psutil

STATE = "state.json"


def started_at(pid: int) -> float | None:
    """When process ``pid`` started (psutil's create time), None when it is gone."""
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).create_time()
    return None


def alive(pid: int | None, started: float | None = None) -> bool:
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 0.5
    except psutil.Error:
        return False


def write_state(workdir: Path, running: bool, processes: list[dict[str, Any]]) -> None:
    """``processes``: name, role, address and pid of each (pid None: not started)."""
    entries = [{**p, "started": started_at(p["pid"]) if p["pid"] else None} for p in processes]
    document = {"running": running, "launcher_pid": os.getpid(),
                "launcher_started": started_at(os.getpid()), "processes": entries}
    (Path(workdir) / STATE).write_text(json.dumps(document, indent=2) + "\n")


def read_state(workdir: Path) -> dict[str, Any] | None:
    """The workdir's state, None without one (or an unreadable one: nothing to protect)."""
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((Path(workdir) / STATE).read_text())
        if isinstance(state, dict) and isinstance(state.get("processes"), list):
            return state
    return None


def live_processes(state: dict[str, Any]) -> dict[str, int]:
    """The processes of ``state`` still alive, by name -> PID."""
    return {p["name"]: p["pid"] for p in state["processes"]
            if alive(p.get("pid"), p.get("started"))}


def launcher_alive(state: dict[str, Any]) -> bool:
    return alive(state.get("launcher_pid"), state.get("launcher_started"))


def busy_reason(workdir: Path) -> str | None:
    """Why a new testbed must not start in ``workdir`` (a process of the last one still runs;
    one line naming the PIDs and how to stop them), None when it may."""
    state = read_state(workdir)
    if state is None:
        return None
    live = live_processes(state)
    launcher = state.get("launcher_pid") if launcher_alive(state) else None
    if launcher == os.getpid():
        launcher = None  # this process rewrites its own testbed
    if not live and launcher is None:
        return None
    pids = " ".join(str(pid) for pid in live.values())
    if launcher is not None:
        how = f"stop it with 'kill {launcher}' (its launcher; the processes stop with it)"
        names = f"launcher {launcher}" + (f", processes {pids}" if pids else "")
    else:
        how = f"stop them with 'kill {pids}'"
        names = f"processes {pids} ({', '.join(live)})"
    return (f"{workdir}: a testbed still runs there ({names}); {how}, or use another "
            f"--workdir")
