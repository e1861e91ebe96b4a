"""Link emulation for a network-namespace testbed: what a host's link does to the packets it
sends (delay, jitter, loss, rate), written ``delay=50ms,jitter=5ms,rate=10mbit,loss=0.1%``.

Two ways to apply a spec, chosen by ``netns.Network``:

- ``tc``: ``tc qdisc replace dev eth0 root netem ...`` on the host's side of its veth pair,
  where the kernel has ``sch_netem``;
- ``userspace``: where it has not (many container and micro-VM kernels), the host's link is a
  pair of TAP devices instead of a veth pair, and a small pump process (``pump`` below, run in
  the switch namespace) copies frames between them, holding each frame the host sends until the
  ``Shaper`` lets it go. Frames towards the host pass straight through, as with ``tc`` on the
  host's egress.

Either way the spec shapes what the host *sends*: with ``delay=50ms`` on every host, a packet
between two hosts is 50 ms late one way (100 ms more round trip).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import fnmatch
import os
import random
import re
import selectors
import struct
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# netem's default queue (1000 packets) overflows on a fast link with 50 ms of delay and turns
# delay into loss; a deeper queue keeps loss to what the spec asks for.
DEFAULT_LIMIT = 10_000
_TIME = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s)$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")
_TIME_SCALE = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_RATE_SCALE = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
               "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9}


class NetemError(ValueError):
    """A link spec or host table that cannot be applied; the message names the culprit."""


@dataclass(frozen=True)
class NetemSpec:
    """One host's link: what happens to each packet it sends."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # delay varies uniformly within +- jitter (order is kept)
    loss_pct: float = 0.0
    rate_bps: int = 0  # 0: the link's own speed
    limit: int = DEFAULT_LIMIT  # packets queued at most; more are dropped

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.rate_bps < 0:
            raise NetemError("delay, jitter and rate must be at least 0")
        if self.jitter_ms > self.delay_ms:
            raise NetemError("jitter must not exceed delay")
        if not 0 <= self.loss_pct <= 100:
            raise NetemError("loss must be a percentage in [0, 100]")
        if self.limit < 1:
            raise NetemError("limit must be at least 1 packet")

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any]) -> NetemSpec:
        """``"delay=50ms,jitter=5ms,rate=10mbit,loss=0.1%,limit=5000"`` (any subset, any order)
        or the same keys as a mapping (a TOML inline table)."""
        if isinstance(spec, Mapping):
            items = [(str(k), str(v)) for k, v in spec.items()]
        else:
            items = []
            for part in filter(None, (p.strip() for p in spec.split(","))):
                key, sep, value = part.partition("=")
                if not sep:
                    raise NetemError(f"netem {spec!r}: {part!r} is not KEY=VALUE")
                items.append((key.strip(), value.strip()))
        values: dict[str, Any] = {}
        for key, value in items:
            if key in ("delay", "jitter"):
                values[f"{key}_ms"] = _parse_time(value)
            elif key == "rate":
                values["rate_bps"] = _parse_rate(value)
            elif key == "loss":
                values["loss_pct"] = _parse_number(value.removesuffix("%"), "loss")
            elif key == "limit":
                values["limit"] = int(_parse_number(value, "limit"))
            else:
                raise NetemError(f"netem: unknown key {key!r} (delay, jitter, loss, rate, "
                                 "limit)")
        return cls(**values)

    def tc_args(self) -> list[str]:
        """The arguments after ``tc qdisc replace dev DEV root``."""
        args = ["netem"]
        if self.delay_ms:
            args += ["delay", f"{self.delay_ms:g}ms"]
            if self.jitter_ms:
                args.append(f"{self.jitter_ms:g}ms")
        if self.loss_pct:
            args += ["loss", f"{self.loss_pct:g}%"]
        if self.rate_bps:
            args += ["rate", f"{self.rate_bps}bit"]
        return [*args, "limit", str(self.limit)]

    def __str__(self) -> str:
        parts = []
        if self.delay_ms:
            parts.append(f"delay={self.delay_ms:g}ms")
        if self.jitter_ms:
            parts.append(f"jitter={self.jitter_ms:g}ms")
        if self.loss_pct:
            parts.append(f"loss={self.loss_pct:g}%")
        if self.rate_bps:
            parts.append(f"rate={self.rate_bps}bit")
        if self.limit != DEFAULT_LIMIT:
            parts.append(f"limit={self.limit}")
        return ",".join(parts)


