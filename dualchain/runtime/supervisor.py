"""One process supervisor for every launcher: ``dualchain up``, the benches, the test harness.

    sup = Supervisor()
    node = sup.spawn("node-0", [sys.executable, "-m", "dualchain.cli", "chain", ...],
                     cwd=workdir, log=workdir / "logs" / "node-0.log")
    sup.wait_ready([node], timeout=60)      # its JSON {"event": "ready", ...} stdout line
    ...
    codes = sup.stop()                      # SIGTERM, then SIGKILL of the group after a grace

What it guarantees:

- **Die with the launcher.** Every child gets a lifeline pipe (see ``lifeline.py``): when the
  launcher process dies, by any signal, the child stops itself (clean shutdown, then SIGKILL of
  its process group). Each child leads a process group of its own, so its workers go with it.
- **Events.** A thread per child reads its stdout: every JSON line with an ``"event"`` key is
  kept (``Child.events``), handed to an optional queue as ``(key, event)``, and the first
  ``ready`` one becomes ``Child.ready`` (``Child.ready_s``: its start-up time). When the child
  exits, what is left of its process group is SIGKILLed (no worker outlives it), the exit code
  is collected and an ``{"event": "exited", "code": ..., "pid": ...}`` event follows. stderr
  goes to the log file.
- **Stop.** ``stop`` sends SIGTERM to each child, waits up to a grace period, SIGKILLs the
  process group of those still running and returns every exit code. ``kill`` SIGKILLs one
  child's group at once; ``wait_ready``, ``wait_event`` and ``wait_exit`` wait under a deadline
  and name the process and its log when it fails.

Only the supervisor reaps its children (do not call ``popen.wait``/``poll`` on them): a process
group is signalled only while its leader is unreaped, so its id cannot have been reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualchain.runtime.lifeline import ENV as LIFELINE_ENV
from dualchain.runtime.lifeline import die_with_parent

STOP_GRACE_S = 10.0
READER_JOIN_S = 2.0  # after an exit: how long the last stdout lines may take


class SupervisorError(RuntimeError):
    """A child did not do what its launcher waited for; the message names it and its log."""


@dataclass(eq=False)
class Child:
    name: str
    argv: list[str]
    log: Path | None  # its stderr (None: the launcher's own)
    popen: subprocess.Popen[bytes]
    key: Any = None  # what events in the queue are tagged with (default: this Child)
    ready: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    lifeline: int = -1  # the write end of its lifeline pipe (closed once it exited)
    finished: bool = False  # reaped and every event line read
    spawned: float = field(default_factory=time.monotonic)
    ready_at: float | None = None  # time.monotonic() when its ready line arrived

    @property
    def ready_s(self) -> float | None:
        """Seconds from its start to its ready line (its start-up time)."""
        return None if self.ready_at is None else round(self.ready_at - self.spawned, 3)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """Not yet reaped (the supervisor reaps it right after it exits)."""
        return self.exit_code is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            assert self.log is not None
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, AssertionError):
            return "(no log)"


class Supervisor:
    """Starts processes, watches their event lines, stops them. Thread-safe."""

    def __init__(self, events: queue.Queue[tuple[Any, dict[str, Any]]] | None = None) -> None:
        self.children: list[Child] = []
        self._queue = events
        self._changed = threading.Condition()

    # -- start -----------------------------------------------------------------------------------

    def spawn(self, name: str, argv: Sequence[str], *, cwd: Path, log: Path | None,
              key: Any = None,
              env: dict[str, str] | None = None, stdin: bool = False,
              foreign: bool = False) -> Child:
        """Starts ``argv`` (stdout a pipe read for events, stderr appended to ``log`` or this
        process's own with None, stdin a pipe with ``stdin`` else /dev/null) in a process group
        of its own, on a lifeline (it dies with this process). A ``foreign`` program (etcd)
        does not watch the lifeline: the kernel SIGKILLs it when the spawning thread dies."""
        parent = os.getpid()
        read_end, write_end = os.pipe()  # both close-on-exec: only the child gets read_end
        child_env = {**os.environ, **(env or {}), LIFELINE_ENV: str(read_end)}
        try:
            with open(log, "ab") if log is not None else contextlib.nullcontext() as stderr:
                popen = subprocess.Popen(
                    list(argv), cwd=cwd, env=child_env,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=stderr, pass_fds=(read_end,),
                    process_group=0,
                    preexec_fn=(lambda: die_with_parent(parent)) if foreign else None)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        child = Child(name, list(argv), log, popen, lifeline=write_end)
        child.key = child if key is None else key
        child.spawned = time.monotonic()
        with self._changed:
            self.children.append(child)
        reader = threading.Thread(target=self._read, args=(child,), name=f"read-{name}",
                                  daemon=True)
        reader.start()
        threading.Thread(target=self._reap, args=(child, reader), name=f"reap-{name}",
                         daemon=True).start()
        return child

    def _read(self, child: Child) -> None:
        assert child.popen.stdout is not None
        with child.popen.stdout as stdout:
            for line in stdout:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict) and "event" in event:
                        self._record(child, event)

    def _reap(self, child: Child, reader: threading.Thread) -> None:
        """Waits for the child's exit without reaping it, SIGKILLs what is left of its process
        group (a worker must not outlive it), then reaps it. Only this thread reaps, under the
        lock, so ``kill`` never signals a process group whose id could have been reused."""
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        with self._changed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            code = child.popen.wait()
            child.exit_code = code
            os.close(child.lifeline)
            self._changed.notify_all()
        reader.join(READER_JOIN_S)  # its last event lines come before "exited"
        self._record(child, {"event": "exited", "code": code, "pid": child.pid})

    def _record(self, child: Child, event: dict[str, Any]) -> None:
        with self._changed:
            child.events.append(event)
            if event["event"] == "ready" and child.ready is None:
                child.ready, child.ready_at = event, time.monotonic()
            child.finished = event["event"] == "exited"
            self._changed.notify_all()
        if self._queue is not None:
            self._queue.put((child.key, event))

    # -- wait ------------------------------------------------------------------------------------

    def wait_ready(self, children: Iterable[Child], timeout: float) -> list[dict[str, Any]]:
        """The ready events of ``children``, in order; SupervisorError when one exits first or
        the timeout passes (naming the processes and their logs)."""
        children = list(children)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for child in children:
                    if child.ready is None and child.finished:
                        raise SupervisorError(
                            f"{child.name} exited with code {child.exit_code} before it was "
                            f"ready; see {child.log}")
                missing = [c.name for c in children if c.ready is None]
                if not missing:
                    return [c.ready for c in children]  # type: ignore[misc]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SupervisorError(f"not ready within {timeout:.0f} s: "
                                          f"{', '.join(missing)}; see their logs")
                self._changed.wait(remaining)

    def wait_event(self, child: Child, event: str, timeout: float) -> dict[str, Any]:
        """The first event named ``event`` that ``child`` printed (already or within
        ``timeout``); SupervisorError when it exits or the timeout passes first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((e for e in child.events if e["event"] == event), None)
                if found is not None:
                    return found
                if child.finished:
                    raise SupervisorError(f"{child.name} exited with code {child.exit_code} "
                                          f"before {event!r}; see {child.log}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SupervisorError(f"{child.name}: no {event!r} within {timeout:.0f} s")
                self._changed.wait(remaining)

    def exited(self) -> list[Child]:
        """Health: the children that are no longer running (stopped ones included)."""
        return [c for c in self.children if not c.alive()]

    # -- stop ------------------------------------------------------------------------------------

    def stop(self, children: Iterable[Child] | None = None,
             grace: float = STOP_GRACE_S) -> dict[str, int]:
        """SIGTERM each child (in the given order), wait up to ``grace`` seconds, SIGKILL the
        process group of any still running; returns each child's exit code by name."""
        children = list(self.children if children is None else children)
        with self._changed:
            for child in children:
                if child.exit_code is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        self.wait_exit(children, deadline)
        return {child.name: self.kill(child) for child in children}

    def kill(self, child: Child, timeout: float = 10.0) -> int:
        """SIGKILL ``child``'s process group (the child and whatever it started) and wait until
        it is reaped; its exit code."""
        with self._changed:
            if child.exit_code is None:  # not reaped: its group id is still its own
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
        self.wait_exit([child], time.monotonic() + timeout)
        if child.exit_code is None:
            raise SupervisorError(f"{child.name} (pid {child.pid}) survived SIGKILL")
        return child.exit_code

    def wait_exit(self, children: Iterable[Child], deadline: float) -> bool:
        """Waits until every child in ``children`` is reaped and its ``exited`` event recorded,
        or ``deadline`` (monotonic) passes; True when all are."""
        children = list(children)
        with self._changed:
            while not all(c.finished for c in children):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def close(self) -> None:
        """Kills every child at once (SIGKILL of each group); for tests' teardown."""
        for child in self.children:
            self.kill(child)

    def forget(self, child: Child) -> None:
        """Drops an exited child (a restarted process gets a new Child)."""
        with self._changed:
            if child in self.children:
                self.children.remove(child)
