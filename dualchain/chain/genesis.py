"""The genesis file: everything replicas must agree on before block 1.

A genesis fixes the chain id, the kind of chain, the ML-DSA parameter set, the initial validators,
the consensus timing, the ledger size limits and the reputation weights. It is a JSON file that an
operator writes once and copies to every replica; each replica parses it strictly (an unknown,
missing or mistyped key is refused, so a typo cannot silently fall back to a default on one
replica only) and derives the same genesis block from it.

The genesis hash is SHA-256 of the canonical JSON of the parsed value (sorted keys, no spaces,
ASCII), so it does not depend on key order, indentation or hex case in the file. It is the
genesis block's app hash: two replicas started from different files disagree from block 0 on.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from dualchain.chain.app import Validator
from dualchain.chain.canonical import U64_MAX
from dualchain.chain.consensus.pow import PowParams
from dualchain.chain.errors import DualchainError
from dualchain.chain.genesis_defense import DefenseParams, DefenseParamsError, check_defense
from dualchain.chain.identity import ID_BYTES, identity_id
from dualchain.chain.merkle import EMPTY_ROOT
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import MAX_CHAIN_ID, ZERO_HASH, Block, BlockHeader
from dualchain.chain.validation import LedgerParams

GENESIS_FORMAT = "dualchain-genesis/1"
CHAIN_KINDS = ("ctbc", "cmbc")
MAX_ADDRESS = 255

_LEDGER_DEFAULTS = {f.name: f.default for f in fields(LedgerParams)}


class GenesisError(DualchainError):
    """A genesis file or value that is malformed or inconsistent; the reason names the field."""

    code = "bad_genesis"


@dataclass(frozen=True)
class ConsensusParams:
    """Committee BFT timing and epochs (CTBC). Timeouts grow by ``timeout_delta_ms`` per round."""

    committee_size: int = 4
    epoch_length: int = 100  # blocks per epoch: the committee is fixed within one
    timeout_propose_ms: int = 1000
    timeout_prevote_ms: int = 500
    timeout_precommit_ms: int = 500
    timeout_delta_ms: int = 500
    block_interval_ms: int = 200  # a leader waits this long in a round before proposing
    # While no transaction is pending a height waits (no block, no timeout) for one, as
    # CometBFT's create_empty_blocks = false; N > 0: an empty block after N ms of waiting.
    empty_blocks_interval_ms: int = 0

    def epoch_of(self, height: int) -> int:
        """Epoch e covers heights [e*E + 1, (e+1)*E]; genesis (height 0) counts as epoch 0."""
        return max(height - 1, 0) // self.epoch_length

    def is_epoch_end(self, height: int) -> bool:
        """Whether ``height`` is the last height of its epoch (the next committee is elected)."""
        return height > 0 and height % self.epoch_length == 0


@dataclass(frozen=True)
class ReputationWeights:
    """Weights of the four reputation terms (see ``ctbc.reputation``) and the window in epochs."""

    votes: float = 0.3
    uptime: float = 0.2
    proposals: float = 0.2
    history: float = 0.3
    window_epochs: int = 4

    def __post_init__(self) -> None:
        # Store integral weights as floats so a value built in code hashes like its JSON reload.
        for name in ("votes", "uptime", "proposals", "history"):
            if type(getattr(self, name)) is int:
                object.__setattr__(self, name, float(getattr(self, name)))


@dataclass(frozen=True)
class FlParams:
    """Federated learning on CTBC: the model every replica starts from and the aggregation rule
    every committee member re-executes (see ``ctbc.fl``). Optional: a CTBC without it carries no
    model versions."""

    dataset: str = "digits"
    model_seed: int = 0
    model_hash: str = ""  # hex SHA-256 of version 0's parameter blob (derived from the seed)
    mode: str = "fedasync"  # "fedasync" or "fedavg"
    staleness_rule: str = "eq2"
    staleness_a: float = 0.5
    staleness_b: int = 4
    max_staleness: int = 8
    mixing: float = 1.0
    max_update_norm: float = 100.0
    # User plug-ins (docs/plugins.md): "pkg.module:name", or "" for the built-in. ``dataset``
    # above may name a loader the same way.
    model: str = ""  # the model factory (version 0 is derived from it and model_seed)
    aggregator: str = ""  # the rule every committee member re-executes instead of ``mode``'s


@dataclass(frozen=True)
class SchedParams:
    """Task scheduling on CMBC (seed 000 §4): the inputs of the scheduler every replica
    re-executes to check a group assignment or a task plan. Optional: a CMBC without it refuses
    both. ``mode``: "ddmlts" (eqs. 12-13), "olar" (the makespan optimum) or "equal"."""

    mode: str = "ddmlts"
    k_max: int = 4
    alpha: float = 1.0
    batches_per_client: int = 20  # a group's total work is this times its size
    lower: int = 1
    upper: int = 200
    batch_size: int = 64  # samples per batch: turns a reported speed into batches per second
    # Relative change of a client's speed that triggers re-clustering. Speeds measured on a
    # shared host move by a third with contention alone; half is a real change.
    drift: float = 0.5
    eps_rtt: float = 1 / 3  # eq. 8 weights
    eps_completion: float = 1 / 3
    eps_speed: float = 1 / 3
    history: int = 32  # state reports kept per client (the oldest basis a plan may use)


@dataclass(frozen=True)
class LedgerLimits:
    """The size and clock bounds of ``LedgerParams``, with its defaults."""

    max_tx_bytes: int = _LEDGER_DEFAULTS["max_tx_bytes"]
    max_payload_bytes: int = _LEDGER_DEFAULTS["max_payload_bytes"]
    max_block_txs: int = _LEDGER_DEFAULTS["max_block_txs"]
    max_block_bytes: int = _LEDGER_DEFAULTS["max_block_bytes"]
    max_future_drift_ms: int = _LEDGER_DEFAULTS["max_future_drift_ms"]
    max_tx_age_ms: int = _LEDGER_DEFAULTS["max_tx_age_ms"]


def canonical_json(obj: object) -> bytes:
    """The one JSON serialisation that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    kind: str  # "ctbc" or "cmbc"
    algorithm: Algorithm
    genesis_time_ms: int
    validators: tuple[Validator, ...]
    consensus: ConsensusParams = field(default_factory=ConsensusParams)
    limits: LedgerLimits = field(default_factory=LedgerLimits)
    reputation: ReputationWeights = field(default_factory=ReputationWeights)
    pow: PowParams = field(default_factory=PowParams)  # CMBC only: absent from a CTBC file
    fl: FlParams | None = None  # CTBC only, optional
    defense: DefenseParams | None = None  # CTBC with fl only, optional
    sched: SchedParams | None = None  # CMBC (or a single-chain CTBC) only, optional
    # CTBC only: single-chain mode (seed 000 Table 5's baseline): CMBC's management
    # transactions (registrations, state reports, anchors, groups, plans, joins) go on this
    # chain, and no CMBC runs.
    single_chain: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "validators", tuple(self.validators))
        _check_semantics(self)

    # -- derived values -------------------------------------------------------------------------

    @cached_property
    def hash(self) -> bytes:
        return hashlib.sha256(canonical_json(self.to_json())).digest()

    def ledger_params(self) -> LedgerParams:
        return LedgerParams(self.chain_id, self.algorithm, **asdict(self.limits))

    def genesis_block(self) -> Block:
        """Block 0: unsigned, no transactions, the genesis hash as app hash; same everywhere."""
        header = BlockHeader(
            chain_id=self.chain_id,
            height=0,
            parent_hash=ZERO_HASH,
            tx_root=EMPTY_ROOT,
            timestamp_ms=self.genesis_time_ms,
            proposer=bytes(ID_BYTES),
            app_hash=self.hash,
        )
        return Block(header, ())

    # -- JSON -----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = {
            "format": GENESIS_FORMAT,
            "chain_id": self.chain_id,
            "kind": self.kind,
            "algorithm": self.algorithm.label,
            "genesis_time_ms": self.genesis_time_ms,
            "validators": [
                {"id": v.id.hex(), "public_key": v.public_key.hex(), "address": v.address}
                for v in self.validators
            ],
            "consensus": asdict(self.consensus),
            "limits": asdict(self.limits),
            "reputation": asdict(self.reputation),
        }
        if self.kind == "cmbc":
            data["pow"] = asdict(self.pow)
        if self.fl is not None:
            data["fl"] = asdict(self.fl)
        if self.sched is not None:
            data["sched"] = asdict(self.sched)
        if self.defense is not None:  # (absent otherwise: a genesis hash is unchanged)
            data["defense"] = asdict(self.defense)
        if self.single_chain:  # (absent otherwise: a dual-chain genesis hash is unchanged)
            data["single_chain"] = True
        return data

    @classmethod
    def from_json(cls, data: object) -> Genesis:
        keys = ["format", "chain_id", "kind", "algorithm", "genesis_time_ms", "validators",
                "consensus", "limits", "reputation"]
        if isinstance(data, dict) and data.get("kind") == "cmbc":
            keys.append("pow")
            if "sched" in data:
                keys.append("sched")
        if isinstance(data, dict) and data.get("kind") == "ctbc" and "fl" in data:
            keys.append("fl")
            if "defense" in data:
                keys.append("defense")
        if isinstance(data, dict) and data.get("kind") == "ctbc" and "single_chain" in data:
            keys.append("single_chain")
            if "sched" in data:
                keys.append("sched")
        obj = _object(data, "", keys)
        if obj["format"] != GENESIS_FORMAT:
            raise GenesisError(f"format: is {obj['format']!r}, expected {GENESIS_FORMAT!r}")
        algorithm_label = _string(obj["algorithm"], "algorithm")
        by_label = {a.label: a for a in Algorithm}
        if algorithm_label not in by_label:
            raise GenesisError(
                f"algorithm: unknown parameter set {algorithm_label!r} "
                f"(known: {', '.join(by_label)})"
            )
        raw_validators = obj["validators"]
        if not isinstance(raw_validators, list):
            raise GenesisError("validators: expected a list")
        return cls(
            chain_id=_string(obj["chain_id"], "chain_id"),
            kind=_string(obj["kind"], "kind"),
            algorithm=by_label[algorithm_label],
            genesis_time_ms=_integer(obj["genesis_time_ms"], "genesis_time_ms"),
            validators=tuple(
                _validator(item, f"validators[{i}]") for i, item in enumerate(raw_validators)
            ),
            consensus=_section(ConsensusParams, obj["consensus"], "consensus"),
            limits=_section(LedgerLimits, obj["limits"], "limits"),
            reputation=_section(ReputationWeights, obj["reputation"], "reputation"),
            **({"pow": _section(PowParams, obj["pow"], "pow")} if "pow" in obj else {}),
            **({"fl": _section(FlParams, obj["fl"], "fl")} if "fl" in obj else {}),
            **({"defense": _section(DefenseParams, obj["defense"], "defense")}
               if "defense" in obj else {}),
            **({"sched": _section(SchedParams, obj["sched"], "sched")} if "sched" in obj
               else {}),
            **({"single_chain": _boolean(obj["single_chain"], "single_chain")}
               if "single_chain" in obj else {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> Genesis:
        try:
            data = json.loads(
                Path(path).read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys
            )
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise GenesisError(f"genesis file {path} is unreadable: {exc}") from exc
        return cls.from_json(data)

    def save(self, path: str | Path) -> None:
        text = json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=True)
        Path(path).write_text(text + "\n", encoding="utf-8")


# -- strict parsing ---------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise GenesisError(f"{key}: appears twice in one JSON object")
        obj[key] = value
    return obj


def _object(data: object, path: str, keys: list[str]) -> dict[str, Any]:
    """A JSON object with exactly ``keys``; ``path`` is "" at the top level."""
    if not isinstance(data, dict):
        raise GenesisError(f"{path or 'genesis'}: expected a JSON object")
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in keys:
            raise GenesisError(f"{prefix}{key}: unknown key")
    for key in keys:
        if key not in data:
            raise GenesisError(f"{prefix}{key}: missing")
    return data


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise GenesisError(f"{path}: expected a string, got {type(value).__name__}")
    return value


def _boolean(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise GenesisError(f"{path}: expected true or false")
    return value


def _integer(value: object, path: str) -> int:
    if type(value) is not int:  # bool is an int subclass; refuse it
        raise GenesisError(f"{path}: expected an integer, got {type(value).__name__}")
    return value


def _number(value: object, path: str) -> float:
    if type(value) not in (int, float):
        raise GenesisError(f"{path}: expected a number, got {type(value).__name__}")
    return float(value)  # type: ignore[arg-type]


def _hex(value: object, path: str) -> bytes:
    text = _string(value, path)
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise GenesisError(f"{path}: not a hex string") from exc


def _validator(data: object, path: str) -> Validator:
    obj = _object(data, path, ["id", "public_key", "address"])
    return Validator(
        id=_hex(obj["id"], f"{path}.id"),
        public_key=_hex(obj["public_key"], f"{path}.public_key"),
        address=_string(obj["address"], f"{path}.address"),
    )


def _section(cls: type[Any], data: object, path: str) -> Any:
    """A flat dataclass of ints and floats, typed by its field defaults."""
    names = [f.name for f in fields(cls)]
    obj = _object(data, path, names)
    values: dict[str, Any] = {}
    for f in fields(cls):
        where = f"{path}.{f.name}"
        if isinstance(f.default, float):
            values[f.name] = _number(obj[f.name], where)
        elif isinstance(f.default, str):
            values[f.name] = _string(obj[f.name], where)
        else:
            values[f.name] = _integer(obj[f.name], where)
    return cls(**values)


# -- semantic checks (also run for values built in code) ---------------------------------------


def _check_semantics(g: Genesis) -> None:
    if not isinstance(g.chain_id, str) or not g.chain_id:
        raise GenesisError("chain_id: must be a non-empty string")
    if len(g.chain_id.encode("utf-8")) > MAX_CHAIN_ID:
        raise GenesisError(f"chain_id: longer than {MAX_CHAIN_ID} bytes")
    if g.kind not in CHAIN_KINDS:
        raise GenesisError(f"kind: is {g.kind!r}, expected one of {', '.join(CHAIN_KINDS)}")
    if not isinstance(g.algorithm, Algorithm):
        raise GenesisError("algorithm: not an ML-DSA parameter set")
    if type(g.genesis_time_ms) is not int or not 0 <= g.genesis_time_ms <= U64_MAX:
        raise GenesisError("genesis_time_ms: must be an integer in [0, 2^64)")
    _check_validators(g)
    _check_consensus(g.consensus, len(g.validators), g.kind)
    for f in fields(LedgerLimits):
        value = getattr(g.limits, f.name)
        if type(value) is not int or not 0 < value <= U64_MAX:
            raise GenesisError(f"limits.{f.name}: must be a positive integer, got {value!r}")
    _check_reputation(g.reputation)
    _check_pow(g.pow)
    if g.fl is not None:
        _check_fl(g)
    elif g.defense is not None:
        raise GenesisError("defense: needs an fl section (it screens model updates)")
    if g.sched is not None:
        _check_sched(g)
    if g.single_chain is not False and (g.single_chain is not True or g.kind != "ctbc"):
        raise GenesisError("single_chain: a boolean, and only on ctbc")


def _check_sched(g: Genesis) -> None:
    sched = g.sched
    assert sched is not None
    if g.kind != "cmbc" and not g.single_chain:
        raise GenesisError("sched: task plans live on cmbc (or a single_chain ctbc)")
    if sched.mode not in ("ddmlts", "olar", "equal"):
        raise GenesisError(f"sched.mode: {sched.mode!r} is not ddmlts, olar or equal")
    for name in ("k_max", "batches_per_client", "lower", "upper", "batch_size", "history"):
        if type(getattr(sched, name)) is not int or getattr(sched, name) < 1:
            raise GenesisError(f"sched.{name}: must be a positive integer")
    if sched.lower > sched.upper or sched.lower > sched.batches_per_client:
        raise GenesisError("sched: need lower <= batches_per_client and lower <= upper")
    for name in ("alpha", "drift"):
        if not 0 < getattr(sched, name) < float("inf"):
            raise GenesisError(f"sched.{name}: must be a positive finite number")
    weights = (sched.eps_rtt, sched.eps_completion, sched.eps_speed)
    if min(weights) < 0 or abs(sum(weights) - 1) > 1e-9:
        raise GenesisError("sched: eps_rtt + eps_completion + eps_speed must be 1, each >= 0")


def _check_validators(g: Genesis) -> None:
    seen: set[bytes] = set()
    for i, v in enumerate(g.validators):
        where = f"validators[{i}]"
        if not isinstance(v, Validator):
            raise GenesisError(f"{where}: not a Validator")
        if len(v.public_key) != g.algorithm.public_key_bytes:
            raise GenesisError(
                f"{where}.public_key: {len(v.public_key)} bytes, {g.algorithm.label} keys are "
                f"{g.algorithm.public_key_bytes}"
            )
        if v.id != identity_id(v.public_key):
            raise GenesisError(f"{where}.id: is not SHA-256 of the public key")
        if v.id in seen:
            raise GenesisError(f"{where}.id: duplicate validator {v.id.hex()[:16]}")
        seen.add(v.id)
        if not v.address or len(v.address.encode("utf-8")) > MAX_ADDRESS:
            raise GenesisError(f"{where}.address: must be 1 to {MAX_ADDRESS} bytes")


def _check_consensus(c: ConsensusParams, n_validators: int, kind: str) -> None:
    for f in fields(ConsensusParams):
        value = getattr(c, f.name)
        if type(value) is not int or not 0 <= value <= U64_MAX:
            raise GenesisError(f"consensus.{f.name}: must be a non-negative integer")
    for name in ("epoch_length", "timeout_propose_ms", "timeout_prevote_ms",
                 "timeout_precommit_ms", "timeout_delta_ms"):
        if getattr(c, name) <= 0:
            raise GenesisError(f"consensus.{name}: must be positive, got {getattr(c, name)}")
    if c.committee_size < 1:
        raise GenesisError(f"consensus.committee_size: must be at least 1, got {c.committee_size}")
    # A proof-of-work chain (cmbc) has no validators; a committee chain needs enough of them.
    if kind == "ctbc" and c.committee_size > n_validators:
        raise GenesisError(
            f"consensus.committee_size: {c.committee_size} is more than the "
            f"{n_validators} validators"
        )


def _check_reputation(r: ReputationWeights) -> None:
    total = 0.0
    for name in ("votes", "uptime", "proposals", "history"):
        value = getattr(r, name)
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise GenesisError(f"reputation.{name}: must be a finite number >= 0, got {value!r}")
        total += value
    if total <= 0:
        raise GenesisError("reputation: at least one weight must be positive")
    if type(r.window_epochs) is not int or r.window_epochs < 1:
        raise GenesisError(f"reputation.window_epochs: must be at least 1, got {r.window_epochs}")


def _check_pow(p: PowParams) -> None:
    for f in fields(PowParams):
        value = getattr(p, f.name)
        if type(value) is not int or not 1 <= value <= U64_MAX:
            raise GenesisError(f"pow.{f.name}: must be a positive integer, got {value!r}")
    if p.retarget_interval < 3:
        raise GenesisError("pow.retarget_interval: must be at least 3 (the retarget estimates "
                           "the block rate from a window of at least 2 intervals)")
    if p.max_adjust < 2:
        raise GenesisError("pow.max_adjust: must be at least 2")


def _check_fl(g: Genesis) -> None:
    fl = g.fl
    assert fl is not None
    if g.kind != "ctbc":
        raise GenesisError("fl: model versions live on ctbc")
    if fl.mode not in ("fedasync", "fedavg"):
        raise GenesisError(f"fl.mode: {fl.mode!r} is not fedasync or fedavg")
    if fl.staleness_rule not in ("eq2", "constant", "polynomial", "hinge"):
        raise GenesisError(f"fl.staleness_rule: unknown rule {fl.staleness_rule!r}")
    if len(fl.model_hash) != 64 or any(c not in "0123456789abcdef" for c in fl.model_hash):
        raise GenesisError("fl.model_hash: must be 64 lowercase hex digits")
    for name in ("model", "aggregator"):
        value = getattr(fl, name)
        if value and (":" not in value or any(c.isspace() for c in value)):
            raise GenesisError(f"fl.{name}: must be empty or an import path pkg.module:name")
    for name in ("mixing", "max_update_norm"):
        value = getattr(fl, name)
        if not math.isfinite(value) or value <= 0:
            raise GenesisError(f"fl.{name}: must be a positive finite number")
    for name in ("model_seed", "staleness_b", "max_staleness"):
        value = getattr(fl, name)
        if type(value) is not int or not 0 <= value <= U64_MAX:
            raise GenesisError(f"fl.{name}: must be a non-negative integer")
    if g.defense is not None:
        try:
            check_defense(g.defense)
        except DefenseParamsError as exc:
            raise GenesisError(str(exc)) from None

