"""`dualchain up`: a whole testbed on this host, every role its own process.

    dualchain up --nodes 4 --clients 8 --miners 1 --dataset digits --rounds 20 \\
                 --mode fedasync --workdir runs/NAME

1. Plans the testbed (``UpConfig``, from flags or a TOML file with the same keys) and writes its
   files under the workdir: keys, the CTBC genesis (validators = the server nodes, the ``fl``
   section with version 0's hash derived from the model seed), the CMBC genesis (proof-of-work
   difficulty calibrated to this machine's measured hash rate), one JSON config per process.
2. Starts, each as a subprocess with its log in ``logs/`` (through ``dualchain.runtime``'s
   supervisor: they die with the launcher, whatever kills it), in three stages, each waiting
   for its processes' ``ready`` lines: a CTBC daemon and a CMBC daemon per server node; the
   miners and the server nodes; the clients. A workdir whose ``state.json`` names a live process is
   refused.
3. Prints progress per committed model version (accuracy, round time, chain heights, refused
   updates) until ``rounds`` versions are committed (or the timeout, or Ctrl-C).
4. Stops every process it started (SIGTERM, then SIGKILL by PID after a grace period) and writes
   ``report.json``, ``metrics.csv`` and PNG plots (``plots/``).

With ``join_nodes`` > 0, that many more server nodes (each with its CTBC and CMBC replica and
``join_clients`` / ``join_nodes`` clients) are written but left out of the CTBC genesis; they
start once ``join_after`` versions are committed and join through the two stages of seed 000
§3.1 (see ``dualchain.node.server``).

With ``hosts = "netns"`` (``--hosts netns``) each server node's host (its daemons, the node and
the miners on its CMBC) and each node's clients run in Linux network namespaces of their own, on
addresses of their own, with optional link emulation per host (``netem``); see ``netns.py``.

``state.json`` in the workdir names the processes while the testbed runs; ``dualchain status
--workdir D`` reads it (see ``status.py``).
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import psutil

from dualchain.chain.app import Validator
from dualchain.chain.consensus.pow import PowParams
from dualchain.chain.genesis import ConsensusParams, FlParams, Genesis, SchedParams
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.rpc import TlsFiles, open_blocking_channel
from dualchain.deploy.processes import free_ports
from dualchain.deploy.state import busy_reason, write_state
from dualchain.learning.datasets import CACHE_ENV
from dualchain.runtime.supervisor import STOP_GRACE_S, Child, Supervisor

READY_TIMEOUT_S = 180.0
# Roles started together, stage after stage: the chain daemons first (everyone else talks to
# them), then miners and nodes, then the clients (whose torch import comes after their ready
# line, while they register: started with the nodes it took the nodes' CPU). Within a stage
# the interpreters, imports and dataset loads overlap on the machine's cores.
STAGES = (("ctbc", "cmbc"), ("miner", "node"), ("client",))
ROLE_TITLES = {"ctbc": "CTBC daemons", "cmbc": "CMBC daemons", "miner": "miners",
               "node": "server nodes", "client": "clients"}
MODES = ("fedasync", "fedavg", "ddmlts", "semisync")
# How each mode aggregates: (the chain's rule, the aggregator's policy).
MODE_RULES = {"fedasync": ("fedasync", "window"), "fedavg": ("fedavg", "window"),
              "ddmlts": ("fedasync", "plan"), "semisync": ("fedasync", "quorum")}
CTBC_CHAIN = "ctbc-testbed"
CMBC_CHAIN = "cmbc-testbed"


class UpError(RuntimeError):
    pass


@dataclass
class UpConfig:
    nodes: int = 4
    clients: int = 8
    miners: int = 1
    dataset: str = "digits"
    data_dir: str | None = None
    rounds: int = 20
    mode: str = "fedasync"
    workdir: str = "runs/default"
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    batches: int = 20
    batch_size: int = 64
    learning_rate: float = 0.05
    min_updates: int = 0  # 0: half the clients
    window_s: float = 3.0
    max_staleness: int = 8
    algorithm: str = "ML-DSA-44"
    timeout_s: float = 600.0
    slowdowns: list[float] = field(default_factory=list)  # per client; empty: from stragglers
    stragglers: float = 0.0  # fraction of clients (the last ones) slowed straggler_slowdown x;
    straggler_slowdown: float = 8.0  # the others spread evenly over 1x..spread
    spread: float = 2.0
    quorum: float = 0.5  # semisync: the fraction of clients a round waits for
    deadline_s: float = 30.0  # ddmlts and semisync: a round waits at most this long
    sched_alpha: float = 1.0  # ddmlts: eq. 13's balancing factor
    k_max: int = 4  # ddmlts: at most this many client groups (Algorithm 1)
    sched_mode: str = "ddmlts"  # how a plan sizes tasks: ddmlts, olar (the optimum) or equal
    miner_workers: int = 1
    miner_duty: float = 0.2
    cmbc_interval_s: float = 1.0
    finality_depth: int = 3
    metrics: bool = False  # a Prometheus endpoint per process
    state_change_s: float = 0.0  # > 0: about this often a random client's slowdown changes
    duration_s: float = 0.0  # > 0: run this long (rounds then do not stop the run)
    chains: str = "dual"  # "single": management transactions on CTBC, no CMBC (Table 5)
    join_nodes: int = 0  # server nodes that join the running testbed (not in the genesis)
    join_clients: int = 0  # clients attached to the joining nodes, started with them
    join_after: int = 3  # the joiners start once this many versions are committed
    tls: bool = False  # mutual TLS on every channel (certificates under WORKDIR/tls)
    # "netns": each node's host (daemons, node, miners) and each node's clients in a network
    # namespace of their own, with link specs per host pattern in ``netem`` (see netns.py)
    hosts: str = "local"
    netem: dict[str, Any] = field(default_factory=dict)  # e.g. {"node-1": "delay=50ms"}
    netem_backend: str = "auto"  # tc netem where the kernel has it, else userspace; or force

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.clients < 1 or self.miners < 0 or self.rounds < 1:
            raise UpError("nodes, clients and rounds must be at least 1, miners at least 0")
        if self.mode not in MODES:
            raise UpError(f"mode {self.mode!r}: one of {', '.join(MODES)}")
        if not 0 <= self.stragglers <= 1 or self.straggler_slowdown < 1 or self.spread < 1:
            raise UpError("stragglers must be in [0, 1]; straggler_slowdown and spread >= 1")
        if self.sched_mode not in ("ddmlts", "olar", "equal"):
            raise UpError(f"sched_mode {self.sched_mode!r}: ddmlts, olar or equal")
        if self.chains not in ("dual", "single"):
            raise UpError(f"chains {self.chains!r}: dual or single")
        if self.miners == 0 and self.chains == "dual":
            raise UpError("CMBC needs at least one miner (registrations are mined)")
        if self.state_change_s < 0 or self.duration_s < 0:
            raise UpError("state_change_s and duration_s must be at least 0")
        if self.join_nodes < 0 or self.join_clients < 0 or self.join_after < 0:
            raise UpError("join_nodes, join_clients and join_after must be at least 0")
        if self.join_clients and not self.join_nodes:
            raise UpError("join_clients needs join_nodes (the node they attach to)")
        if self.hosts not in ("local", "netns") or (self.netem and self.hosts != "netns"):
            raise UpError(f"hosts {self.hosts!r}: local or netns (netem needs netns)")

    @classmethod
    def from_toml(cls, path: Path, overrides: dict[str, Any]) -> UpConfig:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UpError(f"config {path}: {exc}") from exc
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UpError(f"config {path}: unknown keys {', '.join(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


@dataclass
class Proc:
    name: str
    role: str
    argv: list[str]
    child: Child | None = None  # its current run, started by the supervisor
    ready: dict[str, Any] | None = None
    address: str = ""
    late: bool = False  # a joining node's process: started by start_joiners()

    @property
    def popen(self) -> Any:
        """The ``subprocess.Popen`` of its current run (None before the first)."""
        return self.child.popen if self.child is not None else None


def client_node(config: UpConfig, j: int) -> int:
    """The server node client ``j`` is attached to (a joining one's for the joiners' clients)."""
    if j < config.clients:
        return j % config.nodes
    return config.nodes + (j - config.clients) % config.join_nodes


def c_gmax(groups: dict[str, float]) -> float:
    """Seed 000 eq. 14 for one version: the mean over groups of each group's longest
    completion time (of the tasks the version includes)."""
    return round(sum(groups.values()) / len(groups), 3) if groups else 0.0


def client_slowdowns(config: UpConfig) -> list[float]:
    """Each client's emulated slowdown: ``slowdowns`` where given; otherwise the last
    ``stragglers`` fraction at ``straggler_slowdown`` and the rest spread over 1x..``spread``."""
    if config.slowdowns:
        return [config.slowdowns[j] if j < len(config.slowdowns) else 1.0
                for j in range(config.clients)]
    slow = round(config.stragglers * config.clients)
    fast = config.clients - slow
    spread = [1.0 + (config.spread - 1.0) * j / max(fast - 1, 1) for j in range(fast)]
    return [round(x, 3) for x in spread] + [config.straggler_slowdown] * slow


def state_changes(config: UpConfig, clients: int) -> list[list[list[float]]]:
    """Per client, its [at_s, slowdown] changes: about every ``state_change_s`` (uniform in
    0.5x..1.5x) a random client gets a new slowdown in 1..straggler_slowdown, seeded, over
    ``duration_s`` (or ``timeout_s``). Empty lists without ``state_change_s``."""
    import random

    out: list[list[list[float]]] = [[] for _ in range(clients)]
    if config.state_change_s <= 0:
        return out
    rng = random.Random(f"state-changes/{config.seed}")
    horizon = config.duration_s or config.timeout_s
    at = 0.0
    while True:
        at += config.state_change_s * rng.uniform(0.5, 1.5)
        if at >= horizon:
            return out
        client = rng.randrange(clients)
        out[client].append([round(at, 1), round(rng.uniform(1.0, config.straggler_slowdown), 2)])


def _calibrate_difficulty(config: UpConfig) -> int:
    """Expected hashes per block so the configured miners find one per interval on this host."""
    from dualchain.chain.consensus.pow import search_nonce

    count = 100_000
    began = time.perf_counter()
    search_nonce(b"calibrate", bytes(32), 0, count)
    rate = count / (time.perf_counter() - began)
    total = rate * config.miner_workers * config.miner_duty * config.miners
    return max(1000, int(total * config.cmbc_interval_s))


def _genesis_model_hash(config: UpConfig, cache: Path | None = None) -> str:
    """Version 0's hash; with ``cache``, the dataset splits the processes load (seed 0 for the
    nodes, the clients' seed) are kept there, made once here (see ``datasets.CACHE_ENV``)."""
    import hashlib

    from dualchain.learning.codec import encode_params
    from dualchain.learning.datasets import load_dataset
    from dualchain.learning.models import build_model, get_flat, param_shapes

    data_dir = Path(config.data_dir) if config.data_dir else None
    dataset = load_dataset(config.dataset, data_dir, seed=0, cache_dir=cache)
    if cache is not None and config.seed != 0:
        load_dataset(config.dataset, data_dir, seed=config.seed, cache_dir=cache)
    model = build_model(dataset.name, dataset.num_classes, config.seed)
    blob = encode_params(get_flat(model), param_shapes(model))
    return hashlib.sha256(blob).hexdigest()


