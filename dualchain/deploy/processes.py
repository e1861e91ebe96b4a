"""Helpers for launching dualchain processes: free ports, and waiting for a process's JSON
event line on its standard output (instead of sleeping until it is probably ready)."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import time


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports the kernel had free a moment ago (bound to port 0, then closed)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def read_json_line(proc: subprocess.Popen[bytes], event: str, timeout: float) -> dict:
    """Reads stdout lines of ``proc`` until a JSON line with this event (or fails at timeout).

    Reads the pipe's file descriptor directly: a buffered reader could hold the wanted line in
    its buffer while the selector waits for new bytes that never come. Lines after the event
    line that arrived in the same read are dropped: call it for one event per process.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict) and data.get("event") == event:
                        return data
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event!r} line within {timeout} s")
            if not selector.select(remaining):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise RuntimeError(f"process exited ({proc.wait()}) before {event!r}")
            pending += chunk
