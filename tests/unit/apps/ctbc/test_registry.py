"""The CTBC registry application, driven with real signed blocks and commit certificates."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualchain.apps.ctbc.registry import (
    Evidence,
    EvidenceKind,
    RegistryApp,
    ValidatorRegister,
    ValidatorRemove,
    check_commit_qc,
    decode_payload,
)
from dualchain.apps.genesis import ConsensusParams, Genesis
from dualchain.chain.app import Validator
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.proposals import Proposal
from dualchain.chain.types import (
    Block,
    BlockHeader,
    QuorumCertificate,
    Transaction,
    TxKind,
    Vote,
    VoteStep,
)
from dualchain.chain.verifier import SignatureVerifier
from tests.ledger_builders import BASE_TIMESTAMP_MS, make_block, make_signer, make_tx

CHAIN = "ctbc-test"
SIGNERS = [make_signer(i) for i in range(1, 7)]
BY_ID = {s.id: s for s in SIGNERS}
OUTSIDER = SIGNERS[5]  # never in a genesis
NEWCOMER = SIGNERS[4]


def make_genesis(n: int = 4, committee_size: int = 4, epoch_length: int = 3) -> Genesis:
    return Genesis(
        chain_id=CHAIN,
        kind="ctbc",
        algorithm=Algorithm.ML_DSA_65,
        genesis_time_ms=BASE_TIMESTAMP_MS,
        validators=tuple(
            Validator(s.id, s.public_key, f"127.0.0.1:{7000 + i}")
            for i, s in enumerate(SIGNERS[:n])
        ),
        consensus=ConsensusParams(committee_size=committee_size, epoch_length=epoch_length),
    )


def sign_vote(signer: Signer, height: int, round_: int, step: VoteStep, block_hash: bytes,
              chain_id: str = CHAIN) -> Vote:
    vote = Vote(chain_id, height, round_, step, block_hash, signer.id)
    return replace(vote, signature=signer.sign(Domain.VOTE, vote.signing_bytes))


def make_qc(header: BlockHeader, voters: Sequence[bytes], round_: int = 0,
            step: VoteStep = VoteStep.PRECOMMIT) -> QuorumCertificate:
    votes = [sign_vote(BY_ID[v], header.height, round_, step, header.hash) for v in voters]
    signatures = tuple(sorted((v.voter, v.signature) for v in votes))
    return QuorumCertificate(CHAIN, header.height, round_, step, header.hash, signatures)


DEFAULT = object()


class Driver:
    """Builds the next block on the apps' head and commits it on every app."""

    def __init__(self, genesis: Genesis, verifier: SignatureVerifier, apps: int = 1) -> None:
        self.genesis = genesis
        self.apps = [RegistryApp(genesis, verifier) for _ in range(apps)]
        self.app = self.apps[0]
        self.head = genesis.genesis_block().header
        self.nonces: dict[bytes, int] = defaultdict(int)

    def tx(self, signer: Signer, kind: TxKind, payload: bytes) -> Transaction:
        tx = make_tx(signer, self.nonces[signer.id], CHAIN, payload, kind)
        self.nonces[signer.id] += 1
        return tx

    def qc(self, voters: Sequence[bytes] | None = None, round_: int | None = None,
           **kw: object) -> QuorumCertificate:
        committee = self.app.committee(self.head.height)
        voters = committee.members if voters is None else voters
        return make_qc(self.head, voters, self.head.view if round_ is None else round_, **kw)

    def block(self, txs: Sequence[Transaction] = (), qc: object = DEFAULT,
              round_: int = 0) -> Block:
        height = self.head.height + 1
        if qc is DEFAULT:
            qc = self.qc() if height >= 2 else None
        proposer = BY_ID[self.app.committee(height).proposer(height, round_)]
        return make_block(self.head, txs, proposer, CHAIN, parent_qc=qc, view=round_)

    def commit(self, block: Block) -> bytes:
        hashes = {app.apply_block(block) for app in self.apps}
        assert len(hashes) == 1
        self.head = block.header
        return hashes.pop()

    def step(self, txs: Sequence[Transaction] = (), **kw: object) -> Block:
        block = self.block(txs, **kw)
        self.commit(block)
        return block

    def members(self) -> list[Signer]:
        """The committee of the next block's height, in id order."""
        return [BY_ID[m] for m in self.app.committee(self.head.height + 1).members]

    def votes(self, voters: Sequence[Signer], kind: TxKind, payload: bytes) -> list[Transaction]:
        return [self.tx(v, kind, payload) for v in voters]


