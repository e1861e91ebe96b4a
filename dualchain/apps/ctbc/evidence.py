"""Evidence of misbehaviour on CTBC, checked against the application state.

Two kinds: an equivocation (two conflicting votes or proposals one validator signed for one
height, round and step: the daemons see it and submit it) and a tampered model (a model commit
whose model is not the aggregate of its updates, re-executed here so that nobody can be blamed
for a correct commit). A recorded offence is a misbehaviour in its offender's statistics, which
lowers its reputation; each offence is recorded once.
"""

from __future__ import annotations

from dualchain.apps.ctbc.fl import MissingBlobError, ModelCommit, ModelCommitChecker
from dualchain.apps.ctbc.payloads import Evidence, EvidenceKind, evidence_key
from dualchain.apps.ctbc.state import Offence, RegistryState
from dualchain.chain.errors import SignatureError, ValidationError
from dualchain.chain.identity import Domain
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.proposals import Proposal, SignedProposal
from dualchain.chain.types import Transaction, TxKind, Vote
from dualchain.chain.verifier import SignatureVerifier, VerifyRequest


def equivocation_payload(first: Vote | SignedProposal | Proposal,
                         second: Vote | SignedProposal | Proposal) -> bytes:
    """The EVIDENCE payload of two conflicting messages one validator signed."""
    if isinstance(first, Proposal) and isinstance(second, Proposal):
        # The signed parts only: the blocks are named by hash, so evidence stays small.
        return Evidence(EvidenceKind.DUPLICATE_PROPOSAL, first.signed_part.encoded,
                        second.signed_part.encoded).encode()
    kind = (EvidenceKind.DUPLICATE_VOTE if isinstance(first, Vote)
            else EvidenceKind.DUPLICATE_PROPOSAL)
    return Evidence(kind, first.encoded, second.encoded).encode()


def bad_model_payload(tx: Transaction) -> bytes:
    """The EVIDENCE payload against the signer of a tampered model commit."""
    return Evidence(EvidenceKind.BAD_MODEL, tx.encoded, b"").encode()


def check_equivocation(state: RegistryState, ev: Evidence, chain_id: str, algorithm: Algorithm,
                       verifier: SignatureVerifier) -> Offence:
    """Evidence that one validator signed two conflicting votes or proposals for one slot."""
    a, b = ev.items
    if isinstance(a, Vote) and isinstance(b, Vote):
        offender, other, step = a.voter, b.voter, int(a.step)
        same_slot = (a.height, a.round, a.step) == (b.height, b.round, b.step)
        conflicting = a.block_hash != b.block_hash
        domain = Domain.VOTE
    elif isinstance(a, SignedProposal) and isinstance(b, SignedProposal):
        offender, other, step = a.proposer, b.proposer, 0
        same_slot = (a.height, a.round) == (b.height, b.round)
        conflicting = a.block_hash != b.block_hash
        domain = Domain.PROPOSAL
    else:  # pragma: no cover - Evidence.items returns a pair of one type
        raise ValidationError("evidence mixes votes and proposals", code="bad_evidence")
    if offender != other:
        raise ValidationError(
            "the two messages have different signers", code="evidence_signer_mismatch"
        )
    if a.chain_id != chain_id or b.chain_id != chain_id:
        raise ValidationError(
            f"evidence is not about chain {chain_id!r}", code="evidence_wrong_chain"
        )
    if not same_slot:
        raise ValidationError(
            "the two messages are for different heights, rounds or steps",
            code="evidence_slot_mismatch",
        )
    if not conflicting:
        raise ValidationError(
            "the two messages are for the same block", code="evidence_not_conflicting"
        )
    key = evidence_key(ev.kind, offender, a.height, a.round, step)
    if key in state.evidence:
        raise ValidationError("this offence is already recorded", code="duplicate_evidence")
    record = state.known.get(offender)
    if record is None:
        raise ValidationError(
            f"{offender.hex()[:16]} is not and never was a validator",
            code="evidence_unknown_offender",
        )
    requests = [
        VerifyRequest(algorithm, record.public_key, domain, m.signing_bytes,
                      m.signature)
        for m in (a, b)
    ]
    if not all(verifier.verify_batch(requests)):
        raise SignatureError(
            "an evidence signature does not verify", code="evidence_bad_signature"
        )
    return Offence(key, offender)


def check_bad_model(state: RegistryState, ev: Evidence, chain_id: str, algorithm: Algorithm,
                    verifier: SignatureVerifier, models: ModelCommitChecker | None) -> Offence:
    """Evidence that a validator signed a model commit that is not its aggregate: the
    offence is re-executed here, so nobody can be blamed for a correct commit."""
    tx, _ = ev.items
    assert isinstance(tx, Transaction)
    if models is None or tx.kind != TxKind.MODEL_VERSION:
        raise ValidationError("bad-model evidence must carry a model commit",
                              code="bad_evidence")
    record = state.known.get(tx.sender)
    if record is None or record.public_key != tx.public_key:
        raise ValidationError("the commit's sender is not a validator",
                              code="evidence_unknown_offender")
    if tx.chain_id != chain_id:
        raise ValidationError("evidence is not about this chain", code="evidence_wrong_chain")
    if not verifier.verify(algorithm, tx.public_key, Domain.TRANSACTION,
                                 tx.signing_bytes, tx.signature):
        raise SignatureError("the commit's signature does not verify",
                             code="evidence_bad_signature")
    commit = ModelCommit.decode(tx.payload)
    parent = (state.models[commit.parent_version]
              if commit.parent_version < len(state.models) else None)
    if parent is None:
        raise ValidationError("the commit builds on an unknown version", code="bad_evidence")
    try:
        models.check(commit, parent, commit.parent_version)
    except MissingBlobError:
        raise
    except ValidationError as exc:
        if exc.code != "model_mismatch":
            raise ValidationError(f"the commit is wrong for another reason ({exc.code}), "
                                  "not a tampered model", code="bad_evidence") from exc
    else:
        raise ValidationError("the commit's model is its aggregate", code="bad_evidence")
    key = evidence_key(ev.kind, tx.sender, commit.version, 0, 0)
    if key in state.evidence:
        raise ValidationError("this offence is already recorded", code="duplicate_evidence")
    return Offence(key, tx.sender)
