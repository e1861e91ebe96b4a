"""The health file of a process in a container: proof that its event loop runs and it serves.

With ``$DUALCHAIN_HEALTH_FILE`` set (the image sets it), a chain daemon or server node once it
serves, a miner or client once it is ready, touches that file every ``INTERVAL_S`` from its event
loop, and removes it when it begins to stop. The container's health check (``deploy/healthy``,
``dualchain-healthy`` in the image) only looks at the file's age: a shell and ``find``, where a
gRPC probe started a Python process that imported grpc (6-7 s on a busy 2-core machine, which
made the checks flap). A loop stuck for longer than the check's limit (1 min) turns it unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("dualchain.heartbeat")

ENV = "DUALCHAIN_HEALTH_FILE"
INTERVAL_S = 2.0


def health_file() -> Path | None:
    """The file named by ``$DUALCHAIN_HEALTH_FILE``, None when unset (outside containers)."""
    value = os.environ.get(ENV, "")
    return Path(value) if value else None


def touch(path: Path) -> None:
    try:
        path.touch()
    except OSError as exc:  # a read-only or missing folder: the check says unhealthy, we log
        log.warning("health file %s: %s", path, exc.strerror)


def clear(path: Path | None = None) -> None:
    """Removes the health file (the process is stopping: the check turns unhealthy at once)."""
    path = path if path is not None else health_file()
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()


async def beat(path: Path, interval_s: float = INTERVAL_S) -> None:
    """Touches ``path`` every ``interval_s`` until cancelled, then removes it."""
    try:
        while True:
            touch(path)
            await asyncio.sleep(interval_s)
    finally:
        clear(path)


def start() -> asyncio.Task[None] | None:
    """Starts the heartbeat on the running loop (None without ``$DUALCHAIN_HEALTH_FILE``); the
    caller cancels the task when it begins to stop."""
    path = health_file()
    if path is None:
        return None
    return asyncio.get_running_loop().create_task(beat(path), name="heartbeat")


def stop(task: asyncio.Task[None] | None) -> None:
    """Cancels a heartbeat from ``start`` and removes the file at once."""
    if task is not None:
        task.cancel()
    clear()