@pytest.fixture
def chain(verifier: SignatureVerifier) -> Driver:
    return Driver(make_genesis(n=5), verifier)


@contextmanager
def refused(code: str) -> Iterator[None]:
    """Expects a ValidationError with this code."""
    with pytest.raises(ValidationError) as info:
        yield
    assert info.value.code == code, f"{info.value.code}: {info.value.reason}"


def failed_codes(app: RegistryApp) -> list[str]:
    """Codes of the transactions the last validated or applied block carried without effect."""
    return [code for _, code in app.last_failed]


def ids(signers: Sequence[Signer]) -> tuple[bytes, ...]:
    return tuple(sorted(s.id for s in signers))


# -- committees and membership ----------------------------------------------------------------


def test_epoch_zero_is_the_lowest_genesis_ids_and_the_next_epoch_is_unknown(chain) -> None:
    first = tuple(sorted(s.id for s in SIGNERS[:5]))[:4]
    for height in (0, 1, 2, 3):
        assert chain.app.committee(height).members == first
    with refused("unknown_epoch"):
        chain.app.committee(4)
    committee = chain.app.committee(1)
    assert committee.epoch == 0 and committee.quorum == 3
    assert all(committee.keys[m] == BY_ID[m].public_key for m in first)


REG_NEWCOMER = ValidatorRegister(NEWCOMER.public_key, "10.0.0.5:7000").encode()


def test_a_quorum_of_members_changes_the_set_from_the_next_epoch(verifier) -> None:
    chain = Driver(make_genesis(n=4), verifier)  # committee of 4, quorum 3
    voters = SIGNERS[:3]
    removed = SIGNERS[1]
    # three votes in one block all count: the register is approved by the third
    chain.step(chain.votes(voters, TxKind.VALIDATOR_REGISTER, REG_NEWCOMER))
    assert chain.app.validator(NEWCOMER.id) == Validator(NEWCOMER.id, NEWCOMER.public_key,
                                                         "10.0.0.5:7000")
    rem = ValidatorRemove(removed.id).encode()
    chain.step(chain.votes(voters[:2], TxKind.VALIDATOR_REMOVE, rem))
    assert chain.app.validator(removed.id) is not None  # 2 of 3 votes: pending
    chain.step(chain.votes([SIGNERS[3]], TxKind.VALIDATOR_REMOVE, rem))  # height 3: approved
    assert chain.app.validator(removed.id) is None
    assert chain.app.known_validator(removed.id).address == "127.0.0.1:7001"  # still seated
    assert removed.id not in {v.id for v in chain.app.validators()}
    assert chain.app.committee(3).members == ids(SIGNERS[:4])  # epoch 0 is fixed
    expected = ids([SIGNERS[0], SIGNERS[2], SIGNERS[3], NEWCOMER])
    assert chain.app.committee(4).members == expected
    with refused("already_validator"):  # approved: more votes are refused as before
        chain.app.check_tx(chain.tx(SIGNERS[3], TxKind.VALIDATOR_REGISTER, REG_NEWCOMER))
    chain.step()  # block 4 carries the QC of block 3, signed by epoch 0's committee
    assert chain.app.height == 4


def test_one_validator_alone_changes_nothing(chain) -> None:
    byzantine, *honest = chain.members()
    before, committee = chain.app.validators(), chain.app.committee(1).members
    reg = ValidatorRegister(OUTSIDER.public_key, "x:1").encode()
    chain.step([chain.tx(byzantine, TxKind.VALIDATOR_REGISTER, reg),
                *(chain.tx(byzantine, TxKind.VALIDATOR_REMOVE, ValidatorRemove(s.id).encode())
                  for s in honest[:2])])
    assert chain.app.validators() == before
    chain.step()
    chain.step()  # the epoch boundary
    assert chain.app.validators() == before
    assert chain.app.committee(4).members == committee


