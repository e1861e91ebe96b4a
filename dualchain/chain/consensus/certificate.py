"""The commit certificate of a committee-ordered block: a quorum of its committee's precommits.

Every replica checks the certificate a block arrives with on sync, and the CTBC application checks
the one each block carries for its parent (``BlockHeader.parent_qc``).
"""

from __future__ import annotations

from dualchain.chain.app import Committee
from dualchain.chain.errors import ValidationError
from dualchain.chain.identity import Domain
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import ZERO_HASH, QuorumCertificate, VoteStep
from dualchain.chain.verifier import SignatureVerifier, VerifyRequest


def check_commit_qc(
    qc: QuorumCertificate,
    committee: Committee,
    algorithm: Algorithm,
    verifier: SignatureVerifier,
    height: int,
    block_hash: bytes,
    chain_id: str,
) -> None:
    """Refuses (code "bad_qc") anything but a quorum of ``committee``'s precommits for the block."""

    def bad(reason: str) -> ValidationError:
        return ValidationError(f"commit certificate of height {height}: {reason}", code="bad_qc")

    if qc.step != VoteStep.PRECOMMIT:
        raise bad(f"step is {qc.step.name}, not PRECOMMIT")
    if qc.chain_id != chain_id:
        raise bad(f"is for chain {qc.chain_id!r}")
    if qc.height != height:
        raise bad(f"certifies height {qc.height}")
    if qc.block_hash != block_hash or block_hash == ZERO_HASH:
        raise bad("certifies another block")
    voters = [voter for voter, _ in qc.signatures]
    if len(set(voters)) != len(voters):
        raise bad("a voter signs twice")
    outsiders = [v for v in voters if v not in committee]
    if outsiders:
        raise bad(f"{outsiders[0].hex()[:16]} is not a member of committee {committee.epoch}")
    if len(voters) < committee.quorum:
        raise bad(f"{len(voters)} signatures, the quorum is {committee.quorum}")
    votes = qc.votes()
    requests = [
        VerifyRequest(algorithm, committee.keys[v.voter], Domain.VOTE, v.signing_bytes, v.signature)
        for v in votes
    ]
    for vote, ok in zip(votes, verifier.verify_batch(requests), strict=True):
        if not ok:
            raise bad(f"the signature of {vote.voter.hex()[:16]} does not verify")
