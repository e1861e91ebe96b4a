"""The child side of the supervisor's die-with-parent contract.

A launcher that dies, whatever killed it (SIGKILL included), must take its processes with it.
Two mechanisms, each where it works:

- **Lifeline pipe** (every process a ``Supervisor`` spawns): the supervisor keeps the write end
  of a pipe and hands the read end to the child (``DUALCHAIN_LIFELINE_FD``). The kernel closes
  the write end when the launcher process dies, so the child reads EOF. ``watch_parent`` reads it
  on a thread and then stops the process as SIGTERM would (its clean shutdown); at the end of
  that shutdown, or after a grace period if it hangs, it SIGKILLs the process group (the process
  and whatever it started). It works through ``exec`` (``ip netns exec`` keeps the descriptor)
  and whichever thread of the launcher started the child.
- **Parent-death signal** (``die_with_parent``, Linux ``PR_SET_PDEATHSIG``) for a process's own
  worker processes (the miner's hashing workers): the kernel SIGKILLs the worker when the thread
  that spawned it exits, so it cannot outlive a miner that was SIGKILLed in turn.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time

ENV = "DUALCHAIN_LIFELINE_FD"
GRACE_S = 10.0  # after the launcher's death: the clean shutdown's time before SIGKILL
PR_SET_PDEATHSIG = 1


def watch_parent(grace_s: float = GRACE_S) -> bool:
    """Starts watching the lifeline this process was given (none: nothing to do, False).
    Called first thing by every entry point a supervisor starts."""
    raw = os.environ.pop(ENV, None)  # the process's own children are not on this lifeline
    if raw is None:
        return False
    try:
        fd = int(raw)
        os.set_inheritable(fd, False)
    except (ValueError, OSError):
        return False  # a stale variable, not a descriptor of ours
    threading.Thread(target=_watch, args=(fd, grace_s), name="lifeline", daemon=True).start()
    return True


def _watch(fd: int, grace_s: float) -> None:
    while True:
        try:
            if not os.read(fd, 64):
                break  # EOF: every write end is closed, the launcher is gone
        except OSError:
            break
    # At the end of the clean shutdown nothing this process started may stay behind.
    atexit.register(_kill_group)
    os.kill(os.getpid(), signal.SIGTERM)  # the process's own clean shutdown (lifecycle.py)
    time.sleep(grace_s)  # a process that stopped in time never comes back here
    _kill_group()


def _kill_group() -> None:
    """SIGKILL this process and, when it leads its process group (as a supervisor starts it),
    everything in that group (its workers). Output is flushed first: this is its end."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    with contextlib.suppress(OSError):
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> bool:
    """Asks the kernel to send ``sig`` to this process when its parent (the thread that started
    it) exits; exits at once if ``parent`` already is gone (it died before the request). Linux
    only: False elsewhere or when prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # re-parented already: the parent died before prctl
        os.kill(os.getpid(), sig)
    return True
