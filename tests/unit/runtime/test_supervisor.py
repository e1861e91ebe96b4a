"""The supervisor and its die-with-parent contract, with small real Python processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from dualchain.runtime.supervisor import Supervisor, SupervisorError

BOUND_S = 20.0  # every wait in these tests is bounded by this

# A child as the dualchain entry points are: watches its lifeline, prints a ready line, stops
# cleanly on SIGTERM (exit 0) unless told to ignore it; optionally starts a grandchild first.
CHILD = textwrap.dedent("""
    import json, os, signal, subprocess, sys, threading
    from dualchain.runtime.lifeline import watch_parent
    watch_parent(grace_s=float(os.environ.get("GRACE", "10")))
    grandchild = None
    if os.environ.get("GRANDCHILD"):
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                      stdout=subprocess.DEVNULL)
    done = threading.Event()
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(json.dumps({"event": "ready", "pid": os.getpid(),
                      "grandchild": grandchild.pid if grandchild else None}), flush=True)
    done.wait()
""")


def spawn(sup: Supervisor, tmp_path: Path, name: str, **env: str):
    return sup.spawn(name, [sys.executable, "-c", CHILD], cwd=tmp_path,
                     log=tmp_path / f"{name}.log", env=env)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = BOUND_S) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if not gone(p)]
        if not left:
            return []
        time.sleep(0.05)  # polling another process tree's exit: no event to await
    return [p for p in pids if not gone(p)]


def test_ready_events_and_clean_stop(tmp_path: Path) -> None:
    sup = Supervisor()
    try:
        a, b = spawn(sup, tmp_path, "a"), spawn(sup, tmp_path, "b")
        ready = sup.wait_ready([a, b], BOUND_S)
        assert [r["pid"] for r in ready] == [a.pid, b.pid]
        assert os.getpgid(a.pid) == a.pid  # each child leads a process group of its own
        assert sup.stop(grace=BOUND_S) == {"a": 0, "b": 0}
        assert a.events[-1] == {"event": "exited", "code": 0, "pid": a.pid}
    finally:
        sup.close()


def test_exit_before_ready_names_the_process_and_log(tmp_path: Path) -> None:
    sup = Supervisor()
    child = sup.spawn("bad", [sys.executable, "-c", "import sys; sys.exit(3)"], cwd=tmp_path,
                      log=tmp_path / "bad.log")
    with pytest.raises(SupervisorError, match=r"bad exited with code 3 .*bad\.log"):
        sup.wait_ready([child], BOUND_S)


def test_stop_escalates_to_sigkill_of_the_group(tmp_path: Path) -> None:
    sup = Supervisor()
    try:
        child = spawn(sup, tmp_path, "stubborn", IGNORE_TERM="1", GRANDCHILD="1")
        (ready,) = sup.wait_ready([child], BOUND_S)
        assert sup.stop(grace=0.5) == {"stubborn": -signal.SIGKILL}
        assert wait_gone([ready["grandchild"]]) == []
    finally:
        sup.close()


def test_a_grandchild_does_not_outlive_its_parent(tmp_path: Path) -> None:
    """A child that exits on its own leaves no worker behind: its group is swept."""
    sup = Supervisor()
    try:
        child = spawn(sup, tmp_path, "parent", GRANDCHILD="1")
        (ready,) = sup.wait_ready([child], BOUND_S)
        os.kill(child.pid, signal.SIGKILL)
        assert wait_gone([ready["grandchild"]]) == []
        assert sup.wait_event(child, "exited", BOUND_S)["code"] == -signal.SIGKILL
    finally:
        sup.close()


LAUNCHER = textwrap.dedent("""
    import json, sys, threading
    from pathlib import Path
    from dualchain.runtime.supervisor import Supervisor
    tmp = Path(sys.argv[1])
    sup = Supervisor()
    children = []
    def start(name, env):
        children.append(sup.spawn(name, [sys.executable, "-c", sys.argv[2]], cwd=tmp,
                                  log=tmp / f"{name}.log", env=env))
    start("polite", {"GRANDCHILD": "1"})
    start("stubborn", {"IGNORE_TERM": "1", "GRANDCHILD": "1", "GRACE": "1"})
    # a child started from another thread than the main one dies with the process too
    t = threading.Thread(target=start, args=("from-thread", {})); t.start(); t.join()
    ready = sup.wait_ready(children, 60)
    # a program that knows nothing of the lifeline (etcd in the sweeps) dies with it as well
    foreign = sup.spawn("foreign", ["sleep", "600"], cwd=tmp, log=None, foreign=True)
    pids = [c.pid for c in children] + [r["grandchild"] for r in ready if r["grandchild"]]
    pids.append(foreign.pid)
    print(json.dumps({"event": "ready", "pids": pids}), flush=True)
    threading.Event().wait()
""")


def test_children_and_grandchildren_die_with_a_sigkilled_launcher(tmp_path: Path) -> None:
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path), CHILD],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        assert launcher.stdout is not None
        pids = json.loads(launcher.stdout.readline())["pids"]
        assert len(pids) == 6 and all(not gone(p) for p in pids)
        launcher.kill()  # SIGKILL: no handler, no finally, no atexit in the launcher
        launcher.wait(BOUND_S)
        assert wait_gone(pids) == []
    finally:
        launcher.kill()
        launcher.wait(BOUND_S)
        for pid in pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


WORKER_PARENT = textwrap.dedent("""
    import json, multiprocessing, os, threading
    from dualchain.runtime.lifeline import die_with_parent
    def idle(_):
        return os.getpid()
    if __name__ == "__main__":
        pool = multiprocessing.get_context("spawn").Pool(
            2, initializer=die_with_parent, initargs=(os.getpid(),))
        pids = sorted(set(pool.map(idle, range(8), chunksize=1)))
        print(json.dumps([p.pid for p in multiprocessing.active_children()]), flush=True)
        threading.Event().wait()
""")


def test_worker_processes_die_with_their_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(WORKER_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, cwd=tmp_path)
    workers: list[int] = []
    try:
        assert parent.stdout is not None
        workers = json.loads(parent.stdout.readline())
        assert len(workers) >= 2
        parent.kill()
        parent.wait(BOUND_S)
        assert wait_gone(workers) == []
    finally:
        parent.kill()
        parent.wait(BOUND_S)
        for pid in workers:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