def test_a_member_votes_once_per_change(verifier) -> None:
    chain = Driver(make_genesis(n=4), verifier)
    member = SIGNERS[0]
    chain.step([chain.tx(member, TxKind.VALIDATOR_REGISTER, REG_NEWCOMER)])
    with refused("duplicate_approval"):
        chain.app.check_tx(chain.tx(member, TxKind.VALIDATOR_REGISTER, REG_NEWCOMER))
    # A second vote in a later block is carried without effect: the block stays valid.
    chain.app.validate_block(chain.block(
        chain.votes([SIGNERS[1], member], TxKind.VALIDATOR_REGISTER, REG_NEWCOMER)))
    assert failed_codes(chain.app) == ["duplicate_approval"]
    other = ValidatorRegister(NEWCOMER.public_key, "10.0.0.6:7000").encode()
    chain.app.check_tx(chain.tx(member, TxKind.VALIDATOR_REGISTER, other))  # another change


def test_a_member_twice_in_one_block_counts_once(verifier) -> None:
    chain = Driver(make_genesis(n=4), verifier)
    member = SIGNERS[0]
    twice = chain.votes([member, SIGNERS[1], member], TxKind.VALIDATOR_REGISTER, REG_NEWCOMER)
    chain.step(twice)
    assert failed_codes(chain.app) == ["duplicate_approval"]
    # Two distinct votes of four members: below the quorum of three, nothing approved.
    assert chain.app.height == 1 and chain.app.validator(NEWCOMER.id) is None


def test_membership_changes_need_a_committee_member(chain) -> None:
    reg = ValidatorRegister(OUTSIDER.public_key, "x:1").encode()
    with refused("not_a_validator"):
        chain.app.check_tx(chain.tx(OUTSIDER, TxKind.VALIDATOR_REGISTER, reg))
    rem = ValidatorRemove(SIGNERS[0].id).encode()
    with refused("not_a_validator"):
        chain.app.check_tx(chain.tx(OUTSIDER, TxKind.VALIDATOR_REMOVE, rem))
    chain.app.validate_block(chain.block([chain.tx(OUTSIDER, TxKind.VALIDATOR_REMOVE, rem)]))
    assert failed_codes(chain.app) == ["not_a_validator"]
    spare = next(s for s in SIGNERS[:5] if s not in chain.members())  # validator, not member
    with refused("not_a_member"):
        chain.app.check_tx(chain.tx(spare, TxKind.VALIDATOR_REGISTER, reg))
    chain.app.validate_block(chain.block([chain.tx(spare, TxKind.VALIDATOR_REMOVE, rem)]))
    assert failed_codes(chain.app) == ["not_a_member"]


def test_pending_votes_expire_at_the_epoch_boundary(verifier) -> None:
    chain = Driver(make_genesis(n=4), verifier)
    early = SIGNERS[:2]
    chain.step(chain.votes(early, TxKind.VALIDATOR_REGISTER, REG_NEWCOMER))
    chain.step()
    chain.step()  # height 3: epoch 0 ends, its two votes are dropped
    assert chain.app.committee(4).members == ids(SIGNERS[:4])
    chain.step([chain.tx(SIGNERS[2], TxKind.VALIDATOR_REGISTER, REG_NEWCOMER)])
    assert chain.app.validator(NEWCOMER.id) is None  # 1 vote in epoch 1, not 3
    chain.step(chain.votes(early, TxKind.VALIDATOR_REGISTER, REG_NEWCOMER))  # may vote again
    assert chain.app.validator(NEWCOMER.id) is not None


