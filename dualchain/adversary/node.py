"""Server-node attacks as strategy objects: the compromised aggregator of seed 003 §V-E.

Seed 003 §V-E ("Attack Simulation"): at a chosen global round k an attacker at an edge server adds
Gaussian noise to the aggregated model before broadcasting it, ``w(k) <- w(k) + v(k)`` with
``v(k) = -rho q(k)`` and ``q(k) ~ N(0, I)``; the paper poisons at rounds 20 and 60 (Fig. 11).
``AggregatorPoison.apply(model, version)`` is that, for the versions listed, and a pure function
of (model, version, seed): ``q`` comes from numpy's PCG64 seeded by (seed, version), so a
recorded experiment reproduces. ``DiscardLie`` is an aggregator that lies about which updates its
defense discarded (``lie_discard``, mode ``drop_honest`` or ``keep_flagged``). (The equivocating
committee replica is in ``replica``: it is not a model transform.)

``TamperModel`` shifts every version it commits by a constant: the committee re-executes the
aggregation, so each such commit is refused and becomes evidence against its signer.

``make_node_attack({"kind": "poison", "rho": 0.5, "versions": [20, 60], "seed": 7})``; a node's
config names one as ``"adversary": {"strategy": "tamper_model", "offset": 0.01}``
(``make_node_strategy``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dualchain.adversary.client import AttackConfigError, make_from_config, strategy_table


@dataclass(frozen=True)
class NodeAttack:
    """An honest aggregator: the model passes unchanged."""

    kind: ClassVar[str] = "none"

    def poisons(self, version: int) -> bool:
        return False

    def takes_turn(self, version: int) -> bool:
        """Whether the node aggregates ``version`` even when it is not its turn."""
        return False

    def apply(self, model: np.ndarray, version: int) -> np.ndarray:
        return model


@dataclass(frozen=True)
class AggregatorPoison(NodeAttack):
    """``w <- w - rho q``, ``q ~ N(0, I)``, at each version in ``versions`` (seed 003 §V-E)."""

    kind: ClassVar[str] = "poison"
    rho: float = 1.0
    versions: tuple[int, ...] = (20, 60)
    seed: int = 0

    def __post_init__(self) -> None:
        rho = self.rho
        if isinstance(rho, bool) or not isinstance(rho, int | float) or not math.isfinite(rho):
            raise AttackConfigError(f"poison rho must be a finite number, got {rho!r}")
        if rho <= 0:
            raise AttackConfigError(f"poison rho must be positive, got {rho}")
        raw: Any = self.versions
        if isinstance(raw, str | bytes) or not hasattr(raw, "__iter__"):
            raise AttackConfigError(f"poison versions must be a list of versions, got {raw!r}")
        versions = tuple(raw)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in versions):
            raise AttackConfigError(f"poison versions must be non-negative integers, got {raw!r}")
        object.__setattr__(self, "versions", tuple(sorted(set(versions))))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise AttackConfigError(
                f"poison seed must be a non-negative integer, got {self.seed!r}"
            )

    def poisons(self, version: int) -> bool:
        return version in self.versions

    def takes_turn(self, version: int) -> bool:
        # The compromised aggregator of seed 003 poisons at its rounds, whoever's turn it is.
        return self.poisons(version)

    def noise(self, size: int, version: int) -> np.ndarray:
        """``q`` of ``version``: float64 N(0, I) from PCG64 seeded by (seed, version)."""
        gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, version])))
        return gen.standard_normal(size)

    def apply(self, model: np.ndarray, version: int) -> np.ndarray:
        if not self.poisons(version):
            return model
        if not isinstance(model, np.ndarray) or model.ndim != 1:
            raise ValueError("the model must be a 1-D vector")
        poisoned = model.astype(np.float64) - self.rho * self.noise(model.size, version)
        return poisoned.astype(model.dtype)


@dataclass(frozen=True)
class TamperModel(NodeAttack):
    """Adds ``offset`` to every parameter of every version it aggregates."""

    kind: ClassVar[str] = "tamper_model"
    offset: float = 0.01

    def __post_init__(self) -> None:
        offset = self.offset
        if (isinstance(offset, bool) or not isinstance(offset, int | float)
                or not math.isfinite(offset) or offset == 0):
            raise AttackConfigError(f"tamper_model offset must be a finite non-zero number, "
                                    f"got {offset!r}")

    def poisons(self, version: int) -> bool:
        return True

    def apply(self, model: np.ndarray, version: int) -> np.ndarray:
        return (model + np.asarray(self.offset, dtype=model.dtype)).astype(model.dtype)


LIE_MODES: tuple[str, ...] = ("drop_honest", "keep_flagged")
Discard = tuple[bytes, str]  # (update digest, reason)


@dataclass(frozen=True)
class DiscardLie(NodeAttack):
    """An aggregator that lies about its discard set from ``from_version`` on (issue 15: every
    replica re-runs the defense, so the commit must be refused).

    ``drop_honest``: the first update the defense kept is claimed discarded (a node censoring an
    honest client); ``keep_flagged``: every flagged update is claimed kept (a node shielding an
    attacker). The node recomputes the aggregate over what it claims, so only the discard set is
    wrong, not the arithmetic."""

    kind: ClassVar[str] = "lie_discard"
    mode: str = "drop_honest"
    from_version: int = 1

    def __post_init__(self) -> None:
        if self.mode not in LIE_MODES:
            raise AttackConfigError(
                f"lie_discard mode must be one of {', '.join(LIE_MODES)}, got {self.mode!r}")
        v = self.from_version
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise AttackConfigError(f"from_version must be a non-negative integer, got {v!r}")

    def claim(self, version: int, kept: Sequence[bytes],
              discarded: Sequence[tuple[bytes, str]]) -> tuple[list[bytes], list[Discard]]:
        """(kept, discarded) the node claims for ``version`` instead of the true ones."""
        kept, discarded = list(kept), list(discarded)
        if version < self.from_version:
            return kept, discarded
        if self.mode == "drop_honest" and len(kept) >= 2:
            return kept[1:], sorted([*discarded, (kept[0], "low_contribution")])
        if self.mode == "keep_flagged" and discarded:
            return kept + [d for d, _ in discarded], []
        return kept, discarded


HONEST_NODE = NodeAttack()
NODE_ATTACKS: dict[str, type[NodeAttack]] = {
    cls.kind: cls for cls in (NodeAttack, AggregatorPoison, TamperModel, DiscardLie)
}


def make_node_attack(config: Mapping[str, Any]) -> NodeAttack:
    """The node attack a config dict names, e.g. ``{"kind": "poison", "versions": [20, 60]}``."""
    if isinstance(config, Mapping) and isinstance(config.get("versions"), list):
        config = {**config, "versions": tuple(config["versions"])}
    return make_from_config(config, NODE_ATTACKS, "node attack")


def make_node_strategy(config: Mapping[str, Any] | None) -> NodeAttack:
    """The strategy a node config's ``adversary`` table names, e.g. ``{"strategy":
    "tamper_model"}`` (None: honest); AttackConfigError with a one-line reason for an unknown
    name or parameter."""
    if config is None:
        return HONEST_NODE
    return make_node_attack(strategy_table(config, list(NODE_ATTACKS), "tamper_model"))
