"""TCP proxies in the test process, to cut and heal the links between daemons for real.

    proxy = Proxy(listen_port, "127.0.0.1:7001")   # daemon 0 names 127.0.0.1:<listen_port> as its
    await proxy.start()                             # peer instead of 127.0.0.1:7001
    proxy.cut()    # closes every live connection at once and refuses (closes) new ones
    proxy.heal()   # accepts and forwards again
    await proxy.close()

A daemon's outgoing links (gossip stream, block fetches, sync) all use the addresses in its
``peers`` list, so routing each through a proxy puts every byte between two daemons under the
test's control. A cut connection is aborted (RST), as a broken network path looks to gRPC; the
daemons then reconnect on their own once the proxy heals.

``Partition`` holds the proxies of a cluster, one per ordered pair of daemons, and cuts or heals
all pairs across a split.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

_CHUNK = 1 << 16


class Proxy:
    def __init__(self, listen_port: int, target: str, listen_host: str = "127.0.0.1") -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listen = (listen_host, listen_port)
        self.cut_now = False
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.listen[1]}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, *self.listen)

    def cut(self) -> None:
        """Breaks every live connection now and refuses new ones until ``heal``."""
        self.cut_now = True
        for task in list(self._live):
            task.cancel()

    def heal(self) -> None:
        self.cut_now = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        if self._live:
            await asyncio.gather(*self._live, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_now:
            self.refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._live.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, upstream = await asyncio.open_connection(*self.target)
            except OSError:
                return  # the daemon behind is down: the caller sees a closed connection
            self.accepted += 1
            pipes = [asyncio.create_task(_pipe(reader, upstream)),
                     asyncio.create_task(_pipe(up_reader, writer))]
            try:
                # HTTP/2 never half-closes: when either direction ends, the connection is over.
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # cut: fall through to the abort below
        finally:
            self._live.discard(task)
            writer.transport.abort()
            if upstream is not None:
                upstream.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()


class Partition:
    """The proxies of a cluster keyed by (from daemon, to daemon)."""

    def __init__(self, proxies: dict[tuple[int, int], Proxy]) -> None:
        self.proxies = proxies

    def split(self, side_a: Iterable[int], side_b: Iterable[int]) -> None:
        """Cuts every link between the two sides, both directions."""
        a, b = set(side_a), set(side_b)
        if a & b:
            raise ValueError(f"daemons {sorted(a & b)} are on both sides")
        for (src, dst), proxy in self.proxies.items():
            if (src in a and dst in b) or (src in b and dst in a):
                proxy.cut()

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    async def start(self) -> None:
        for proxy in self.proxies.values():
            await proxy.start()

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.proxies.values()),
                             return_exceptions=True)