def _parse_number(value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise NetemError(f"netem: {what} {value!r} is not a number") from None


def _parse_time(value: str) -> float:
    match = _TIME.match(value.lower())
    if not match:
        raise NetemError(f"netem: time {value!r}: a number with us, ms or s (e.g. 50ms)")
    return float(match[1]) * _TIME_SCALE[match[2]]


def _parse_rate(value: str) -> int:
    match = _RATE.match(value.lower())
    if not match:
        raise NetemError(f"netem: rate {value!r}: a number with bit, kbit, mbit, gbit "
                         "(bits/s) or bps, kbps, mbps, gbps (bytes/s), e.g. 10mbit")
    return int(float(match[1]) * _RATE_SCALE[match[2]])


def parse_netem_options(items: Iterable[str]) -> dict[str, str]:
    """``--netem HOST=SPEC`` options as a table: ``["node-1=delay=50ms"]`` ->
    ``{"node-1": "delay=50ms"}``. HOST may be a glob (``clients-*``, ``*``)."""
    table: dict[str, str] = {}
    for item in items:
        host, sep, spec = item.partition("=")
        if not sep or not host or not spec:
            raise NetemError(f"--netem {item!r}: HOST=SPEC, e.g. node-1=delay=50ms,rate=10mbit")
        NetemSpec.parse(spec)
        table[host] = spec
    return table


def resolve(hosts: Sequence[str], table: Mapping[str, str | Mapping[str, Any]]
            ) -> dict[str, NetemSpec]:
    """Each host's spec from a table of host names or globs. A host named exactly wins over a
    glob; among globs, the first in the table. A pattern that names no host is an error (a typo
    would otherwise silently leave a link unshaped)."""
    specs = {pattern: NetemSpec.parse(spec) for pattern, spec in table.items()}
    for pattern in specs:
        if not fnmatch.filter(hosts, pattern):
            raise NetemError(f"netem: {pattern!r} names no host (hosts: {', '.join(hosts)})")
    out: dict[str, NetemSpec] = {}
    for host in hosts:
        if host in specs:
            out[host] = specs[host]
            continue
        pattern = next((p for p in specs if fnmatch.fnmatchcase(host, p)), None)
        if pattern is not None:
            out[host] = specs[pattern]
    return out


class Shaper:
    """When each packet a host sends leaves its link (``admit``), or None for a dropped one: a
    random drop at ``loss_pct``, a drop when ``limit`` packets wait already, otherwise it waits
    for the packets before it to be serialised at ``rate_bps`` and then ``delay_ms`` (+- jitter).
    Departures never overtake each other. Times in seconds; ``uniform`` is injectable."""

    def __init__(self, spec: NetemSpec,
                 uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.spec = spec
        self.uniform = uniform
        self.busy_until = 0.0  # the end of the last packet's serialisation
        self.last_due = 0.0

    def admit(self, size: int, now: float, backlog: int = 0) -> float | None:
        spec = self.spec
        if spec.loss_pct and self.uniform(0.0, 100.0) < spec.loss_pct:
            return None
        if backlog >= spec.limit:
            return None
        sent = now
        if spec.rate_bps:
            sent = max(now, self.busy_until) + size * 8 / spec.rate_bps
            self.busy_until = sent
        delay = spec.delay_ms
        if spec.jitter_ms:
            delay += self.uniform(-spec.jitter_ms, spec.jitter_ms)
        due = max(sent + delay / 1000.0, self.last_due)
        self.last_due = due
        return due


# -- the userspace link ---------------------------------------------------------------------------

_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_FRAME = 1 << 16


def open_tap(name: str) -> int:
    """Creates TAP device ``name`` in this process's network namespace; returns its file
    descriptor. The device lives while the descriptor is open (also after it is moved to
    another namespace)."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def pump(host_fd: int, switch_fd: int, spec: NetemSpec, seed: int = 0,
         alive: Callable[[], bool] = lambda: True) -> None:
    """Copies frames between the two TAP devices of a host's link until ``alive()`` is false:
    what the host sends goes through a ``Shaper``, what comes to it passes at once."""
    rng = random.Random(seed)
    shaper = Shaper(spec, rng.uniform)
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    for fd in (host_fd, switch_fd):
        os.set_blocking(fd, False)
    checked = time.monotonic()
    with selectors.DefaultSelector() as selector:
        selector.register(host_fd, selectors.EVENT_READ)
        selector.register(switch_fd, selectors.EVENT_READ)
        while True:
            now = time.monotonic()
            timeout = max(0.0, queue[0][0] - now) if queue else 1.0
            for key, _ in selector.select(min(timeout, 1.0)):
                for _ in range(256):  # drain what is there, a bounded batch at a time
                    try:
                        frame = os.read(key.fd, _FRAME)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        return  # the device is gone: its namespace was deleted
                    if key.fd == switch_fd:
                        _write(host_fd, frame)
                        continue
                    due = shaper.admit(len(frame), time.monotonic(), len(queue))
                    if due is not None:
                        queue.append((due, frame))
            now = time.monotonic()
            while queue and queue[0][0] <= now:
                _write(switch_fd, queue.popleft()[1])
            if now - checked >= 1.0:
                checked = now
                if not alive():
                    return


def _write(fd: int, frame: bytes) -> None:
    # A frame the device cannot take now is dropped, as a full queue would drop it.
    with contextlib.suppress(BlockingIOError, InterruptedError):
        os.write(fd, frame)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dualchain.deploy.netem",
        description="pump HOST_FD SWITCH_FD SPEC: the userspace link of one host (started by "
        "dualchain.deploy.netns; exits when its parent does)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pump")
    p.add_argument("host_fd", type=int)
    p.add_argument("switch_fd", type=int)
    p.add_argument("spec")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    parent = os.getppid()
    with contextlib.suppress(KeyboardInterrupt):
        pump(args.host_fd, args.switch_fd, NetemSpec.parse(args.spec), args.seed,
             alive=lambda: os.getppid() == parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
