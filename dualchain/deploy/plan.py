"""A testbed's plan: ``UpConfig`` (the flags or TOML keys of `dualchain up`), its processes
(``Proc``) and the pure rules that size it (which node a client attaches to, emulated slowdowns,
state changes, proof-of-work difficulty, version 0's hash). ``files.py`` writes it, ``up.py``
runs it, ``compose.py`` and ``swarm.py`` turn it into container stacks."""

from __future__ import annotations

import math
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dualchain.deploy import adversaries
from dualchain.deploy.privacy import dp_problem
from dualchain.learning.plugins import (
    PluginError,
    check_spec,
    import_root,
    is_plugin,
    load_object,
)
from dualchain.runtime.supervisor import Child

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
    # CTBC's committee: its size (0: every node) and the blocks of an epoch, after which a new
    # committee is elected by reputation (a node with misbehaviour on record loses its seat).
    committee_size: int = 0
    epoch_length: int = 100
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
    # Local differential privacy of every client (client.privacy); dp_epsilon 0: off.
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    dp_mechanism: str = "gaussian"
    dp_schedule: str = "constant"
    dp_tasks: int = 0  # tasks each client's budget is planned for; 0: the rounds
    dp_steps: int = 2  # noisy steps per task, each on all of a client's examples
    dp_learning_rate: float = 0.5  # of the noisy steps
    # Clients that also mine CMBC (client.mining): theta = t_T / t_B (seed 004); 0: off
    client_mining: float = 0.0
    # User plug-ins by import path "pkg.module:name" (docs/plugins.md); ``dataset`` may name a
    # loader the same way. "": the built-in model of the dataset, the aggregation rule of ``mode``.
    model: str = ""
    aggregator: str = ""
    # Incentives (docs/incentives.md): "staleness" (seed 000 eq. 2) or "fair" (seed 002 eq.
    # II.4); the micro-units each committed version pays its clients by contribution (0: none).
    aggregation: str = "staleness"
    reward_base: int = 0
    reward_weight: str = "theta_samples"
    # Attacks and defenses (deploy/adversaries.py, docs/threat-model.md)
    defense: str = "none"  # none, pn, cluster, median, trimmed_mean, krum, multi_krum
    watermark: bool = False  # the PN watermark on top of the defense
    defense_params: dict[str, Any] = field(default_factory=dict)  # genesis defense fields
    attack: dict[str, Any] = field(default_factory=dict)  # run by the first `attackers`
    attackers: float = 0.0  # fraction of the clients
    client_attacks: dict[str, Any] = field(default_factory=dict)  # client index -> attack
    node_attacks: dict[str, Any] = field(default_factory=dict)  # node index -> attack

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.clients < 1 or self.miners < 0 or self.rounds < 1:
            raise UpError("nodes, clients and rounds must be at least 1, miners at least 0")
        if type(self.committee_size) is not int or not 0 <= self.committee_size <= self.nodes:
            raise UpError(f"committee_size {self.committee_size!r}: 0 (every node) to nodes "
                          f"({self.nodes})")
        if type(self.epoch_length) is not int or self.epoch_length < 1:
            raise UpError(f"epoch_length {self.epoch_length!r}: at least 1 block")
        if self.mode not in MODES:
            raise UpError(f"mode {self.mode!r}: one of {', '.join(MODES)}")
        if not 0 <= self.stragglers <= 1 or self.straggler_slowdown < 1 or self.spread < 1:
            raise UpError("stragglers must be in [0, 1]; straggler_slowdown and spread >= 1")
        if self.sched_mode not in ("ddmlts", "olar", "equal"):
            raise UpError(f"sched_mode {self.sched_mode!r}: ddmlts, olar or equal")
        if self.chains not in ("dual", "single"):
            raise UpError(f"chains {self.chains!r}: dual or single")
        if not (math.isfinite(self.client_mining) and self.client_mining >= 0):
            raise UpError("client_mining (theta) must be a finite number >= 0 (0: off)")
        if self.client_mining and self.chains != "dual":
            raise UpError("client_mining needs a CMBC (chains = dual)")
        if self.miners == 0 and self.chains == "dual" and not self.client_mining:
            raise UpError("CMBC needs at least one miner (registrations are mined)")
        if self.state_change_s < 0 or self.duration_s < 0:
            raise UpError("state_change_s and duration_s must be at least 0")
        if self.join_nodes < 0 or self.join_clients < 0 or self.join_after < 0:
            raise UpError("join_nodes, join_clients and join_after must be at least 0")
        if self.join_clients and not self.join_nodes:
            raise UpError("join_clients needs join_nodes (the node they attach to)")
        if self.hosts not in ("local", "netns") or (self.netem and self.hosts != "netns"):
            raise UpError(f"hosts {self.hosts!r}: local or netns (netem needs netns)")
        if self.aggregation not in ("staleness", "fair"):
            raise UpError(f"aggregation {self.aggregation!r}: staleness or fair")
        if self.aggregation == "fair" and self.aggregator:
            raise UpError("aggregation fair and a plug-in aggregator exclude each other")
        if type(self.reward_base) is not int or not 0 <= self.reward_base < 2**63:
            raise UpError("reward_base: an integer of micro-units, at least 0")
        if self.reward_weight not in ("theta", "theta_samples"):
            raise UpError(f"reward_weight {self.reward_weight!r}: theta or theta_samples")
        if self.dp_epsilon and (problem := dp_problem(self.client_dp(0))) is not None:
            raise UpError(problem)
        try:
            adversaries.check(self)
        except ValueError as exc:
            raise UpError(str(exc)) from None
        try:
            for what, spec in (("dataset", self.dataset), ("model", self.model),
                               ("aggregator", self.aggregator)):
                if spec and (what != "dataset" or is_plugin(spec)):
                    check_spec(spec, what)
        except PluginError as exc:
            raise UpError(str(exc)) from None
        if is_plugin(self.dataset) and not self.model:
            raise UpError(f"dataset {self.dataset!r} is a plug-in: name its model too (--model)")

    def client_mining_block(self, j: int) -> dict[str, Any] | None:
        """The ``mining`` block of client ``j``'s config (None: the client does not mine)."""
        if not self.client_mining:
            return None
        return {"theta": self.client_mining, "key": f"keys/client-{j}-miner.key",
                "workers": 1, "log": f"logs/client-{j}-miner.log"}

    def client_dp(self, j: int) -> dict[str, Any] | None:
        """The ``dp`` block of client ``j``'s config (None: no privacy)."""
        if not self.dp_epsilon:
            return None
        return {"epsilon": self.dp_epsilon, "delta": self.dp_delta, "clip": self.dp_clip,
                "mechanism": self.dp_mechanism, "schedule": self.dp_schedule,
                "tasks": self.dp_tasks or self.rounds, "steps": self.dp_steps,
                "learning_rate": self.dp_learning_rate, "ledger": f"client-{j}.privacy.json"}

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