def test_pending_approvals_are_in_the_app_hash(verifier) -> None:
    a, b = Driver(make_genesis(n=4), verifier, apps=2), Driver(make_genesis(n=4), verifier)
    memo = Driver(make_genesis(n=4), verifier)
    a.step([a.tx(SIGNERS[0], TxKind.VALIDATOR_REGISTER, REG_NEWCOMER)])  # 2 apps agree
    b.step([b.tx(SIGNERS[1], TxKind.VALIDATOR_REGISTER, REG_NEWCOMER)])
    memo.step([memo.tx(SIGNERS[0], TxKind.MEMO, b"m")])
    hashes = {d.app.app_hash() for d in (a, b, memo)}
    assert len(hashes) == 3  # another voter, or no vote: another state
    for d in (a, b, memo):
        d.step()
        d.step()  # the epoch boundary drops the pending votes
    assert len({d.app.app_hash() for d in (a, b, memo)}) == 1


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (ValidatorRegister(OUTSIDER.public_key[:-1], "x:1").encode(), "bad_key_length"),
        (ValidatorRegister(SIGNERS[2].public_key, "x:1").encode(), "already_validator"),
        (ValidatorRegister(OUTSIDER.public_key, "").encode(), "bad_address"),
        (ValidatorRemove(OUTSIDER.id).encode(), "unknown_validator"),
        (b"garbage", "malformed_payload"),
    ],
)
def test_bad_membership_changes_are_refused(chain, payload: bytes, code: str) -> None:
    kind = TxKind.VALIDATOR_REMOVE if code == "unknown_validator" else TxKind.VALIDATOR_REGISTER
    with refused(code):
        chain.app.check_tx(chain.tx(chain.members()[0], kind, payload))


def test_removals_stop_at_the_committee_size(chain) -> None:
    voters = chain.members()[:3]  # a quorum of 4
    spare = next(s for s in SIGNERS[:5] if s not in voters)
    last = next(s for s in SIGNERS[:5] if s not in voters and s != spare)
    chain.step(chain.votes(voters, TxKind.VALIDATOR_REMOVE, ValidatorRemove(spare.id).encode()))
    assert len(chain.app.validators()) == 4  # approved: counts against the next removal
    with refused("too_few_validators"):
        chain.app.check_tx(chain.tx(voters[0], TxKind.VALIDATOR_REMOVE,
                                    ValidatorRemove(last.id).encode()))


def test_memo_is_accepted_and_other_kinds_are_not(chain) -> None:
    chain.app.check_tx(chain.tx(OUTSIDER, TxKind.MEMO, b"\x00anything"))
    with refused("unsupported_kind"):
        chain.app.check_tx(chain.tx(OUTSIDER, TxKind.CLIENT_REGISTER, b""))


# -- statistics and reputation ------------------------------------------------------------------


def test_commit_certificates_feed_the_statistics(chain) -> None:
    committee = chain.app.committee(1).members
    chain.step(round_=5)  # block 1 committed in round 5: leaders rotate past every member
    absent = committee[0]
    chain.step(qc=chain.qc(voters=committee[1:]))
    stats = chain.app.stats(0)
    assert {m: (s.votes_expected, s.votes_cast) for m, s in stats.items()} == {
        m: (1, int(m != absent)) for m in committee
    }
    c = chain.app.committee(1)
    leaders = [c.proposer(1, k) for k in range(6)]
    assert {m: s.proposal_turns for m, s in stats.items()} == {
        m: leaders.count(m) for m in committee
    }
    assert {m for m, s in stats.items() if s.proposals_committed} == {c.proposer(1, 5)}


def test_a_member_that_misses_votes_is_replaced(chain) -> None:
    committee = chain.app.committee(1).members
    lazy = committee[2]
    others = [m for m in committee if m != lazy]
    chain.step()
    chain.step(qc=chain.qc(voters=others))
    chain.step(qc=chain.qc(voters=others))
    spare = next(s.id for s in SIGNERS[:5] if s.id not in committee)
    assert chain.app.committee(4).members == tuple(sorted([*others, spare]))


# -- evidence -----------------------------------------------------------------------------------


