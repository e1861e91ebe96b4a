"""The genesis file: everything replicas must agree on before block 1.

A genesis fixes the chain id, the kind of chain, the ML-DSA parameter set, the initial validators,
the consensus timing, the ledger size limits and the reputation weights (the committee's
election). It also carries the applications' own sections (``app_sections``: FL, scheduling),
which the engine hashes but does not interpret: ``dualchain.apps.genesis`` parses them. It is a
JSON file that an operator writes once and copies to every replica; each replica parses it
strictly (an unknown, missing or mistyped key is refused, so a typo cannot silently fall back to a
default on one replica only; an unknown top-level key is refused by the application's parser) and
derives the same genesis block from it.

The genesis hash is SHA-256 of the canonical JSON of the parsed value (sorted keys, no spaces,
ASCII), so it does not depend on key order, indentation or hex case in the file. It is the
genesis block's app hash: two replicas started from different files disagree from block 0 on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from dualchain.chain.app import Validator
from dualchain.chain.canonical import U64_MAX
from dualchain.chain.consensus.pow import PowParams
from dualchain.chain.errors import DualchainError
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
    # The applications' sections: top-level keys the engine does not interpret (raw JSON values),
    # carried into the genesis hash. The application parses and checks its own
    # (``dualchain.apps.genesis``); a daemon's composition root refuses a key no application
    # knows, so a typo cannot silently fall back to a default.
    app_sections: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "validators", tuple(self.validators))
        object.__setattr__(self, "app_sections", dict(self.app_sections))
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
        for key, value in self.app_sections.items():
            data[key] = value
        return data

    @classmethod
    def from_json(cls, data: object) -> Genesis:
        keys = ["format", "chain_id", "kind", "algorithm", "genesis_time_ms", "validators",
                "consensus", "limits", "reputation"]
        if isinstance(data, dict) and data.get("kind") == "cmbc":
            keys.append("pow")
        obj = parse_object(data, "", keys, others=True)
        if "pow" in obj and "pow" not in keys:  # the engine's own, on the wrong kind of chain
            raise GenesisError("pow: unknown key")
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
            consensus=parse_section(ConsensusParams, obj["consensus"], "consensus"),
            limits=parse_section(LedgerLimits, obj["limits"], "limits"),
            reputation=parse_section(ReputationWeights, obj["reputation"], "reputation"),
            **({"pow": parse_section(PowParams, obj["pow"], "pow")} if "pow" in obj else {}),
            app_sections={k: v for k, v in obj.items() if k not in keys},
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


def parse_object(data: object, path: str, keys: list[str], others: bool = False
                 ) -> dict[str, Any]:
    """A JSON object with exactly ``keys`` (at least, with ``others``); ``path`` is "" at the
    top level."""
    if not isinstance(data, dict):
        raise GenesisError(f"{path or 'genesis'}: expected a JSON object")
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in keys and not others:
            raise GenesisError(f"{prefix}{key}: unknown key")
    for key in keys:
        if key not in data:
            raise GenesisError(f"{prefix}{key}: missing")
    return data


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise GenesisError(f"{path}: expected a string, got {type(value).__name__}")
    return value


def parse_boolean(value: object, path: str) -> bool:
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
    obj = parse_object(data, path, ["id", "public_key", "address"])
    return Validator(
        id=_hex(obj["id"], f"{path}.id"),
        public_key=_hex(obj["public_key"], f"{path}.public_key"),
        address=_string(obj["address"], f"{path}.address"),
    )


def parse_section(cls: type[Any], data: object, path: str) -> Any:
    """A flat dataclass of ints and floats, typed by its field defaults."""
    names = [f.name for f in fields(cls)]
    obj = parse_object(data, path, names)
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
    for key in g.app_sections:
        if not isinstance(key, str) or not key:
            raise GenesisError("an application section needs a name")


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
        least = 0 if f.name == "block_reward" else 1
        if type(value) is not int or not least <= value <= U64_MAX:
            kind = "a non-negative" if least == 0 else "a positive"
            raise GenesisError(f"pow.{f.name}: must be {kind} integer, got {value!r}")
    if p.retarget_interval < 3:
        raise GenesisError("pow.retarget_interval: must be at least 3 (the retarget estimates "
                           "the block rate from a window of at least 2 intervals)")
    if p.max_adjust < 2:
        raise GenesisError("pow.max_adjust: must be at least 2")
