"""The configuration file of one client (FL device) process (JSON).

    {
      "key": "keys/client-0.key",           ML-DSA key file; paths are relative to this file
      "node": "127.0.0.1:7300",             the server node's client API (NodeService)
      "node_id": "<64 hex>",                the server node's identity id, for CLIENT_REGISTER
      "cmbc": "127.0.0.1:7100",             a CMBC daemon (ChainService): registration, reports
      "ctbc_chain_id": "ctbc-local",        chain id signed into every update
      "cmbc_chain_id": "cmbc-local",        chain id of the management transactions
      "dataset": "digits",                  one of learning.datasets.DATASETS, or a plug-in
                                            loader "pkg.module:loader" (docs/plugins.md)
      "model": "",                          a model plug-in "pkg.module:factory" (the genesis's
                                            fl.model); "": the dataset's built-in model
      "data_dir": null,                     dataset files (null: digits ships with scikit-learn)
      "partition": {"scheme": "iid", "clients": 4, "index": 0, "seed": 0, "alpha": 0.5,
                    "shards_per_client": 2},
      "seed": 0,                            this client's randomness (batch order, drops, jitter)
      "threads": 1,                         torch intra-op threads for training
      "slowdown": 1.0,                      >= 1: emulated slower device (see worker.py)
      "slowdown_changes": [[60.0, 4.0]],    from 60 s after start on, slowdown 4 (the client's
                                            state changes mid-run; benchmarks)
      "drop_prob": 0.0,                     probability that a finished update is not uploaded
      "offline": [[30, 60]],                windows [start_s, end_s) after process start
      "report_every": 1,                    tasks between STATE_REPORT transactions
      "max_tasks": null,                    stop after this many trained tasks (null: never)
      "label": "device-0",                  free text in the registration
      "backend": "cryptography",            ML-DSA backend
      "max_update_norm": 100.0,             the chain's L2 bound on an update (genesis fl section)
      "max_buffered": 16,                   local tasks buffered at most while disconnected
      "metrics_port": 0,                    Prometheus endpoint of this process; 0 turns it off
      "tls": {"ca": ..., "cert": ..., "key": ...}   optional: mutual TLS to the node and CMBC
                                            (``dualchain certs``); absent: plaintext
      "watermark": {"length": 4096, "snr_db": 6.0, "threshold": 4.5}   optional: the PN mark
                                            every upload carries (the chain's defense section)
      "attack": {"kind": "sign_flip", "from_version": 2}   optional: an adversary client
                                            (adversary/client.py, docs/threat-model.md)
      "ctbc": "127.0.0.1:7000"              optional: a CTBC daemon a lazy client copies from
      "dp": {"epsilon": 8, "delta": 1e-5, "clip": 1.0, "mechanism": "gaussian",
             "schedule": "constant", "tasks": 20, "ledger": "client-0.privacy.json"}
                                            optional: local differential privacy
                                            (``client.privacy``); absent: no noise
      "mining": {"theta": 1.0, "key": "keys/client-0-miner.key", "workers": 1,
                 "log": "logs/client-0-miner.log"}
                                            optional: the client also mines CMBC for its own
                                            identity's account (``client.mining``)
    }

The partition block must be the same for every client of an experiment except ``index``: each
client recomputes the same split and keeps its own part. ``partition.seed`` also seeds the
dataset's train/test split (``digits``), so clients and server nodes see the same split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dualchain.adversary.client import ClientAttack
from dualchain.chain.daemon.config import ConfigError, parse_tls, read_json_object
from dualchain.chain.mldsa import BACKENDS, DEFAULT_BACKEND
from dualchain.chain.rpc import TlsFiles
from dualchain.client.attack import parse_attack, parse_watermark
from dualchain.client.mining import MiningSettings
from dualchain.client.privacy import DpSettings
from dualchain.learning.datasets import DATASETS
from dualchain.learning.partition import SCHEMES
from dualchain.learning.plugins import PluginError, check_spec, is_plugin
from dualchain.learning.watermark import WatermarkParams

MAX_LABEL_BYTES = 256  # apps.cmbc.payloads.MAX_LABEL

_KEYS = {
    "key", "node", "node_id", "cmbc", "ctbc_chain_id", "cmbc_chain_id", "dataset", "model",
    "data_dir",
    "partition", "seed", "threads", "slowdown", "slowdown_changes", "drop_prob", "offline",
    "report_every",
    "max_tasks", "label", "backend", "max_update_norm", "max_buffered", "metrics_port", "tls",
    "watermark", "attack", "ctbc",
    "dp", "mining",
}
_REQUIRED = ("key", "node", "node_id", "cmbc", "ctbc_chain_id", "cmbc_chain_id", "dataset",
             "partition")
_PARTITION_KEYS = {"scheme", "clients", "index", "seed", "alpha", "shards_per_client"}


@dataclass(frozen=True)
class PartitionSpec:
    scheme: str
    clients: int
    index: int
    seed: int = 0
    alpha: float = 0.5
    shards_per_client: int = 2


@dataclass(frozen=True)
class ClientConfig:
    key: Path
    node: str
    node_id: bytes
    cmbc: str
    ctbc_chain_id: str
    cmbc_chain_id: str
    dataset: str
    partition: PartitionSpec
    model: str = ""  # a model plug-in path; "": the dataset's built-in model
    data_dir: Path | None = None
    seed: int = 0
    threads: int = 1
    slowdown: float = 1.0
    slowdown_changes: tuple[tuple[float, float], ...] = ()  # (from s after start, slowdown)
    drop_prob: float = 0.0
    offline: tuple[tuple[float, float], ...] = ()
    report_every: int = 1
    max_tasks: int | None = None
    label: str = ""
    backend: str = DEFAULT_BACKEND
    max_update_norm: float = 100.0
    max_buffered: int = 16
    metrics_port: int = 0
    tls: TlsFiles | None = None
    dp: DpSettings | None = None
    mining: MiningSettings | None = None  # the client also mines CMBC (client.mining)
    source: Path | None = field(default=None, compare=False)
    watermark: WatermarkParams | None = None
    attack: ClientAttack = field(default_factory=ClientAttack)
    ctbc: str | None = None

    def __post_init__(self) -> None:
        # Also guards values set by overrides (CLI flags) after loading.
        if not (isinstance(self.slowdown, float | int) and math.isfinite(self.slowdown)
                and self.slowdown >= 1.0):
            raise ConfigError(f"slowdown must be a number >= 1.0, got {self.slowdown!r}")
        if not (isinstance(self.drop_prob, float | int) and 0.0 <= self.drop_prob <= 1.0):
            raise ConfigError(f"drop_prob must be a number in [0, 1], got {self.drop_prob!r}")

    @classmethod
    def load(cls, path: Path) -> ClientConfig:
        path = Path(path)
        data = read_json_object(path)
        try:
            return cls.from_json(data, base=path.parent, source=path)
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {exc.reason}") from None

    @classmethod
    def from_json(cls, data: dict[str, Any], base: Path,
                  source: Path | None = None) -> ClientConfig:
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(_KEYS))})")
        missing = [k for k in _REQUIRED if k not in data]
        if missing:
            raise ConfigError(f"missing config keys: {', '.join(missing)}")
        for name in ("key", "node", "cmbc", "ctbc_chain_id", "cmbc_chain_id", "dataset"):
            _string(data, name)
        for name in ("node", "cmbc"):
            _check_address(name, data[name])
        try:
            if is_plugin(data["dataset"]):
                check_spec(data["dataset"], "dataset")
            elif data["dataset"] not in DATASETS:
                raise ConfigError(f"config dataset {data['dataset']!r} is not one of "
                                  f"{', '.join(DATASETS)} (or a plug-in, pkg.module:loader)")
            model = data.get("model", "")
            if model != "":
                check_spec(model, "model")
            elif is_plugin(data["dataset"]):
                raise ConfigError("a dataset plug-in needs a model plug-in (config key 'model')")
        except PluginError as exc:
            raise ConfigError(f"config {exc}") from None
        data_dir = data.get("data_dir")
        if data_dir is not None and (not isinstance(data_dir, str) or not data_dir):
            raise ConfigError("config key 'data_dir' must be a non-empty string or null")
        label = data.get("label", "")
        if not isinstance(label, str) or len(label.encode()) > MAX_LABEL_BYTES:
            raise ConfigError(f"config key 'label' must be a string of at most "
                              f"{MAX_LABEL_BYTES} UTF-8 bytes")
        backend = data.get("backend", DEFAULT_BACKEND)
        if backend not in BACKENDS:
            raise ConfigError(f"config backend {backend!r} is not one of {', '.join(BACKENDS)}")
        max_tasks = data.get("max_tasks")
        if max_tasks is not None:
            max_tasks = _int(data, "max_tasks", minimum=1)
        metrics_port = _int(data, "metrics_port", 0, minimum=0)
        if metrics_port > 65535:
            raise ConfigError(f"config key 'metrics_port' must be a port number (0: off), "
                              f"got {metrics_port}")
        if data.get("ctbc") is not None:
            _check_address("ctbc", _string(data, "ctbc"))
        max_norm = _number(data, "max_update_norm", 100.0)
        if not max_norm > 0:
            raise ConfigError("config key 'max_update_norm' must be positive")
        return cls(
            key=(base / data["key"]).resolve(),
            node=data["node"],
            node_id=_node_id(data["node_id"]),
            cmbc=data["cmbc"],
            ctbc_chain_id=data["ctbc_chain_id"],
            cmbc_chain_id=data["cmbc_chain_id"],
            dataset=data["dataset"],
            model=model,
            partition=_partition(data["partition"]),
            data_dir=None if data_dir is None else (base / data_dir).resolve(),
            seed=_int(data, "seed", 0, minimum=0),
            threads=_int(data, "threads", 1, minimum=1),
            slowdown=_number(data, "slowdown", 1.0),
            slowdown_changes=_slowdown_changes(data.get("slowdown_changes", [])),
            drop_prob=_number(data, "drop_prob", 0.0),
            offline=_offline(data.get("offline", [])),
            report_every=_int(data, "report_every", 1, minimum=1),
            max_tasks=max_tasks,
            label=label,
            backend=backend,
            max_update_norm=max_norm,
            max_buffered=_int(data, "max_buffered", 16, minimum=1),
            metrics_port=metrics_port,
            tls=parse_tls(data.get("tls"), base),
            dp=None if data.get("dp") is None else DpSettings.from_json(data["dp"], base),
            mining=(None if data.get("mining") is None
                    else MiningSettings.from_json(data["mining"], base)),
            source=source,
            watermark=parse_watermark(data.get("watermark")),
            attack=parse_attack(data.get("attack")),
            ctbc=data.get("ctbc"),
        )

    def with_overrides(self, *, slowdown: float | None = None,
                       drop_prob: float | None = None) -> ClientConfig:
        changes: dict[str, Any] = {}
        if slowdown is not None:
            changes["slowdown"] = float(slowdown)
        if drop_prob is not None:
            changes["drop_prob"] = float(drop_prob)
        return replace(self, **changes) if changes else self


def _string(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"config key {name!r} must be a non-empty string")
    return value


def _int(data: dict[str, Any], name: str, default: int | None = None, *,
         minimum: int | None = None, where: str = "config key") -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} {name!r} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{where} {name!r} must be at least {minimum}, got {value}")
    return value


def _number(data: dict[str, Any], name: str, default: float,
            where: str = "config key") -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} {name!r} must be a finite number, got {value!r}")
    return float(value)


def _check_address(name: str, address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"config key {name!r}: {address!r} is not host:port")


def _node_id(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ConfigError("config key 'node_id' must be the server node's id: 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"config key 'node_id' is not hex: {value!r}") from None


def _partition(value: Any) -> PartitionSpec:
    if not isinstance(value, dict):
        raise ConfigError("config key 'partition' must be an object "
                          "{scheme, clients, index, seed, alpha}")
    unknown = sorted(set(value) - _PARTITION_KEYS)
    if unknown:
        raise ConfigError(f"unknown partition keys: {', '.join(unknown)} "
                          f"(known: {', '.join(sorted(_PARTITION_KEYS))})")
    for name in ("scheme", "clients", "index"):
        if name not in value:
            raise ConfigError(f"partition needs {name!r}")
    if value["scheme"] not in SCHEMES:
        raise ConfigError(f"partition scheme {value['scheme']!r} is not one of "
                          f"{', '.join(SCHEMES)}")
    where = "partition key"
    clients = _int(value, "clients", minimum=1, where=where)
    index = _int(value, "index", minimum=0, where=where)
    if index >= clients:
        raise ConfigError(f"partition index {index} is not below clients ({clients})")
    alpha = _number(value, "alpha", 0.5, where=where)
    if not alpha > 0:
        raise ConfigError(f"partition alpha must be positive, got {alpha}")
    return PartitionSpec(
        scheme=value["scheme"], clients=clients, index=index,
        seed=_int(value, "seed", 0, minimum=0, where=where), alpha=alpha,
        shards_per_client=_int(value, "shards_per_client", 2, minimum=1, where=where),
    )


def _number_pairs(value: Any, key: str, item: str, shape: str) -> list[tuple[float, float]]:
    """A config list of [number, number] pairs, or a ConfigError naming the bad item."""
    if not isinstance(value, list):
        raise ConfigError(f"config key '{key}' must be a list of {shape} pairs")
    pairs = []
    for i, pair in enumerate(value):
        if (not isinstance(pair, list) or len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, int | float)
                       or not math.isfinite(v) for v in pair)):
            raise ConfigError(f"{item} {i} must be {shape} (two numbers)")
        pairs.append((float(pair[0]), float(pair[1])))
    return pairs


def _slowdown_changes(value: Any) -> tuple[tuple[float, float], ...]:
    changes = _number_pairs(value, "slowdown_changes", "slowdown change", "[at_s, slowdown]")
    for i, (at, slowdown) in enumerate(changes):
        if at < 0 or slowdown < 1:
            raise ConfigError(f"slowdown change {i} must be [at_s >= 0, slowdown >= 1]")
    return tuple(sorted(changes))


def _offline(value: Any) -> tuple[tuple[float, float], ...]:
    windows = _number_pairs(value, "offline", "offline window", "[start_s, end_s]")
    for i, (start, end) in enumerate(windows):
        if not 0 <= start < end:
            raise ConfigError(f"offline window {i} [{start}, {end}] needs 0 <= start < end")
    return tuple(sorted(windows))