def double_vote(signer: Signer, height: int = 1, **kw: object) -> Evidence:
    a = sign_vote(signer, height, 0, VoteStep.PRECOMMIT, b"\x01" * 32, **kw)
    b = sign_vote(signer, height, 0, VoteStep.PRECOMMIT, b"\x02" * 32, **kw)
    return Evidence(EvidenceKind.DUPLICATE_VOTE, a.encoded, b.encoded)


def test_evidence_is_recorded_once_and_the_offender_leaves_the_next_committee(chain) -> None:
    offender = chain.app.committee(1).members[1]
    evidence = double_vote(BY_ID[offender])
    tx = chain.tx(OUTSIDER, TxKind.EVIDENCE, evidence.encode())
    chain.app.check_tx(tx)
    chain.step([tx])
    assert chain.app.stats(0)[offender].misbehaviour == 1
    swapped = Evidence(evidence.kind, evidence.second, evidence.first)
    with refused("duplicate_evidence"):
        chain.app.check_tx(chain.tx(OUTSIDER, TxKind.EVIDENCE, swapped.encode()))
    chain.step()
    chain.step()
    committee = chain.app.committee(4).members
    assert offender not in committee and len(committee) == 4
    assert chain.app.validator(offender) is not None  # punished, not removed


def test_two_copies_of_one_offence_in_one_block_count_once(chain) -> None:
    evidence = double_vote(SIGNERS[0]).encode()
    txs = [chain.tx(OUTSIDER, TxKind.EVIDENCE, evidence), chain.tx(SIGNERS[1], TxKind.EVIDENCE,
                                                                      evidence)]
    chain.step(txs)
    assert failed_codes(chain.app) == ["duplicate_evidence"]
    assert chain.app.stats(0)[SIGNERS[0].id].misbehaviour == 1


def double_proposal(leader: Signer, parent: BlockHeader) -> Evidence:
    proposals = []
    for stamp in (1, 2):
        block = make_block(parent, [], leader, CHAIN, timestamp_ms=BASE_TIMESTAMP_MS + stamp)
        p = Proposal(CHAIN, 1, 0, -1, block, leader.id)
        proposals.append(replace(p, signature=leader.sign(Domain.PROPOSAL, p.signing_bytes)))
    return Evidence(EvidenceKind.DUPLICATE_PROPOSAL, proposals[0].signed_part.encoded,
                    proposals[1].signed_part.encoded)


def test_conflicting_proposals_are_evidence(chain) -> None:
    leader = SIGNERS[2]
    evidence = double_proposal(leader, chain.head)
    chain.step([chain.tx(OUTSIDER, TxKind.EVIDENCE, evidence.encode())])
    assert chain.app.stats(0)[leader.id].misbehaviour == 1
    same = Evidence(EvidenceKind.DUPLICATE_PROPOSAL, evidence.first, evidence.first)
    with refused("evidence_not_conflicting"):
        chain.app.check_tx(chain.tx(OUTSIDER, TxKind.EVIDENCE, same.encode()))


def _forged() -> Evidence:
    ev = double_vote(SIGNERS[0])
    second = Vote.decode(ev.second)
    bad = replace(second, signature=bytes(len(second.signature)))
    return Evidence(ev.kind, ev.first, bad.encoded)


def _mixed_signers() -> Evidence:
    a = sign_vote(SIGNERS[0], 1, 0, VoteStep.PREVOTE, b"\x01" * 32)
    b = sign_vote(SIGNERS[1], 1, 0, VoteStep.PREVOTE, b"\x02" * 32)
    return Evidence(EvidenceKind.DUPLICATE_VOTE, a.encoded, b.encoded)


def _different_steps() -> Evidence:
    a = sign_vote(SIGNERS[0], 1, 0, VoteStep.PREVOTE, b"\x01" * 32)
    b = sign_vote(SIGNERS[0], 1, 0, VoteStep.PRECOMMIT, b"\x02" * 32)
    return Evidence(EvidenceKind.DUPLICATE_VOTE, a.encoded, b.encoded)


