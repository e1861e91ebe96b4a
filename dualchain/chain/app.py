"""The interface between a consensus engine and the chain application it orders blocks for.

The engines (committee BFT for CTBC, proof of work for CMBC) know nothing of what transactions
mean. They ask the application three things: is this transaction acceptable, is this block's
content acceptable, and apply this committed block. The committee engine also asks the
application who sits on the committee at a height, because the committee is chain state
(membership changes and reputation are recorded on chain); the proof-of-work engine also asks it
to take back the last applied block, because a reorg disconnects blocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from dualchain.chain.types import Block, Transaction


@dataclass(frozen=True)
class Validator:
    """A server node allowed to take part in CTBC consensus."""

    id: bytes
    public_key: bytes
    address: str  # host:port of its chain daemon's peer service


@dataclass(frozen=True)
class Committee:
    """The validators that propose and vote during one epoch, in leader rotation order."""

    epoch: int
    members: tuple[bytes, ...]
    keys: Mapping[bytes, bytes]  # member id -> public key

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def max_faulty(self) -> int:
        """f: the most byzantine members this committee tolerates (n >= 3f + 1)."""
        return (len(self.members) - 1) // 3

    @property
    def quorum(self) -> int:
        """Votes needed for a quorum certificate: more than two thirds of the members."""
        return 2 * len(self.members) // 3 + 1

    def proposer(self, height: int, round_: int) -> bytes:
        """The leader of a view: rotates with every height and every round."""
        return self.members[(height + round_) % len(self.members)]

    def __contains__(self, member: object) -> bool:
        return member in self.keys


class Application(ABC):
    """A deterministic state machine fed with committed blocks."""

    @abstractmethod
    def check_tx(self, tx: Transaction) -> None:
        """Application rules for one transaction against the current state (mempool admission).

        Raises ValidationError with a reason; the ledger rules (signature, nonce, ...) are
        checked by the engine before.
        """

    @abstractmethod
    def validate_block(self, block: Block) -> None:
        """Application rules for a proposed block on top of the current state; changes nothing."""

    @abstractmethod
    def apply_block(self, block: Block) -> bytes:
        """Applies a committed block and returns the new app hash."""

    @abstractmethod
    def app_hash(self) -> bytes:
        """A digest of the whole application state (replicas compare it through headers)."""


class CommitteeApplication(Application):
    """An application ordered by committee consensus: it names the committee of each height."""

    @abstractmethod
    def committee(self, height: int) -> Committee:
        """The committee that decides ``height``: fixed for an epoch, known one epoch ahead."""

    @abstractmethod
    def validator(self, validator_id: bytes) -> Validator | None:
        """A current validator by id (committee member or not)."""


class ReorgApplication(Application):
    """An application ordered by proof of work, where a reorg disconnects applied blocks."""

    @abstractmethod
    def rollback_block(self, block: Block) -> None:
        """Takes back ``block``, which must be the last block applied and not yet taken back."""
