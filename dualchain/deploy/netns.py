"""A testbed across Linux network namespaces on one machine: each host its own namespace,
address and (optionally) emulated link, so that traffic between hosts crosses a real network
stack and never 127.0.0.1.

    network = prepare(run_prefix(str(workdir)), ["node-0", "node-1", "clients-0"],
                      {"node-1": "delay=50ms"})
    network.create()                                   # torn down at exit, whatever happens
    argv = [*network.exec_prefix("node-0"), sys.executable, "-m", ...]
    ...
    network.teardown()

Layout, for a run prefix P (``dc`` + 6 hex digits of the workdir's hash) and a /24 subnet S of
10.77.0.0/16 that no route of this machine uses yet:

- ``P-switch``: the bridge ``br0``; port ``hI`` for host I, port ``uplink`` to the root namespace;
- ``P-HOST``: ``lo`` and ``eth0`` with address S.(I+2), the other end of port ``hI``; the host's
  processes run in it through ``ip netns exec P-HOST``, which execs (the PID is the process's);
- root namespace: interface ``P`` with S.1, so the launcher, the tests and the benchmarks reach
  every host at its own address.

A host with a link spec (``netem.NetemSpec``) gets ``tc ... netem`` on its ``eth0`` where the
kernel has ``sch_netem``, else a userspace link (TAP pair + pump, see ``netem.py``). Every link
has an MTU of 64 kB like loopback, so a testbed behaves as on one host apart from what the specs
add (and a userspace link moves few, large frames).

``teardown`` (also run at exit) kills every process left in the run's namespaces by PID and
deletes them. ``prepare`` first removes a leftover with the same prefix and any run whose
launcher is dead (the root interface's alias names its PID), e.g. after a SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

from dualchain.deploy.netem import NetemError, NetemSpec, open_tap, resolve

SUBNETS = IPv4Network("10.77.0.0/16")
MTU = 65000
BACKENDS = ("auto", "tc", "userspace")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]{1,9}$")  # the root interface's name: 15 bytes at most


class NetnsError(RuntimeError):
    """Namespaces that cannot be planned, created or removed; the message says why."""


@dataclass(frozen=True)
class Host:
    name: str  # e.g. "node-0", "clients-1"
    namespace: str
    address: str
    index: int
    netem: NetemSpec | None = None


@dataclass(frozen=True)
class NetworkPlan:
    prefix: str
    subnet: IPv4Network
    hosts: tuple[Host, ...]

    @property
    def switch(self) -> str:
        return f"{self.prefix}-switch"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the testbed network."""
        return str(self.subnet[1])

    @property
    def uplink(self) -> str:
        return self.prefix

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise NetnsError(f"no host {name!r} (hosts: {', '.join(h.name for h in self.hosts)})")


def run_prefix(key: str) -> str:
    """The name prefix of one run's namespaces: the same key (a workdir) gives the same prefix,
    so a rerun finds and removes what a crashed run left."""
    return "dc" + hashlib.sha256(key.encode()).hexdigest()[:6]


def choose_subnet(prefix: str, taken: Sequence[IPv4Network]) -> IPv4Network:
    """A /24 of 10.77.0.0/16 overlapping none of ``taken``, starting at one the prefix picks (so
    runs side by side usually start apart)."""
    subnets = list(SUBNETS.subnets(new_prefix=24))
    start = int(hashlib.sha256(prefix.encode()).hexdigest()[:4], 16) % len(subnets)
    for k in range(len(subnets)):
        subnet = subnets[(start + k) % len(subnets)]
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise NetnsError(f"every /24 of {SUBNETS} is in use on this machine")


def plan_network(prefix: str, host_names: Sequence[str],
                 netem: Mapping[str, str | Mapping[str, Any]] | None = None,
                 taken: Sequence[IPv4Network] = ()) -> NetworkPlan:
    """Names and addresses of every namespace, and each host's link spec (pure)."""
    if not _PREFIX.match(prefix):
        raise NetnsError(f"prefix {prefix!r}: 2-10 lower-case letters and digits")
    if len(set(host_names)) != len(host_names):
        raise NetnsError("host names must be distinct")
    for name in host_names:
        if not _NAME.match(name) or name == "switch":
            raise NetnsError(f"host name {name!r}: lower-case letters, digits and '-', not "
                             "'switch'")
    if len(host_names) > 253:
        raise NetnsError("at most 253 hosts on one /24")
    subnet = choose_subnet(prefix, taken)
    try:
        specs = resolve(host_names, netem or {})
    except NetemError as exc:
        raise NetnsError(str(exc)) from exc
    return NetworkPlan(prefix, subnet, tuple(
        Host(name, f"{prefix}-{name}", str(subnet[i + 2]), i, specs.get(name))
        for i, name in enumerate(host_names)))


# -- the machine -----------------------------------------------------------------------------------