def _same_block() -> Evidence:
    a = sign_vote(SIGNERS[0], 1, 0, VoteStep.PREVOTE, b"\x01" * 32)
    return Evidence(EvidenceKind.DUPLICATE_VOTE, a.encoded, a.encoded)


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (_forged, "evidence_bad_signature"),
        (_mixed_signers, "evidence_signer_mismatch"),
        (_different_steps, "evidence_slot_mismatch"),
        (_same_block, "evidence_not_conflicting"),
        (lambda: double_vote(SIGNERS[0], chain_id="other"), "evidence_wrong_chain"),
        (lambda: double_vote(OUTSIDER), "evidence_unknown_offender"),
    ],
)
def test_bad_evidence_is_refused(chain, make, code: str) -> None:
    with refused(code):
        chain.app.check_tx(chain.tx(OUTSIDER, TxKind.EVIDENCE, make().encode()))


def test_evidence_against_a_removed_validator_is_still_accepted(chain) -> None:
    gone = SIGNERS[4]
    rem = ValidatorRemove(gone.id).encode()
    chain.step(chain.votes(chain.members()[:3], TxKind.VALIDATOR_REMOVE, rem))
    assert chain.app.validator(gone.id) is None
    chain.app.check_tx(chain.tx(OUTSIDER, TxKind.EVIDENCE, double_vote(gone).encode()))


# -- commit certificates ------------------------------------------------------------------------


def test_block_one_needs_no_certificate_and_later_blocks_need_one(chain) -> None:
    first = chain.block()
    assert first.header.parent_qc is None
    chain.commit(first)
    with refused("bad_qc"):
        chain.app.validate_block(chain.block(qc=None))
    with refused("bad_height"):
        chain.app.validate_block(first)


def test_block_one_with_a_certificate_is_refused(chain) -> None:
    qc = make_qc(chain.head, chain.app.committee(1).members)
    with refused("bad_qc"):
        chain.app.validate_block(chain.block(qc=qc))


def _outsider_qc(chain: Driver) -> QuorumCertificate:
    members = chain.app.committee(1).members
    outsider = next(s.id for s in SIGNERS[:5] if s.id not in members)
    return chain.qc(voters=[*members[:2], outsider])


def _forged_qc(chain: Driver) -> QuorumCertificate:
    qc = chain.qc()
    (voter, sig), *rest = qc.signatures
    return replace(qc, signatures=((voter, bytes(len(sig))), *rest))


def _other_block_qc(chain: Driver) -> QuorumCertificate:
    sibling = make_block(None, [], SIGNERS[0], CHAIN).header
    sibling = replace(sibling, height=1)
    return make_qc(sibling, chain.app.committee(1).members)


def _duplicate_voter_qc(chain: Driver) -> QuorumCertificate:
    qc = chain.qc(voters=chain.app.committee(1).members[:2])
    return replace(qc, signatures=(qc.signatures[0], *qc.signatures))


BAD_QCS = {
    "too_few": lambda c: c.qc(voters=c.app.committee(1).members[:2]),
    "non_member": _outsider_qc,
    "forged": _forged_qc,
    "other_block": _other_block_qc,
    "prevote": lambda c: c.qc(step=VoteStep.PREVOTE),
    "duplicate_voter": _duplicate_voter_qc,
    "wrong_chain": lambda c: replace(c.qc(), chain_id="other"),
}


@pytest.mark.parametrize("name", sorted(BAD_QCS))
def test_bad_commit_certificates_are_refused(chain, name: str) -> None:
    chain.step()
    qc = BAD_QCS[name](chain)
    with refused("bad_qc"):
        chain.app.validate_block(chain.block(qc=qc))
    with refused("bad_qc"):
        check_commit_qc(qc, chain.app.committee(1), Algorithm.ML_DSA_65, chain.app._verifier,
                        1, chain.head.hash, CHAIN)


def test_check_commit_qc_accepts_a_quorum_and_checks_height(chain, verifier) -> None:
    chain.step()
    members = chain.app.committee(1).members
    qc = chain.qc(voters=members[1:])
    committee = chain.app.committee(1)
    check_commit_qc(qc, committee, Algorithm.ML_DSA_65, verifier, 1, chain.head.hash, CHAIN)
    with refused("bad_qc"):
        check_commit_qc(qc, committee, Algorithm.ML_DSA_65, verifier, 2, chain.head.hash, CHAIN)


