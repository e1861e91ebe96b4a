"""The configuration file of one chain daemon process (JSON).

    {
      "kind": "ctbc",
      "genesis": "genesis.json",          paths are relative to this file
      "key": "keys/node-0.key",
      "data_dir": "data/node-0",
      "listen": "127.0.0.1:7000",         chain and peer services
      "peers": ["127.0.0.1:7001", ...],   the other replicas' listen addresses
      "metrics_port": 9100,               Prometheus endpoint; 0 turns it off
      "backend": "cryptography",          ML-DSA backend
      "tls": {"ca": "tls/ca.pem",         optional: mutual TLS on the server and every peer
              "cert": "tls/ctbc-0.pem",   link (``dualchain certs``); absent: plaintext
              "key": "tls/ctbc-0.key"},
      "max_pending_wait_ms": 1000,        admission control: refuse client transactions
                                          (code "busy") while the oldest executable pending
                                          one has waited longer; 0 turns it off; absent: the
                                          chain's default (CTBC 1000, CMBC off)
      "blob_quota_per_uploader_bytes": 4294967296,   CTBC with FL: blob bytes each uploader
      "blob_quota_total_bytes": 17179869184,         (a server node) may store, and all of
                                          them together (PutBlob; default 4 GiB and 16 GiB)
      "linear_votes": true,               CTBC: round-0 votes go to the round's collector,
                                          which bundles a quorum to everybody (false: every
                                          vote to every peer)
      "adversary": {"strategy": "equivocate"}   optional, CTBC: a byzantine replica
                                          (``dualchain.adversary.replica``); absent: honest
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dualchain.adversary.client import AttackConfigError
from dualchain.adversary.replica import HONEST, ReplicaStrategy, make_replica_strategy
from dualchain.chain.errors import DualchainError
from dualchain.chain.mldsa import BACKENDS, DEFAULT_BACKEND
from dualchain.chain.rpc import TlsFiles
from dualchain.chain.uploads import QuotaLimits

KINDS = ("ctbc", "cmbc")


class ConfigError(DualchainError):
    """A process config file that is missing, unreadable or wrong; the reason names it."""

    code = "config"


def read_json_object(path: Path) -> dict:
    """The JSON object in a config file (every dualchain process reads its config so)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


TLS_KEYS = ("ca", "cert", "key")


def parse_tls(value: object, base: Path) -> TlsFiles | None:
    """The optional ``tls`` section of a process config (any process: daemon, node, client):
    null or absent for plaintext, else ``{"ca", "cert", "key"}`` PEM paths relative to
    ``base``, each an existing file."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(TLS_KEYS) or not all(
            isinstance(value[k], str) and value[k] for k in TLS_KEYS):
        raise ConfigError("config key 'tls' must be null or {\"ca\", \"cert\", \"key\"}: "
                          "paths of PEM files")
    files = TlsFiles(*((base / value[k]).resolve() for k in TLS_KEYS))
    for name, path in zip(TLS_KEYS, (files.ca, files.cert, files.key), strict=True):
        if not path.is_file():
            raise ConfigError(f"tls.{name}: {path} is not a file")
    return files


@dataclass(frozen=True)
class DaemonConfig:
    kind: str
    genesis: Path
    key: Path
    data_dir: Path
    listen: str
    peers: tuple[str, ...] = ()
    metrics_port: int = 0
    backend: str = DEFAULT_BACKEND
    adversary: ReplicaStrategy = HONEST
    tls: TlsFiles | None = None
    max_pending_wait_ms: int | None = None
    blob_quota: QuotaLimits = field(default_factory=QuotaLimits)
    linear_votes: bool = True
    source: Path | None = field(default=None, compare=False)

    @classmethod
    def load(cls, path: Path) -> DaemonConfig:
        path = Path(path)
        return cls.from_json(read_json_object(path), base=path.parent, source=path)

    @classmethod
    def from_json(cls, data: dict, base: Path, source: Path | None = None) -> DaemonConfig:
        known = {"kind", "genesis", "key", "data_dir", "listen", "peers", "metrics_port",
                 "backend", "adversary", "tls", "max_pending_wait_ms",
                 "blob_quota_per_uploader_bytes", "blob_quota_total_bytes", "linear_votes"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        for required in ("kind", "genesis", "key", "data_dir", "listen"):
            if not isinstance(data.get(required), str) or not data[required]:
                raise ConfigError(f"config key {required!r} must be a non-empty string")
        if data["kind"] not in KINDS:
            raise ConfigError(f"config kind {data['kind']!r} is not one of {', '.join(KINDS)}")
        peers = data.get("peers", [])
        if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
            raise ConfigError("config key 'peers' must be a list of host:port strings")
        for address in [data["listen"], *peers]:
            _check_address(address)
        metrics_port = data.get("metrics_port", 0)
        if not isinstance(metrics_port, int) or not 0 <= metrics_port < 65536:
            raise ConfigError("config key 'metrics_port' must be a port number (0: off)")
        backend = data.get("backend", DEFAULT_BACKEND)
        if backend not in BACKENDS:
            raise ConfigError(f"config backend {backend!r} is not one of {', '.join(BACKENDS)}")
        max_wait = data.get("max_pending_wait_ms")
        if max_wait is not None and (not isinstance(max_wait, int) or isinstance(max_wait, bool)
                                     or max_wait < 0):
            raise ConfigError("config key 'max_pending_wait_ms' must be milliseconds >= 0 "
                              "(0: no admission control)")
        quota = _blob_quota(data)
        linear = data.get("linear_votes", True)
        if not isinstance(linear, bool):
            raise ConfigError("config key 'linear_votes' must be true or false")
        try:
            adversary = make_replica_strategy(data.get("adversary"))
        except AttackConfigError as exc:
            raise ConfigError(str(exc)) from exc
        if adversary is not HONEST and data["kind"] != "ctbc":
            raise ConfigError("config key 'adversary' is for a ctbc replica")
        return cls(
            kind=data["kind"],
            genesis=(base / data["genesis"]).resolve(),
            key=(base / data["key"]).resolve(),
            data_dir=(base / data["data_dir"]).resolve(),
            listen=data["listen"],
            peers=tuple(peers),
            metrics_port=metrics_port,
            backend=backend,
            adversary=adversary,
            tls=parse_tls(data.get("tls"), base),
            max_pending_wait_ms=max_wait,
            blob_quota=quota,
            linear_votes=linear,
            source=source,
        )


def _blob_quota(data: dict) -> QuotaLimits:
    default = QuotaLimits()
    per = data.get("blob_quota_per_uploader_bytes", default.per_uploader_bytes)
    total = data.get("blob_quota_total_bytes", default.total_bytes)
    for name, value in (("blob_quota_per_uploader_bytes", per), ("blob_quota_total_bytes", total)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"config key {name!r} must be a number of bytes >= 1")
    if per > total:
        raise ConfigError("config key 'blob_quota_per_uploader_bytes' must not exceed "
                          "'blob_quota_total_bytes'")
    return QuotaLimits(per, total)


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"address {address!r} is not host:port")
