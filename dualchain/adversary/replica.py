"""Byzantine committee replicas as strategy objects, loaded by a CTBC daemon from its config.

A daemon's config names one under ``adversary``: ``{"strategy": "equivocate"}``. The daemon asks
its strategy at the two places a replica speaks (it casts a vote, it proposes a block) and does
the signing and sending itself; the strategy holds no keys and does no I/O.

- ``honest`` (absent ``adversary``): every message once, to everybody.
- ``equivocate``: for every vote for a block it also signs a vote for another block at the same
  height, round and step; every proposal it leads goes out as two signed blocks, one to half the
  peers and the other to the other half, each half getting both in a different order. The
  honest replicas must keep agreeing and file the evidence (docs/consensus.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from dualchain.adversary.client import AttackConfigError, make_from_config, strategy_table

NIL = bytes(32)


@dataclass(frozen=True)
class ReplicaStrategy:
    """An honest replica."""

    strategy: ClassVar[str] = "honest"

    def twin_vote(self, block_hash: bytes) -> bytes | None:
        """Another block hash to vote for beside ``block_hash`` at the same step, or None."""
        return None

    @property
    def splits_proposals(self) -> bool:
        """Whether its proposals go out as two conflicting blocks."""
        return False


@dataclass(frozen=True)
class EquivocatingReplica(ReplicaStrategy):
    """Signs conflicting votes and proposals (a duplicate vote or proposal is evidence)."""

    strategy: ClassVar[str] = "equivocate"
    twin_hash: bytes = b"\xee" * 32

    def twin_vote(self, block_hash: bytes) -> bytes | None:
        return self.twin_hash if block_hash != NIL else None  # a nil vote has no twin

    @property
    def splits_proposals(self) -> bool:
        return True


HONEST = ReplicaStrategy()
REPLICA_STRATEGIES: dict[str, type[ReplicaStrategy]] = {
    cls.strategy: cls for cls in (ReplicaStrategy, EquivocatingReplica)
}


def make_replica_strategy(config: Mapping[str, Any] | None) -> ReplicaStrategy:
    """The strategy a daemon config's ``adversary`` table names (None: honest); raises
    AttackConfigError with a one-line reason for an unknown name or parameter."""
    if config is None:
        return HONEST
    table = strategy_table(config, list(REPLICA_STRATEGIES), "equivocate")
    if "twin_hash" in table:  # JSON has no bytes: hex
        try:
            table["twin_hash"] = bytes.fromhex(table["twin_hash"])
        except (TypeError, ValueError) as exc:
            raise AttackConfigError("adversary twin_hash must be hex") from exc
        if len(table["twin_hash"]) != 32 or table["twin_hash"] == NIL:
            raise AttackConfigError("adversary twin_hash must be 32 bytes, not all zero")
    return make_from_config(table, REPLICA_STRATEGIES, "replica strategy")