@functools.cache
def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here, or None: tries to create one, run a command in it
    and delete it (root alone is not enough in a container without CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"dcprobe{os.getpid()}"
    try:
        for argv in (("ip", "netns", "add", probe), ("ip", "netns", "exec", probe, "true")):
            result = _run(*argv, check=False)
            if result.returncode != 0:
                return f"{' '.join(argv)} failed: {result.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result


def taken_networks() -> list[IPv4Network]:
    """The IPv4 networks of this namespace's addresses and routes (the default route aside)."""
    out = []
    for line in _run("ip", "-4", "-o", "addr", "show").stdout.splitlines():
        match = re.search(r"\binet (\S+)", line)
        if match:
            out.append(ipaddress.ip_interface(match[1]).network)
    for line in _run("ip", "-4", "route", "show").stdout.splitlines():
        first = line.split()[0] if line.split() else "default"
        if first != "default":
            with contextlib.suppress(ValueError):
                out.append(ipaddress.ip_network(first, strict=False))
    return out


def namespaces() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines()
            if line.strip()]


def leftovers(prefix: str) -> list[str]:
    """The namespaces and the root interface of a run's prefix that exist now."""
    found = [ns for ns in namespaces() if ns.startswith(prefix + "-")]
    if _run("ip", "link", "show", "dev", prefix, check=False).returncode == 0:
        found.append(prefix)
    return found


def cleanup(prefix: str) -> list[str]:
    """Kills every process in the prefix's namespaces (SIGKILL by PID), deletes them and the
    root interface; returns what it removed."""
    removed = []
    for ns in (n for n in namespaces() if n.startswith(prefix + "-")):
        _kill_processes(ns)
        _run("ip", "netns", "del", ns, check=False)
        removed.append(ns)
    if _run("ip", "link", "del", "dev", prefix, check=False).returncode == 0:
        removed.append(prefix)
    return removed


def _owner_alias() -> str:
    """What the root interface's alias says about the run that owns it (see ``stale``)."""
    import psutil

    return f"dualchain-netns pid={os.getpid()} started={psutil.Process().create_time():.2f}"


