"""The interface between a consensus engine and the chain application it orders blocks for.

The engines (committee BFT for CTBC, proof of work for CMBC) know nothing of what transactions
mean. They ask the application three things: is this transaction acceptable, is this block's
content acceptable, and apply this committed block. The committee engine also asks the
application who sits on the committee at a height, because the committee is chain state
(membership changes and reputation are recorded on chain); the proof-of-work engine also asks it
to take back the last applied block, because a reorg disconnects blocks, and which pending
transactions a block template may carry together.

A daemon does not pick its application: the composition root (``dualchain.apps.factory``, used by
``dualchain chain``) hands it an ``AppFactory`` (``app_context``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dualchain.chain.blobs import BlobStore
from dualchain.chain.errors import DualchainError, ValidationError
from dualchain.chain.proposals import Proposal
from dualchain.chain.types import Block, Transaction, Vote


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

    def balances(self) -> dict[bytes, int]:
        """Account (32-byte identity id) -> integer micro-units, for ``GetBalances``; none here."""
        return {}


class CommitteeApplication(Application):
    """An application ordered by committee consensus: it names the committee of each height and
    turns the equivocations the engine sees into evidence. The hooks with a body are optional:
    an application that keeps blobs (model parameters, addressed by hash) sets ``blobs`` and
    names the blobs each transaction reads, so the daemon fetches them from its peers first."""

    blobs: BlobStore | None = None

    @abstractmethod
    def committee(self, height: int) -> Committee:
        """The committee that decides ``height``: fixed for an epoch, known one epoch ahead."""

    @abstractmethod
    def validator(self, validator_id: bytes) -> Validator | None:
        """A current validator by id (committee member or not)."""

    @abstractmethod
    def validators(self) -> Sequence[Validator]:
        """The current validator set (the daemon links to each of them)."""

    @abstractmethod
    def equivocation_evidence(self, first: Vote | Proposal, second: Vote | Proposal) -> bytes:
        """The payload of an EVIDENCE transaction proving that one validator signed both."""

    def refusal_evidence(self, tx: Transaction, error: DualchainError) -> bytes | None:
        """The payload of an EVIDENCE transaction against the signer of a transaction that was
        refused with ``error``, when that refusal proves misbehaviour; None otherwise."""
        return None

    def blobs_for(self, tx: Transaction) -> Sequence[bytes]:
        """The blobs checking ``tx`` reads."""
        return ()

    def precheck(self, tx: Transaction) -> None:
        """Expensive checks of a transaction that reads blobs, run on a CPU thread before its
        admission (the verdict is cached for ``check_tx`` on the event loop); raises nothing."""

    def status_fields(self) -> Mapping[str, Any]:
        """Application fields of the chain status (``ChainStatus``), by field name."""
        return {}


class ReorgApplication(Application):
    """An application ordered by proof of work, where a reorg disconnects applied blocks."""

    @abstractmethod
    def rollback_block(self, block: Block) -> None:
        """Takes back ``block``, which must be the last block applied and not yet taken back."""

    @abstractmethod
    def executable(self, txs: Sequence[Transaction],
                   refused: list[tuple[Transaction, ValidationError]] | None = None
                   ) -> list[Transaction]:
        """What of ``txs``, applied in order, the rules accept (a block template's
        transactions); changes nothing. Each sender's first refused transaction goes to
        ``refused`` with the reason."""