# -- determinism and atomicity ----------------------------------------------------------------


def test_replicas_that_apply_the_same_blocks_agree(verifier) -> None:
    chain = Driver(make_genesis(n=5), verifier, apps=2)
    other = SignatureVerifier(workers=1)
    late = RegistryApp(chain.genesis, other)
    blocks = [chain.step([chain.tx(SIGNERS[0], TxKind.MEMO, b"m")])]
    reg = ValidatorRegister(OUTSIDER.public_key, "h:1").encode()
    blocks.append(chain.step(chain.votes(chain.members()[:3], TxKind.VALIDATOR_REGISTER, reg)))
    assert chain.app.validator(OUTSIDER.id) is not None
    blocks.append(chain.step([chain.tx(OUTSIDER, TxKind.EVIDENCE,
                                       double_vote(SIGNERS[2]).encode())]))
    blocks.append(chain.step(round_=1))
    blocks.append(chain.step())
    hashes = [late.apply_block(b) for b in blocks]  # a restart replays the chain
    assert hashes[-1] == chain.app.app_hash() == chain.apps[1].app_hash()
    assert len(set(hashes)) == len(hashes)  # every block changed the state
    assert RegistryApp(chain.genesis, other).app_hash() not in hashes
    other.close()


def test_a_refused_block_changes_nothing(chain) -> None:
    chain.step()
    before = chain.app.app_hash()
    rem = ValidatorRemove(SIGNERS[4].id).encode()
    txs = chain.votes(chain.members()[:3], TxKind.VALIDATOR_REMOVE, rem)
    # A block-level fault (a certificate with too few signatures) refuses the whole block.
    short_qc = chain.qc(voters=chain.app.committee(1).members[:1])
    with refused("bad_qc"):
        chain.app.apply_block(chain.block(txs, qc=short_qc))
    assert chain.app.app_hash() == before
    assert chain.app.validator(SIGNERS[4].id) is not None
    assert chain.app.height == 1


# -- payload decoders ---------------------------------------------------------------------------


def test_payloads_round_trip() -> None:
    reg = ValidatorRegister(b"k" * 1952, "host:1")
    assert ValidatorRegister.decode(reg.encode()) == reg
    rem = ValidatorRemove(b"v" * 32)
    assert ValidatorRemove.decode(rem.encode()) == rem
    ev = double_vote(SIGNERS[0])
    assert Evidence.decode(ev.encode()) == ev
    assert decode_payload(TxKind.MEMO, b"abc") == b"abc"


DECODERS = [ValidatorRegister.decode, ValidatorRemove.decode, Evidence.decode, Evidence.decode]
VALID = [
    ValidatorRegister(b"k" * 40, "host:1").encode(),
    ValidatorRemove(b"v" * 32).encode(),
    double_vote(SIGNERS[0]).encode(),
    double_proposal(SIGNERS[0], make_genesis().genesis_block().header).encode(),
]
fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("decode", DECODERS[:3])
@fuzz
@given(data=st.binary(max_size=256))
def test_random_bytes_give_decode_errors_only(decode, data: bytes) -> None:
    for candidate in (data, b"DVR1" + data, b"DVX1" + data, b"DEV1" + data):
        with suppress(DecodeError):
            decode(candidate)


@pytest.mark.parametrize("index", range(len(VALID)))
@fuzz
@given(data=st.data())
def test_mutated_payloads_decode_to_themselves_or_fail(index: int, data: st.DataObject) -> None:
    original = bytearray(VALID[index])
    pos = data.draw(st.integers(0, len(original) - 1))
    if data.draw(st.booleans()):
        original[pos] ^= data.draw(st.integers(1, 255))
    else:
        del original[pos:]
    try:
        value = DECODERS[index](bytes(original))
    except DecodeError:
        return
    assert value.encode() == bytes(original)