def stale_prefixes() -> list[str]:
    """Prefixes of runs whose launcher is gone (its PID dead or reused), by the alias of their
    root interface: whatever launched them died without its teardown (SIGKILL, a crash)."""
    import json

    import psutil

    stale = []
    for link in json.loads(_run("ip", "-j", "link", "show").stdout or "[]"):
        match = re.match(r"dualchain-netns pid=(\d+) started=([\d.]+)$", link.get("ifalias", ""))
        if not match:
            continue
        try:
            owner = psutil.Process(int(match[1]))
            alive = (abs(owner.create_time() - float(match[2])) < 0.5
                     and owner.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            alive = False
        if not alive:
            stale.append(link["ifname"])
    return stale


def _kill_processes(ns: str) -> None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        pids = [int(p) for p in _run("ip", "netns", "pids", ns, check=False).stdout.split()]
        pids = [p for p in pids if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def prepare(prefix: str, host_names: Sequence[str],
            netem: Mapping[str, str | Mapping[str, Any]] | None = None,
            backend: str = "auto") -> Network:
    """Removes a leftover of this prefix, then plans on a subnet this machine does not use."""
    reason = unavailable_reason()
    if reason:
        raise NetnsError(f"--hosts netns: {reason}")
    for stale in {prefix, *stale_prefixes()}:
        cleanup(stale)
    return Network(plan_network(prefix, host_names, netem, taken_networks()), backend)


@dataclass(eq=False)
class Network:
    """A planned network; ``create`` builds it, ``teardown`` (idempotent) removes it."""

    plan: NetworkPlan
    backend: str = "auto"  # how link specs are applied: tc netem, userspace, or auto (tc if any)
    links: dict[str, str] = field(default_factory=dict, init=False)  # host -> its link's kind
    pump_cpu_s: dict[str, float] = field(default_factory=dict, init=False)  # userspace links
    _pumps: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _created: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise NetnsError(f"netem backend {self.backend!r}: one of {', '.join(BACKENDS)}")

    def __enter__(self) -> Network:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    @property
    def created(self) -> bool:
        return self._created

    def exec_prefix(self, host: str) -> list[str]:
        """The argv prefix that runs a command in ``host``'s namespace."""
        return ["ip", "netns", "exec", self.plan.host(host).namespace]

    def address(self, host: str) -> str:
        return self.plan.host(host).address

    def create(self) -> None:
        if self._created:
            return
        reason = unavailable_reason()
        if reason:
            raise NetnsError(f"--hosts netns: {reason}")
        cleanup(self.plan.prefix)
        self._created = True
        atexit.register(self.teardown)
        try:
            self._create()
        except BaseException:
            self.teardown()
            raise

    def _create(self) -> None:
        p, sw = self.plan, self.plan.switch
        _run("ip", "netns", "add", sw)
        _run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", sw, "link", "set", "br0", "up")
        _run("ip", "link", "add", p.uplink, "mtu", str(MTU), "type", "veth", "peer", "name",
             "uplink", "mtu", str(MTU), "netns", sw)
        _run("ip", "link", "set", "dev", p.uplink, "alias", _owner_alias())
        _run("ip", "-n", sw, "link", "set", "uplink", "master", "br0", "up")
        _run("ip", "addr", "add", f"{p.gateway}/{p.subnet.prefixlen}", "dev", p.uplink)
        _run("ip", "link", "set", p.uplink, "up")
        shaped = any(h.netem for h in p.hosts)
        use_tc = self.backend == "tc" or (self.backend == "auto" and shaped and
                                          self._tc_netem_works())
        for host in p.hosts:
            ns, port = host.namespace, f"h{host.index}"
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            if host.netem and not use_tc:
                self._userspace_link(host, port)
                self.links[host.name] = "userspace"
            else:
                _run("ip", "link", "add", "eth0", "mtu", str(MTU), "netns", ns, "type", "veth",
                     "peer", "name", port, "mtu", str(MTU), "netns", sw)
                self.links[host.name] = "veth"
            _run("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{host.address}/{p.subnet.prefixlen}", "dev",
                 "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            if host.netem and use_tc:
                _run("tc", "-n", ns, "qdisc", "replace", "dev", "eth0", "root",
                     *host.netem.tc_args())
                self.links[host.name] = "veth+netem"

    def _tc_netem_works(self) -> bool:
        sw = self.plan.switch
        probe = _run("tc", "-n", sw, "qdisc", "add", "dev", "uplink", "root", "netem", "delay",
                     "0ms", check=False)
        if probe.returncode == 0:
            _run("tc", "-n", sw, "qdisc", "del", "dev", "uplink", "root", check=False)
        return probe.returncode == 0

    def _userspace_link(self, host: Host, port: str) -> None:
        """A TAP device as the host's eth0 and one as its switch port, and a pump process (in
        the switch namespace) between them that applies the host's spec."""
        assert host.netem is not None
        a, b = f"{self.plan.prefix}t{host.index}a", f"{self.plan.prefix}t{host.index}b"
        fds = [open_tap(a)]
        try:
            fds.append(open_tap(b))
            _run("ip", "link", "set", "dev", a, "netns", host.namespace)
            _run("ip", "-n", host.namespace, "link", "set", "dev", a, "name", "eth0", "mtu",
                 str(MTU))
            _run("ip", "link", "set", "dev", b, "netns", self.plan.switch)
            _run("ip", "-n", self.plan.switch, "link", "set", "dev", b, "name", port, "mtu",
                 str(MTU))
            self._pumps[host.name] = subprocess.Popen(
                ["ip", "netns", "exec", self.plan.switch, sys.executable, "-m",
                 "dualchain.deploy.netem", "pump", str(fds[0]), str(fds[1]), str(host.netem),
                 "--seed", str(host.index)],
                pass_fds=fds, stdin=subprocess.DEVNULL)
        finally:
            for fd in fds:
                os.close(fd)

    def teardown(self) -> None:
        if not self._created:
            return
        self._created = False
        atexit.unregister(self.teardown)
        import psutil

        for name, pump in self._pumps.items():
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pump.pid).cpu_times()
                self.pump_cpu_s[name] = round(times.user + times.system, 2)
            if pump.poll() is None:
                pump.kill()
            pump.wait()
        self._pumps.clear()
        cleanup(self.plan.prefix)

    def describe(self) -> dict[str, Any]:
        """The plan as JSON-ready values (for reports)."""
        return {"prefix": self.plan.prefix, "subnet": str(self.plan.subnet),
                "gateway": self.plan.gateway,
                "hosts": {h.name: {"namespace": h.namespace, "address": h.address,
                                   "netem": str(h.netem) if h.netem else "",
                                   "link": self.links.get(h.name, ""),
                                   **({"pump_cpu_s": self.pump_cpu_s[h.name]}
                                      if h.name in self.pump_cpu_s else {})}
                          for h in self.plan.hosts}}


def interrupt_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt, so a launcher stopped by ``kill`` unwinds its
    ``finally`` blocks and ``atexit`` handlers (the teardown) as after Ctrl-C."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# -- checks ------------------------------------------------------------------------------------

def parse_proc_net_tcp(text: str) -> list[tuple[str, int, str, int]]:
    """The established connections (local address, port, remote address, port) listed in a
    ``/proc/PID/net/tcp`` or ``tcp6`` text; IPv4-mapped IPv6 addresses as IPv4."""
    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or parts[3] != "01":  # 01: TCP_ESTABLISHED
            continue
        local, remote = (_endpoint(p) for p in parts[1:3])
        out.append((*local, *remote))
    return out


def _endpoint(text: str) -> tuple[str, int]:
    address, port = text.split(":")
    if len(address) == 8:
        host = socket.inet_ntoa(struct.pack("<I", int(address, 16)))
    else:
        raw = b"".join(struct.pack("<I", int(address[i : i + 8], 16)) for i in range(0, 32, 8))
        v6 = ipaddress.IPv6Address(raw)
        host = str(v6.ipv4_mapped or v6)
    return host, int(port, 16)


def tcp_connections(pid: int) -> list[tuple[str, int, str, int]]:
    """The established TCP connections of the network namespace that process ``pid`` is in."""
    out = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/net/{name}") as f:
            out += parse_proc_net_tcp(f.read())
    return out
