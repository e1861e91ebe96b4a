"""How every dualchain process stops: SIGTERM or SIGINT set an event, never kill on the spot.

Each process entry point (chain daemon, server node, miner, client) waits on ``stop_on_signals``
and then runs its own clean shutdown: finish or bound the work in flight, close stores and
channels, exit with code 0.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (instead of their default: die on the spot)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Awaits ``work`` unless ``stop`` is set first (``work`` is then cancelled); True when
    ``work`` completed. Its exceptions propagate."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()
    return True
