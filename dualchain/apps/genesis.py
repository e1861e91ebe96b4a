"""The genesis of a dualchain chain: the engine's genesis with the applications' sections parsed.

The engine (``dualchain.chain.genesis``) carries the sections it does not know as raw JSON
(``app_sections``); this module gives them their types and checks, for the two applications:

- ``fl`` (CTBC, optional): federated learning, the model every replica starts from and the
  aggregation rule the committee re-executes (``FlParams``);
- ``sched`` (CMBC, or a single-chain CTBC; optional): the scheduler's inputs (``SchedParams``);
- ``defense`` (CTBC with ``fl``, optional): what every committee member re-runs on a commit's
  updates before the aggregate (``DefenseParams``, ``genesis_defense``);
- ``single_chain`` (CTBC, optional): seed 000 Table 5's baseline, CMBC's management transactions
  on CTBC and no CMBC;
- ``operators`` (CTBC, optional): the identity ids (hex) whose CLIENT_READMIT transactions lift a
  client's exclusion (``apps.ctbc.clients``).

``Genesis`` here is the engine's ``Genesis`` with these three as typed fields: ``Genesis.load``
parses a file strictly (an unknown top-level key is refused, as before the split), and
``Genesis.of`` parses the sections of a genesis the engine loaded. The file format and the genesis
hash are the same either way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from dualchain.apps.genesis_defense import DefenseParams, DefenseParamsError, check_defense
from dualchain.chain.canonical import U64_MAX
from dualchain.chain.genesis import (
    ConsensusParams,
    GenesisError,
    parse_boolean,
    parse_section,
)
from dualchain.chain.genesis import Genesis as EngineGenesis

__all__ = ["ConsensusParams", "FlParams", "Genesis", "GenesisError", "SchedParams"]


@dataclass(frozen=True)
class FlParams:
    """Federated learning on CTBC: the model every replica starts from and the aggregation rule
    every committee member re-executes (see ``apps.ctbc.fl``). Optional: a CTBC without it
    carries no model versions."""

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
    # Incentives (docs/incentives.md): "staleness" (seed 000 eq. 2) or "fair" (seed 002 eq.
    # II.4, weights from the contribution theta); micro-units paid per committed version by its
    # reward list (0: no rewards). Written to the file only when set, so a genesis without them
    # keeps its hash.
    aggregation: str = "staleness"
    reward_base: int = 0
    # How a version's reward list weighs an update: "theta" (seed 002 §II-D as written) or
    # "theta_samples" (theta_i n_i, learning.incentive; what `dualchain up` writes).
    reward_weight: str = "theta"


# FlParams keys a genesis file may leave out (these values apply).
FL_OPTIONAL = {"aggregation": "staleness", "reward_base": 0, "reward_weight": "theta"}


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
class Genesis(EngineGenesis):
    """A genesis with its application sections parsed (see the module docstring)."""

    fl: FlParams | None = None  # CTBC only, optional
    defense: DefenseParams | None = None  # CTBC with fl only, optional
    sched: SchedParams | None = None  # CMBC (or a single-chain CTBC) only, optional
    # CTBC only: single-chain mode (seed 000 Table 5's baseline): CMBC's management
    # transactions (registrations, state reports, anchors, groups, plans, joins) go on this
    # chain, and no CMBC runs.
    single_chain: bool = False
    operators: tuple[bytes, ...] = ()  # CTBC only: identity ids that may re-admit a client

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.app_sections:  # the typed fields hold what the engine carried raw
            raise GenesisError(f"{sorted(self.app_sections)[0]}: unknown key")
        if self.fl is not None:
            _check_fl(self)
        elif self.defense is not None:
            raise GenesisError("defense: needs an fl section (it screens model updates)")
        if self.defense is not None:
            try:
                check_defense(self.defense)
            except DefenseParamsError as exc:
                raise GenesisError(str(exc)) from None
        if self.sched is not None:
            _check_sched(self)
        if self.single_chain is not False and (self.single_chain is not True
                                               or self.kind != "ctbc"):
            raise GenesisError("single_chain: a boolean, and only on ctbc")
        if self.operators and self.kind != "ctbc":
            raise GenesisError("operators: only on ctbc")
        if any(not isinstance(o, bytes) or len(o) != 32 for o in self.operators):
            raise GenesisError("operators: each must be a 32-byte identity id")

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if self.fl is not None:
            data["fl"] = {k: v for k, v in asdict(self.fl).items()
                          if k not in FL_OPTIONAL or v != FL_OPTIONAL[k]}
        if self.sched is not None:
            data["sched"] = asdict(self.sched)
        if self.defense is not None:  # (absent otherwise: a genesis hash is unchanged)
            data["defense"] = asdict(self.defense)
        if self.single_chain:  # (absent otherwise: a dual-chain genesis hash is unchanged)
            data["single_chain"] = True
        if self.operators:  # (absent otherwise: a genesis hash is unchanged)
            data["operators"] = [o.hex() for o in self.operators]
        return data

    @classmethod
    def from_json(cls, data: object) -> Genesis:
        return cls.of(EngineGenesis.from_json(data))

    @classmethod
    def of(cls, genesis: EngineGenesis) -> Genesis:
        """``genesis`` with its application sections parsed; refuses a section no application
        knows, or one on the wrong kind of chain."""
        if isinstance(genesis, cls):
            return genesis
        raw = dict(genesis.app_sections)
        allowed = {"ctbc": ["fl", "single_chain", "operators"],
                   "cmbc": ["sched"]}.get(genesis.kind, [])
        if genesis.kind == "ctbc" and "single_chain" in raw:
            allowed.append("sched")
        if genesis.kind == "ctbc" and "fl" in raw:
            allowed.append("defense")
        for key in sorted(raw):
            if key not in allowed:
                raise GenesisError(f"{key}: unknown key")
        engine = {f.name: getattr(genesis, f.name) for f in fields(EngineGenesis)
                  if f.name != "app_sections"}
        return cls(
            **engine,
            fl=parse_section(FlParams, _with_optional(raw["fl"]), "fl") if "fl" in raw else None,
            sched=parse_section(SchedParams, raw["sched"], "sched") if "sched" in raw else None,
            defense=(parse_section(DefenseParams, raw["defense"], "defense")
                     if "defense" in raw else None),
            single_chain=(parse_boolean(raw["single_chain"], "single_chain")
                          if "single_chain" in raw else False),
            operators=_parse_operators(raw["operators"]) if "operators" in raw else (),
        )


def _parse_operators(value: object) -> tuple[bytes, ...]:
    """A list of distinct identity ids, each 64 lowercase hex digits."""
    if not isinstance(value, list):
        raise GenesisError("operators: expected a list of identity ids (hex)")
    ids = []
    for item in value:
        if (not isinstance(item, str) or len(item) != 64
                or any(c not in "0123456789abcdef" for c in item)):
            raise GenesisError("operators: each must be 64 lowercase hex digits")
        ids.append(bytes.fromhex(item))
    if len(set(ids)) != len(ids):
        raise GenesisError("operators: an id is named twice")
    return tuple(ids)


def _with_optional(fl: object) -> object:
    return {**FL_OPTIONAL, **fl} if isinstance(fl, dict) else fl


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
    if fl.aggregation not in ("staleness", "fair"):
        raise GenesisError(f"fl.aggregation: {fl.aggregation!r} is not staleness or fair")
    if fl.aggregation == "fair" and fl.aggregator:
        raise GenesisError("fl.aggregation: fair and a plug-in aggregator exclude each other")
    if type(fl.reward_base) is not int or not 0 <= fl.reward_base < 2**63:
        raise GenesisError("fl.reward_base: must be an integer of micro-units in [0, 2^63)")
    if fl.reward_weight not in ("theta", "theta_samples"):
        raise GenesisError(f"fl.reward_weight: {fl.reward_weight!r} is not theta or "
                           "theta_samples")
    for name in ("mixing", "max_update_norm"):
        value = getattr(fl, name)
        if not math.isfinite(value) or value <= 0:
            raise GenesisError(f"fl.{name}: must be a positive finite number")
    for name in ("model_seed", "staleness_b", "max_staleness"):
        value = getattr(fl, name)
        if type(value) is not int or not 0 <= value <= U64_MAX:
            raise GenesisError(f"fl.{name}: must be a non-negative integer")
