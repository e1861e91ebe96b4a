"""Payloads of the CTBC registry's transactions, in the canonical encoding.

Each payload has its own 4-byte type tag, so the bytes of one kind never decode as another, and
a strict decoder: short input, over-limit lengths, unknown enum values and trailing bytes raise
DecodeError, and an evidence payload decodes only if both messages it carries decode.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from functools import cached_property

from dualchain.apps.ctbc.clients import ClientReadmit
from dualchain.apps.ctbc.fl import ModelCommit
from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.genesis import MAX_ADDRESS
from dualchain.chain.identity import ID_BYTES
from dualchain.chain.proposals import SignedProposal
from dualchain.chain.types import MAX_KEY, MAX_PAYLOAD, Transaction, TxKind, Vote

REGISTER_TAG = b"DVR2"
REMOVE_TAG = b"DVX1"
EVIDENCE_TAG = b"DEV1"
EVIDENCE_KEY_TAG = b"DEK1"


@dataclass(frozen=True)
class ValidatorRegister:
    """Adds a validator (from the next epoch's election on); sent by a current validator.

    ``join_request``: for a server node's join (seed 000 §3.1), the hash of its NodeJoinRequest
    transaction on CMBC (zeros otherwise). CTBC cannot read CMBC; a committee member votes for
    the change only after it saw that request final there, so a quorum of votes vouches for
    it, and the reference lets anyone audit the two stages."""

    public_key: bytes
    address: str  # host:port of the new validator's chain daemon
    join_request: bytes = bytes(32)

    def encode(self) -> bytes:
        w = Writer(REGISTER_TAG).var(self.public_key).text(self.address)
        return w.fixed(self.join_request, 32).bytes()

    @classmethod
    def decode(cls, data: bytes) -> ValidatorRegister:
        r = Reader(data, REGISTER_TAG, "validator register")
        value = cls(r.var("public_key", MAX_KEY), r.text("address", MAX_ADDRESS),
                    r.fixed(32, "join_request"))
        r.finish()
        return value


@dataclass(frozen=True)
class ValidatorRemove:
    """Removes a validator (it keeps any committee seat already elected); sent by a validator."""

    validator: bytes  # id

    def encode(self) -> bytes:
        return Writer(REMOVE_TAG).fixed(self.validator, ID_BYTES).bytes()

    @classmethod
    def decode(cls, data: bytes) -> ValidatorRemove:
        r = Reader(data, REMOVE_TAG, "validator remove")
        value = cls(r.fixed(ID_BYTES, "validator"))
        r.finish()
        return value


class EvidenceKind(enum.IntEnum):
    DUPLICATE_VOTE = 1
    DUPLICATE_PROPOSAL = 2
    BAD_MODEL = 3  # a signed MODEL_VERSION transaction whose model is not its aggregate


@dataclass(frozen=True)
class Evidence:
    """Two signed messages of one validator for the same slot: canonical Votes, or the signed
    parts of two Proposals (``SignedProposal``: the blocks by hash, so evidence stays small)."""

    kind: EvidenceKind
    first: bytes
    second: bytes

    def encode(self) -> bytes:
        w = Writer(EVIDENCE_TAG).u8(int(self.kind))
        return w.var(self.first).var(self.second).bytes()

    @cached_property
    def items(self) -> tuple[Vote, Vote] | tuple[SignedProposal, SignedProposal] | \
            tuple[Transaction, bytes]:
        if self.kind == EvidenceKind.DUPLICATE_VOTE:
            return Vote.decode(self.first), Vote.decode(self.second)
        if self.kind == EvidenceKind.BAD_MODEL:
            return Transaction.decode(self.first), self.second
        return SignedProposal.decode(self.first), SignedProposal.decode(self.second)

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        r = Reader(data, EVIDENCE_TAG, "evidence")
        kind_value = r.u8("kind")
        try:
            kind = EvidenceKind(kind_value)
        except ValueError as exc:
            raise DecodeError(f"evidence: unknown kind {kind_value}") from exc
        value = cls(kind, r.var("first", MAX_PAYLOAD), r.var("second", MAX_PAYLOAD))
        r.finish()
        _ = value.items  # both messages must decode too
        return value


Payload = ValidatorRegister | ValidatorRemove | Evidence | ModelCommit | ClientReadmit
_DECODERS = {
    TxKind.VALIDATOR_REGISTER: ValidatorRegister.decode,
    TxKind.VALIDATOR_REMOVE: ValidatorRemove.decode,
    TxKind.EVIDENCE: Evidence.decode,
    TxKind.MODEL_VERSION: ModelCommit.decode,
    TxKind.CLIENT_READMIT: ClientReadmit.decode,
}


def decode_payload(kind: TxKind, payload: bytes) -> Payload | bytes:
    """The payload of a transaction of ``kind``; raises DecodeError (ValidationError: kind)."""
    if kind == TxKind.MEMO:
        return payload
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ValidationError(
            f"CTBC does not take {kind.name} transactions", code="unsupported_kind"
        )
    return decoder(payload)


def evidence_key(kind: EvidenceKind, offender: bytes, height: int, round_: int, step: int) -> bytes:
    """Names one offence (a slot and a validator), whichever two messages prove it."""
    w = Writer(EVIDENCE_KEY_TAG).u8(int(kind)).fixed(offender, ID_BYTES)
    return hashlib.sha256(w.u64(height).u64(round_).u8(step).bytes()).digest()