class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, config: UpConfig, progress=None) -> None:
        if config.data_dir is not None:  # process configs live in the workdir: no relative path
            config = replace(config, data_dir=str(Path(config.data_dir).resolve()))
        self.config = config
        self.workdir = Path(config.workdir).resolve()
        self.progress = progress or (lambda line: print(line, flush=True))
        self.procs: list[Proc] = []
        self.events: queue.Queue[tuple[Proc, dict[str, Any]]] = queue.Queue()
        self.supervisor = Supervisor(self.events)  # every event line arrives in self.events
        self.env: dict[str, str] = {}  # what the processes' environment adds to ours
        self.versions: dict[int, dict[str, Any]] = {}
        self.started = 0.0
        self.client_tasks: dict[str, int] = {}
        self.plans: list[dict[str, Any]] = []  # the task plans the nodes submitted (ddmlts)
        self.cpu: dict[str, float] = {}
        self._last_event: dict[str, Any] = {}
        self.history: list[tuple[Proc, dict[str, Any]]] = []  # every event, in arrival order
        self.tls: TlsFiles | None = None  # the launcher's own certificate with config.tls
        self.network: Any = None  # with hosts = "netns": the netns.Network, built at 1st launch

    # -- files -----------------------------------------------------------------------------------

    def write(self) -> None:
        c = self.config
        busy = busy_reason(self.workdir)
        if busy is not None:  # its processes hold the ports and files a new one would take
            raise UpError(busy)
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        keys = self.workdir / "keys"
        keys.mkdir(parents=True, mode=0o700)
        (self.workdir / "logs").mkdir()
        alg = Algorithm.parse(c.algorithm)
        n, m, k = c.nodes, c.miners, c.clients
        total, all_clients = n + c.join_nodes, k + c.join_clients
        ctbc, cmbc, node_addr = self._listen_addresses(total)
        metric_ports = self._metrics_ports(3 * total)
        # Miners' and clients' metrics endpoints (after the daemons' and nodes').
        more_ports = self._metrics_ports(m + all_clients)
        node_keys = []
        for i in range(total):
            signer = Signer.generate(alg)
            signer.save(keys / f"node-{i}.key")
            Signer.generate(alg).save(keys / f"cmbc-{i}.key")
            node_keys.append(signer)
        for j in range(m):
            Signer.generate(alg).save(keys / f"miner-{j}.key")
        for j in range(all_clients):
            Signer.generate(alg).save(keys / f"client-{j}.key")
        now = time.time_ns() // 1_000_000
        rule, policy = MODE_RULES[c.mode]
        single = c.chains == "single"
        sched = SchedParams(mode=c.sched_mode, k_max=c.k_max, alpha=c.sched_alpha,
                            batches_per_client=c.batches, upper=c.batches * 8,
                            batch_size=c.batch_size) if policy == "plan" else None
        cache = self.workdir / "cache"  # the processes' dataset cache (their environment says)
        self.env[CACHE_ENV] = str(cache)
        fl = FlParams(dataset=c.dataset, model_seed=c.seed,
                      model_hash=_genesis_model_hash(c, cache),
                      mode=rule, max_staleness=c.max_staleness)
        Genesis(
            chain_id=CTBC_CHAIN, kind="ctbc", algorithm=alg, genesis_time_ms=now,
            validators=tuple(Validator(s.id, s.public_key, a)
                             for s, a in zip(node_keys[:n], ctbc[:n], strict=True)),
            consensus=ConsensusParams(committee_size=n, block_interval_ms=300,
                                      timeout_propose_ms=2000, timeout_prevote_ms=1000,
                                      timeout_precommit_ms=1000, timeout_delta_ms=500),
            fl=fl, single_chain=single, sched=sched if single else None,
        ).save(self.workdir / "ctbc-genesis.json")
        # Single-chain mode: what the nodes and clients know as "cmbc" is their CTBC daemon.
        cmbc_genesis = "ctbc-genesis.json" if single else "cmbc-genesis.json"
        if single:
            cmbc = ctbc
        else:
            Genesis(
                chain_id=CMBC_CHAIN, kind="cmbc", algorithm=alg, genesis_time_ms=now,
                validators=(),
                pow=PowParams(initial_difficulty=_calibrate_difficulty(c),
                              block_interval_ms=int(c.cmbc_interval_s * 1000),
                              retarget_interval=10, finality_depth=c.finality_depth),
                sched=sched,
            ).save(self.workdir / "cmbc-genesis.json")
        py = [sys.executable, "-m", "dualchain.deploy.cli"]
        for i in range(total):
            late = i >= n  # a joiner: its replicas know the genesis nodes' daemons as peers
            for kind, addrs, key, port in (("ctbc", ctbc, f"keys/node-{i}.key", metric_ports[i]),
                                           ("cmbc", cmbc, f"keys/cmbc-{i}.key",
                                            metric_ports[total + i]))[: 1 if single else 2]:
                self._json(f"{kind}-{i}.json", {
                    "kind": kind, "genesis": f"{kind}-genesis.json", "key": key,
                    "data_dir": f"data/{kind}-{i}", "listen": addrs[i],
                    "peers": [a for a in addrs[:n] if a != addrs[i]], "metrics_port": port,
                })
                self.procs.append(Proc(f"{kind}-{i}", kind, [
                    *py, "chain", "--kind", kind, "--config", f"{kind}-{i}.json",
                    "--log-level", "WARNING"], address=addrs[i], late=late))
        for j in range(0 if single else m):
            self.procs.append(Proc(f"miner-{j}", "miner", [
                *py, "miner", "--cmbc", cmbc[j % n], "--key", f"keys/miner-{j}.key",
                "--workers", str(c.miner_workers), "--duty", str(c.miner_duty),
                "--metrics-port", str(more_ports[j]), "--log-level", "WARNING"],
                address=cmbc[j % n]))
        nodes_map = {s.id.hex(): a for s, a in zip(node_keys[:n], node_addr, strict=False)}
        min_updates = c.min_updates or max(1, c.clients // 2)
        for i in range(total):
            late = i >= n
            self._json(f"node-{i}.json", {
                "key": f"keys/node-{i}.key", "listen": node_addr[i], "ctbc": ctbc[i],
                "cmbc": cmbc[i], "ctbc_genesis": "ctbc-genesis.json",
                "cmbc_genesis": cmbc_genesis,
                "nodes": {**nodes_map, node_keys[i].id.hex(): node_addr[i]},
                "dataset": c.dataset, "data_dir": c.data_dir,
                "task": {"batches": c.batches, "batch_size": c.batch_size,
                         "learning_rate": c.learning_rate},
                "aggregation": {"min_updates": min_updates, "window_s": c.window_s,
                                "policy": policy, "quorum": c.quorum,
                                "deadline_s": c.deadline_s},
                "metrics_port": metric_ports[2 * total + i], "join": late,
                # The genesis nodes vote in exactly the joiners this testbed planned.
                "admit": [s.id.hex() for s in node_keys[n:]],
            })
            self.procs.append(Proc(f"node-{i}", "node", [
                *py, "node", "--config", f"node-{i}.json", "--log-level", "WARNING"],
                address=node_addr[i], late=late))
        changes = state_changes(c, all_clients)
        for j in range(all_clients):
            late = j >= k
            i = client_node(c, j)
            self._json(f"client-{j}.json", {
                **self._client_config(j, i, node_addr[i], node_keys[i].id.hex(), cmbc[i]),
                "slowdown_changes": changes[j], "metrics_port": more_ports[m + j]})
            self.procs.append(Proc(f"client-{j}", "client", [
                *py, "client", "--config", f"client-{j}.json", "--log-level", "WARNING"],
                address=node_addr[i], late=late))
        if c.tls:  # a certificate per process, their configs' tls sections, miner flags
            from dualchain.deploy.certs import secure_testbed

            self.tls = secure_testbed(self.workdir, self.procs)
        self._json("up.json", asdict(c))

    def _listen_addresses(self, total: int) -> tuple[list[str], list[str], list[str]]:
        """The CTBC daemons', CMBC daemons' and server nodes' listen addresses: free ports of
        127.0.0.1 here, or of node I's namespace with ``hosts = "netns"``; a container testbed
        (``compose.py``) names its services instead."""
        ports = free_ports(3 * total)
        ip = ["127.0.0.1"] * total
        if self.config.hosts == "netns":
            ip = [self._plan_network(total).address(f"node-{i}") for i in range(total)]
        return ([f"{ip[i]}:{p}" for i, p in enumerate(ports[:total])],
                [f"{ip[i]}:{p}" for i, p in enumerate(ports[total : 2 * total])],
                [f"{ip[i]}:{p}" for i, p in enumerate(ports[2 * total :])])

    # -- hosts = "netns" ---------------------------------------------------------------------------

    def _plan_network(self, total: int) -> Any:
        """Plans host "node-I" (node I's daemons, node and miners) and "clients-I" (its clients)
        as network namespaces; they are created at the first launch (``_exec_prefix``)."""
        from dualchain.deploy import netns

        if self.network is None:
            c = self.config
            clients = sorted({client_node(c, j) for j in range(c.clients + c.join_clients)})
            names = [f"node-{i}" for i in range(total)] + [f"clients-{i}" for i in clients]
            try:
                self.network = netns.prepare(netns.run_prefix(str(self.workdir)), names,
                                             c.netem, c.netem_backend)
            except netns.NetnsError as exc:
                raise UpError(str(exc)) from exc
        return self.network

    def _host_of(self, proc: Proc) -> str:
        """The host (namespace) that runs ``proc``: a miner with the node whose CMBC it mines on."""
        index = int(proc.name.rpartition("-")[2])
        if proc.role == "client":
            return f"clients-{client_node(self.config, index)}"
        return f"node-{index % self.config.nodes if proc.role == 'miner' else index}"

    def _exec_prefix(self, proc: Proc) -> list[str]:
        """``ip netns exec NS`` for a process of a netns testbed (the namespaces are created at
        the first launch and torn down by ``stop``, or at exit); nothing locally."""
        if self.network is None:
            return []
        from dualchain.deploy.netns import NetnsError

        if not self.network.created:
            try:
                self.network.create()
            except NetnsError as exc:
                raise UpError(str(exc)) from exc
            self._json("network.json", self.network.describe())
            self.progress(f"  network namespaces {self.network.plan.prefix}-*: " + ", ".join(
                f"{h.name} {h.address}" + (f" ({h.netem}, {self.network.links[h.name]})"
                                           if h.netem else "")
                for h in self.network.plan.hosts))
        return self.network.exec_prefix(self._host_of(proc))

    def _metrics_ports(self, count: int) -> list[int]:
        """``count`` metrics ports: free ones with ``metrics``, else 0 (no endpoint)."""
        return free_ports(count) if self.config.metrics else [0] * count

    def _client_config(self, j: int, i: int, node: str, node_id: str,
                       cmbc: str) -> dict[str, Any]:
        c = self.config
        slowdown = client_slowdowns(c)[j] if j < c.clients else 1.0
        return {
            "key": f"keys/client-{j}.key", "node": node, "node_id": node_id, "cmbc": cmbc,
            "ctbc_chain_id": CTBC_CHAIN,
            "cmbc_chain_id": CTBC_CHAIN if c.chains == "single" else CMBC_CHAIN,
            "dataset": c.dataset,
            "data_dir": c.data_dir,
            "partition": {"scheme": c.partition, "clients": c.clients + c.join_clients,
                          "index": j,
                          "seed": c.seed, "alpha": c.alpha},
            "seed": c.seed + j, "threads": 1, "slowdown": slowdown, "label": f"client-{j}",
        }

    def _json(self, name: str, data: dict[str, Any]) -> None:
        (self.workdir / name).write_text(json.dumps(data, indent=2) + "\n")

    # -- processes -------------------------------------------------------------------------------

    def _launch(self, proc: Proc) -> None:
        """Starts ``proc`` under the supervisor: its event lines arrive in ``self.events``, it
        dies with this launcher (see dualchain.runtime)."""
        if proc.child is not None:
            self.supervisor.forget(proc.child)  # a restart: the last run has exited
        proc.child = self.supervisor.spawn(
            proc.name, [*self._exec_prefix(proc), *proc.argv], cwd=self.workdir,
            log=self.workdir / "logs" / f"{proc.name}.log", key=proc, env=self.env)

    def _start_stage(self, roles: tuple[str, ...], late: bool = False,
                     announce: Any = None) -> None:
        """Starts every process of ``roles`` at once and waits for their ready lines;
        ``announce(role)`` is called as each role's processes are all ready."""
        group = [p for p in self.procs if p.role in roles and p.late == late]
        for proc in group:
            self._launch(proc)
        waiting = [r for r in roles if any(p.role == r for p in group)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiting:
            proc, event = self._next_event(deadline)
            if event["event"] == "ready" and proc in group:
                proc.ready = event
            for role in [r for r in waiting
                         if all(p.ready is not None for p in group if p.role == r)]:
                waiting.remove(role)
                if announce is not None:
                    announce(role)
        self._write_state(running=True)

    def _next_event(self, deadline: float) -> tuple[Proc, dict[str, Any]]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [p.name for p in self.procs if p.popen and p.ready is None]
                raise UpError(f"timed out waiting (not ready: {missing}); see "
                              f"{self.workdir / 'logs'}")
            try:
                proc, event = self.events.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if event["event"] == "exited" and proc.popen is not None and \
                    event["pid"] != proc.popen.pid:
                continue  # an earlier run of a restarted process
            if event["event"] == "exited" and proc.ready is None:
                raise UpError(f"{proc.name} exited with code {event['code']} before it was "
                              f"ready; see {self.workdir / 'logs' / (proc.name + '.log')}")
            self._observe(proc, event)
            self.history.append((proc, event))
            return proc, event

    def _observe(self, proc: Proc, event: dict[str, Any]) -> None:
        if event["event"] == "version":
            v = event["version"]
            known = self.versions.get(v)
            if known is None:
                # Round time as the launcher sees it: since the previous version was committed
                # (version 1: since the clients were all ready).
                elapsed = round(event["time"] - self.started, 3)
                previous = max((e["elapsed_s"] for k, e in self.versions.items() if k < v),
                               default=0.0)
                event = {**event, "elapsed_s": elapsed, "node": proc.name,
                         "round_s": round(elapsed - previous, 3),
                         "c_groups_s": dict(event.get("c_groups_s", {}))}
                event["c_gmax_s"] = c_gmax(event["c_groups_s"])
                self.versions[v] = event
                self._print_version(event)
            else:
                merged = known.setdefault("c_groups_s", {})
                for group, seconds in event.get("c_groups_s", {}).items():
                    merged[group] = max(merged.get(group, 0.0), seconds)
                known["c_gmax_s"] = c_gmax(merged)
        elif event["event"] == "task":
            self.client_tasks[proc.name] = self.client_tasks.get(proc.name, 0) + 1
        elif event["event"] == "plan":
            self.plans.append({**event, "node": proc.name})
            spans = ", ".join(f"{g['planned_s']:.2f}s" for g in event["groups"])
            regrouped = f" (regrouped: {event['regrouped']})" if event["regrouped"] else ""
            self.progress(f"  plan after version {event['version']} from {proc.name}: "
                          f"{len(event['groups'])} group(s){regrouped}, batches "
                          f"{event['batches']}, planned makespans {spans}")
        elif event["event"] == "join":
            self.progress(f"  {proc.name}: join {event['stage']}")
        elif event["event"] == "exited":
            self.progress(f"  {proc.name} exited with code {event['code']}")

    def _print_version(self, event: dict[str, Any]) -> None:
        status = self._chain_heights()
        self.progress(
            f"  version {event['version']:3d}  accuracy {event['accuracy']:.4f}  "
            f"loss {event['loss']:.4f}  round {event['round_s']:5.2f}s  "
            f"updates {event['included']:2d}  t={event['elapsed_s']:6.1f}s  "
            f"CTBC h{status.get('ctbc', '?')}"
            f"{'' if self.config.chains == 'single' else '  CMBC h' + str(status.get('cmbc', '?'))}"
            f"  refused {status.get('refused', 0)}")

    def _chain_heights(self) -> dict[str, Any]:
        from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc, node_pb2, node_pb2_grpc

        out: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            for role in ("ctbc", "cmbc"):
                proc = next((p for p in self.procs if p.role == role), None)
                if proc is None:
                    continue  # single-chain mode: no CMBC
                with open_blocking_channel(proc.address, self.tls) as ch:
                    st = chain_pb2_grpc.ChainServiceStub(ch).GetStatus(
                        chain_pb2.GetStatusRequest(), timeout=2)
                    out[role] = st.height
            refused, sent = 0, 0
            for proc in (p for p in self.procs if p.role == "node"):
                with open_blocking_channel(proc.address, self.tls) as ch:
                    st = node_pb2_grpc.NodeServiceStub(ch).GetNodeStatus(
                        node_pb2.NodeStatusRequest(), timeout=2)
                    refused += sum(st.updates_refused.values())
                    sent += st.bytes_from_clients + st.bytes_to_clients + st.bytes_relayed
            out["refused"] = refused
            out["bytes_sent"] = sent
        return out

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def start_roles(self, roles: tuple[str, ...] | None = None,
                    announce: Any = None) -> None:
        """Starts the processes of ``roles`` (all of them by default), stage after stage
        (``STAGES``), each stage waiting for its ready lines; ``announce(role)`` as each
        role is ready."""
        self.started = time.time()
        for stage in STAGES:
            wanted = tuple(r for r in stage if roles is None or r in roles)
            if wanted:
                self._start_stage(wanted, announce=announce)

    def start_joiners(self) -> None:
        """Starts the joining nodes' processes (replicas, then node and clients); each node
        asks to join on its own (seed 000 §3.1)."""
        for stage in STAGES:
            self._start_stage(stage, late=True)

    def kill(self, name: str) -> None:
        """SIGKILL one process (by its PID)."""
        proc = self.proc(name)
        assert proc.child is not None
        self.supervisor.kill(proc.child)

    def restart(self, name: str, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Starts a stopped process again with the same config; returns its ready event."""
        proc = self.proc(name)
        proc.ready = None
        self._launch(proc)
        self.wait_for(lambda p, e: p is proc and e["event"] == "ready", timeout)
        proc.ready = self._last_event
        return proc.ready

    def wait_for(self, predicate, timeout: float, past: bool = False) -> dict[str, Any]:
        """The next event (process, event) the predicate accepts, or with ``past`` the first
        one already seen; UpError at the timeout."""
        if past:
            for proc, event in self.history:
                if predicate(proc, event):
                    self._last_event = event
                    return event
        deadline = time.monotonic() + timeout
        while True:
            proc, event = self._next_event(deadline)
            if predicate(proc, event):
                self._last_event = event
                return event

    def _metrics_target(self, proc: Proc) -> str | None:
        """Where ``proc`` serves its metrics (host:port), None when it serves none."""
        if proc.role == "miner":
            port = int(proc.argv[proc.argv.index("--metrics-port") + 1])
        else:
            port = int(json.loads((self.workdir / f"{proc.name}.json").read_text())
                       .get("metrics_port", 0))
        if not port:
            return None
        host = (self.network.address(self._host_of(proc)) if self.network is not None
                else "127.0.0.1")
        return f"{host}:{port}"

    def _write_prometheus(self) -> None:
        """With ``metrics``: ``prometheus.yml``, a scrape config of every process, labelled as
        in the compose stack so that its Grafana dashboard reads this testbed too."""
        from dualchain.deploy.compose import prometheus_document, render_yaml

        document = prometheus_document(self.procs, self._metrics_target)
        (self.workdir / "prometheus.yml").write_text(render_yaml(
            document, "Written by dualchain up --metrics: prometheus --config.file=THIS"))

    def _write_state(self, running: bool) -> None:
        if running and self.config.metrics:
            self._write_prometheus()
        write_state(self.workdir, running, [
            {"name": p.name, "role": p.role, "address": p.address,
             "pid": p.child.pid if p.child else None} for p in self.procs])

    def run(self) -> dict[str, Any]:
        c = self.config
        daemons = "CTBC daemon each, single chain" if c.chains == "single" else \
            "CTBC + CMBC daemon each"
        self.progress(f"dualchain up: {c.nodes} server nodes ({daemons}), "
                      f"{c.miners} miner(s), {c.clients} clients, {c.dataset}, mode {c.mode}, "
                      f"{c.rounds} versions; workdir {self.workdir}")
        self.write()
        interrupted = False
        try:
            self.start_roles(announce=lambda role: self.progress(
                f"  {ROLE_TITLES[role]} ready ({time.time() - self.started:.1f}s)"))
            self.started = time.time()
            deadline = time.monotonic() + (c.duration_s or c.timeout_s)
            self.progress("training: one line per committed model version")
            joined = c.join_nodes == 0
            while c.duration_s or max(self.versions, default=0) < c.rounds:
                if c.duration_s and time.monotonic() >= deadline:
                    break
                if not joined and max(self.versions, default=0) >= c.join_after:
                    joined = True
                    self.progress(f"  starting {c.join_nodes} joining node(s) with "
                                  f"{c.join_clients} client(s)")
                    self.start_joiners()
                try:
                    self._next_event(deadline)
                except UpError:
                    if c.duration_s and time.monotonic() >= deadline:
                        break  # the run's planned end
                    raise
        except KeyboardInterrupt:
            interrupted = True
            self.progress("interrupted: stopping the testbed")
        finally:
            self._sample_cpu()
            heights = self._chain_heights()
            self.stop()
        report = self.report(heights, interrupted)
        return report

    def _sample_cpu(self) -> None:
        for proc in self.procs:
            if proc.popen is None:
                continue
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(proc.popen.pid).cpu_times()
                self.cpu[proc.name] = round(times.user + times.system, 2)

    def stop(self) -> None:
        """SIGTERM every process (clients first), then SIGKILL what is left (each process's
        group, by its id) after a grace period."""
        order = ("client", "node", "miner", "cmbc", "ctbc")
        started = [p.child for role in order for p in self.procs
                   if p.role == role and p.child is not None]
        self.supervisor.stop(started, STOP_GRACE_S)
        if started:  # (a testbed refused by write() must not touch the workdir's state)
            self._write_state(running=False)
        if self.network is not None:
            self.network.teardown()  # kills what is left in the namespaces, deletes them

    # -- report ----------------------------------------------------------------------------------

    def report(self, heights: dict[str, Any], interrupted: bool) -> dict[str, Any]:
        from dualchain.deploy.report import write_report

        return write_report(self.workdir, asdict(self.config), self.versions, heights, self.cpu,
                            self.client_tasks, interrupted, self.plans)
