"""The configuration file of one server node process (JSON).

    {
      "key": "keys/node-0.key",          the node's ML-DSA key (the same identity as its CTBC
                                          validator: it signs model commits)
      "listen": "127.0.0.1:7300",         the client API and node-to-node relay
      "ctbc": "127.0.0.1:7000",           its own CTBC daemon
      "cmbc": "127.0.0.1:7100",           its own CMBC daemon
      "ctbc_genesis": "ctbc-genesis.json",
      "cmbc_genesis": "cmbc-genesis.json",
      "nodes": {"<node id hex>": "127.0.0.1:7301", ...},   every server node, itself included
      "dataset": "digits", "data_dir": null,
      "task": {"batches": 10, "batch_size": 64, "learning_rate": 0.01},
      "aggregation": {"min_updates": 4, "window_s": 2.0, "fedavg_timeout_s": 60.0,
                      "policy": "window", "quorum": 0.5, "deadline_s": 30.0},
      "aggregator_timeout_s": 20.0,       next node takes over when no version for this long
      "metrics_port": 0,
      "join": false,                      a node outside the CTBC genesis: it asks to join
                                          (seed 000 §3.1) with its listen and ctbc addresses,
                                          and serves clients once admitted
      "admit": ["<node id hex>", ...],    the joiners this node votes in as CTBC validators
                                          (default none; "any": every request it sees)
      "tls": {"ca": ..., "cert": ..., "key": ...},   optional mutual TLS: its server and its
                                          channels to the daemons and other nodes (see
                                          ``dualchain certs``); absent: plaintext
      "adversary": {"strategy": "tamper_model"}   optional: a compromised aggregator
                                          (``dualchain.adversary.node``: "tamper_model",
                                          "poison"); absent: honest
    }

Paths are relative to the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dualchain.adversary.client import AttackConfigError
from dualchain.adversary.node import HONEST_NODE, NodeAttack, make_node_strategy
from dualchain.chain.daemon.config import ConfigError, parse_tls, read_json_object
from dualchain.chain.rpc import TlsFiles


@dataclass(frozen=True)
class TaskParams:
    batches: int = 10
    batch_size: int = 64
    learning_rate: float = 0.01


POLICIES = ("window", "plan", "quorum")


@dataclass(frozen=True)
class AggregationParams:
    """When the aggregator builds the next version (the chain's rule decides what it may
    include). ``policy``: "window" (fedasync), "plan" (ddmlts: every client of the final task
    plan, or the deadline) or "quorum" (semisync: ``quorum`` of the clients, or the deadline).
    A chain in fedavg mode always waits for every client."""

    min_updates: int = 4  # window: aggregate once this many updates wait...
    window_s: float = 2.0  # ...or once the oldest waiting update is this old
    fedavg_timeout_s: float = 60.0  # fedavg: give up waiting for missing clients after this
    policy: str = "window"
    quorum: float = 0.5  # quorum: the fraction of clients whose updates on this version suffice
    deadline_s: float = 30.0  # plan and quorum: aggregate what came this long after the first


@dataclass(frozen=True)
class NodeConfig:
    key: Path
    listen: str
    ctbc: str
    cmbc: str
    ctbc_genesis: Path
    cmbc_genesis: Path
    nodes: dict[bytes, str]
    dataset: str = "digits"
    data_dir: Path | None = None
    task: TaskParams = field(default_factory=TaskParams)
    aggregation: AggregationParams = field(default_factory=AggregationParams)
    aggregator_timeout_s: float = 20.0
    metrics_port: int = 0
    join: bool = False
    admit: frozenset[bytes] | None = frozenset()  # joiners to vote in; None: any
    adversary: NodeAttack = HONEST_NODE
    tls: TlsFiles | None = None

    @classmethod
    def load(cls, path: Path) -> NodeConfig:
        path = Path(path)
        data = read_json_object(path)
        return cls.from_json(data, path.parent)

    @classmethod
    def from_json(cls, data: dict, base: Path) -> NodeConfig:
        known = {"key", "listen", "ctbc", "cmbc", "ctbc_genesis", "cmbc_genesis", "nodes",
                 "dataset", "data_dir", "task", "aggregation", "aggregator_timeout_s",
                 "metrics_port", "join", "admit", "adversary", "tls"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown node config keys: {', '.join(unknown)}")
        for required in ("key", "listen", "ctbc", "cmbc", "ctbc_genesis", "cmbc_genesis"):
            if not isinstance(data.get(required), str) or not data[required]:
                raise ConfigError(f"node config key {required!r} must be a non-empty string")
        nodes = data.get("nodes")
        if not isinstance(nodes, dict) or not nodes:
            raise ConfigError("node config key 'nodes' must map node ids (hex) to addresses")
        try:
            node_map = {bytes.fromhex(k): v for k, v in nodes.items()}
        except ValueError as exc:
            raise ConfigError("node config 'nodes' keys must be hex node ids") from exc
        try:
            task = TaskParams(**data.get("task", {}))
            aggregation = AggregationParams(**data.get("aggregation", {}))
        except TypeError as exc:
            raise ConfigError(f"node config task/aggregation: {exc}") from exc
        if task.batches < 1 or task.batch_size < 1 or not task.learning_rate > 0:
            raise ConfigError("task: batches, batch_size and learning_rate must be positive")
        if aggregation.min_updates < 1 or aggregation.window_s <= 0:
            raise ConfigError("aggregation: min_updates and window_s must be positive")
        if aggregation.policy not in POLICIES:
            raise ConfigError(f"aggregation.policy: {aggregation.policy!r} is not one of "
                              f"{', '.join(POLICIES)}")
        if not 0 < aggregation.quorum <= 1 or aggregation.deadline_s <= 0:
            raise ConfigError("aggregation: quorum must be in (0, 1], deadline_s positive")
        try:
            adversary = make_node_strategy(data.get("adversary"))
        except AttackConfigError as exc:
            raise ConfigError(f"node config: {exc}") from exc
        data_dir = data.get("data_dir")
        admit = _admit(data.get("admit", []))
        return cls(
            key=(base / data["key"]).resolve(),
            listen=data["listen"],
            ctbc=data["ctbc"],
            cmbc=data["cmbc"],
            ctbc_genesis=(base / data["ctbc_genesis"]).resolve(),
            cmbc_genesis=(base / data["cmbc_genesis"]).resolve(),
            nodes=node_map,
            dataset=data.get("dataset", "digits"),
            data_dir=(base / data_dir).resolve() if data_dir else None,
            task=task,
            aggregation=aggregation,
            aggregator_timeout_s=float(data.get("aggregator_timeout_s", 20.0)),
            metrics_port=int(data.get("metrics_port", 0)),
            join=bool(data.get("join", False)),
            admit=admit,
            adversary=adversary,
            tls=parse_tls(data.get("tls"), base),
        )


def _admit(value: object) -> frozenset[bytes] | None:
    """The ``admit`` key: a list of hex node ids, or "any"."""
    if value == "any":
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError("node config key 'admit' must be a list of hex node ids or \"any\"")
    try:
        ids = frozenset(bytes.fromhex(v) for v in value)
    except ValueError as exc:
        raise ConfigError("node config 'admit' entries must be hex node ids") from exc
    if any(len(i) != 32 for i in ids):
        raise ConfigError("node config 'admit' entries must be 32-byte node ids (64 hex digits)")
    return ids