def calibrate_difficulty(config: UpConfig) -> int:
    """Expected hashes per block so the configured miners find one per interval on this host."""
    from dualchain.chain.consensus.pow import search_nonce

    count = 100_000
    began = time.perf_counter()
    search_nonce(b"calibrate", bytes(32), 0, count)
    rate = count / (time.perf_counter() - began)
    total = rate * config.miner_workers * config.miner_duty * config.miners
    if config.client_mining:  # every client's miner, one worker at its duty
        from dualchain.client.mining import round_split

        total += rate * round_split(config.client_mining).mining_duty * config.clients
    return max(1000, int(total * config.cmbc_interval_s))


def genesis_model_hash(config: UpConfig, cache: Path | None = None) -> str:
    """Version 0's hash; with ``cache``, the dataset splits the processes load (seed 0 for the
    nodes, the clients' seed) are kept there, made once here (see ``datasets.CACHE_ENV``)."""
    import hashlib

    from dualchain.learning.codec import encode_params
    from dualchain.learning.datasets import DatasetError, load_dataset
    from dualchain.learning.models import build_model, get_flat, param_shapes

    data_dir = Path(config.data_dir) if config.data_dir else None
    try:
        dataset = load_dataset(config.dataset, data_dir, seed=0, cache_dir=cache)
        if cache is not None and config.seed != 0:
            load_dataset(config.dataset, data_dir, seed=config.seed, cache_dir=cache)
        model = build_model(dataset.name, dataset.num_classes, config.seed, model=config.model,
                            input_shape=dataset.input_shape)
    except (DatasetError, PluginError) as exc:
        raise UpError(str(exc)) from None
    blob = encode_params(get_flat(model), param_shapes(model))
    return hashlib.sha256(blob).hexdigest()


def plugin_path(config: UpConfig) -> list[str]:
    """Loads the testbed's plug-ins here (the aggregation rule tried once: ``UpError`` with the
    reason when one cannot work) and returns the folders their packages came from, for the
    processes' PYTHONPATH. A package in the folder `dualchain up` runs in is found too."""
    import sys

    from dualchain.learning.aggregation import load_aggregator

    named = [(what, spec) for what, spec in (("dataset", config.dataset),
                                             ("model", config.model),
                                             ("aggregator", config.aggregator))
             if is_plugin(spec)]
    if named and str(Path.cwd()) not in sys.path and "" not in sys.path:
        sys.path.append(str(Path.cwd()))  # last: never shadows an installed package
    try:
        for what, spec in named:
            load_object(spec, what)
        if config.aggregator:
            load_aggregator(config.aggregator)
    except PluginError as exc:
        raise UpError(str(exc)) from None
    roots = [import_root(spec) for _, spec in named]
    return sorted({str(r) for r in roots if r is not None})
