"""The committee consensus engine (Tendermint, Algorithm 1 of Buchman, Kwon, Milosevic 2018).

Two kinds of tests: scenarios driven by hand against one replica's engine (each rule of the paper,
with the exact messages that trigger it), and runs of the deterministic simulator
(``simulation.py``) over many seeds for agreement, progress, faults and restarts.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from dualchain.chain.consensus.committee import (
    MAX_VALUES_PER_VOTER,
    NIL,
    CastVote,
    CommitteeConsensus,
    Decide,
    Equivocation,
    FetchBlock,
    LockState,
    Propose,
    ScheduleTimeout,
    Step,
    Timeouts,
)
from dualchain.chain.consensus.guard import VoteGuard
from dualchain.chain.identity import Domain
from dualchain.chain.proposals import Proposal
from dualchain.chain.types import Block, Vote, VoteStep
from tests.unit.chain.consensus.simulation import (
    CHAIN_ID,
    Byzantine,
    Simulation,
    block_on,
    certificate_problems,
    genesis,
    make_committee,
    signer,
    vote_signature_ok,
)

PREVOTE, PRECOMMIT = VoteStep.PREVOTE, VoteStep.PRECOMMIT
COMMITTEE = make_committee(4)
IDS = COMMITTEE.members
TIMEOUTS = Timeouts()

# -- helpers for hand-driven scenarios --------------------------------------------------------


def block(round_: int = 0, proposer: int | None = None, parent: Block | None = None) -> Block:
    """A block of height 1 (on genesis) unless ``parent`` is given."""
    parent = parent or genesis()
    height = parent.height + 1
    if proposer is None:
        proposer = IDS.index(COMMITTEE.proposer(height, round_))
    return block_on(parent, round_, proposer)


def leader(height: int, round_: int) -> int:
    return IDS.index(COMMITTEE.proposer(height, round_))


def proposal(height: int, round_: int, blk: Block, valid_round: int = -1,
             proposer: int | None = None, chain_id: str = CHAIN_ID) -> Proposal:
    who = leader(height, round_) if proposer is None else proposer
    return Proposal(chain_id, height, round_, valid_round, blk, IDS[who], b"sig")


def vote(voter: int, height: int, round_: int, step: VoteStep, block_hash: bytes,
         sign: bool = False, chain_id: str = CHAIN_ID) -> Vote:
    unsigned = Vote(chain_id, height, round_, step, block_hash, signer(voter).id)
    signature = signer(voter).sign(Domain.VOTE, unsigned.signing_bytes) if sign else b"sig"
    return Vote(chain_id, height, round_, step, block_hash, signer(voter).id, signature)


def of(actions: list, kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def cast(actions: list) -> list[tuple[int, VoteStep, bytes]]:
    return [(a.round, a.step, a.block_hash) for a in of(actions, CastVote)]


def replica(me: int | None = 0, height: int = 1, lock: LockState | None = None,
            ) -> tuple[CommitteeConsensus, list]:
    engine = CommitteeConsensus(CHAIN_ID, None if me is None else IDS[me], TIMEOUTS)
    return engine, engine.start_height(height, COMMITTEE, lock)


def votes_from(engine: CommitteeConsensus, voters, height: int, round_: int, step: VoteStep,
               block_hash: bytes) -> list:
    actions: list = []
    for voter in voters:
        actions += engine.on_vote(vote(voter, height, round_, step, block_hash))
    return actions


def next_round(engine: CommitteeConsensus, others=(1, 2, 3)) -> list:
    """Ends the engine's current round through 2f+1 nil precommits and the precommit timeout."""
    h, r = engine.height, engine.round
    actions = votes_from(engine, others, h, r, PRECOMMIT, NIL)
    assert ScheduleTimeout(h, r, Step.PRECOMMIT, TIMEOUTS.of(Step.PRECOMMIT, r)) in actions
    actions += engine.on_timeout(h, r, Step.PRECOMMIT)
    assert engine.round == r + 1
    return actions


# -- one round, rule by rule ------------------------------------------------------------------


def test_start_height_leader_proposes_and_everybody_schedules_the_propose_timeout() -> None:
    lead = leader(1, 0)
    _, actions = replica(lead)
    assert actions == [Propose(1, 0, -1, None),
                       ScheduleTimeout(1, 0, Step.PROPOSE, TIMEOUTS.propose)]
    other = (lead + 1) % 4
    _, actions = replica(other)
    assert actions == [ScheduleTimeout(1, 0, Step.PROPOSE, TIMEOUTS.propose)]
    _, actions = replica(None)
    assert not of(actions, Propose)


def test_a_round_in_order_prevote_lock_precommit_decide() -> None:
    engine, _ = replica(0)
    blk = block(0)
    actions = engine.on_proposal(proposal(1, 0, blk), valid=True)
    assert cast(actions) == [(0, PREVOTE, blk.hash)]
    assert engine.step == Step.PREVOTE
    actions = votes_from(engine, (0, 1), 1, 0, PREVOTE, blk.hash)
    assert actions == []  # 2 of 4: no quorum yet
    actions = votes_from(engine, (2,), 1, 0, PREVOTE, blk.hash)
    assert ScheduleTimeout(1, 0, Step.PREVOTE, TIMEOUTS.prevote) in actions  # line 34
    assert cast(actions) == [(0, PRECOMMIT, blk.hash)]  # line 36
    assert (engine.locked_round, engine.locked_block) == (0, blk)
    assert (engine.valid_round, engine.valid_block) == (0, blk)
    assert votes_from(engine, (0, 1), 1, 0, PRECOMMIT, blk.hash) == []
    actions = votes_from(engine, (3,), 1, 0, PRECOMMIT, blk.hash)
    (decide,) = of(actions, Decide)  # line 49
    assert (decide.height, decide.round, decide.block) == (1, 0, blk)
    assert engine.step == Step.DECIDED
    # a decided height takes nothing more
    assert engine.on_timeout(1, 0, Step.PRECOMMIT) == []
    assert votes_from(engine, (3,), 1, 1, PREVOTE, NIL) == []


def test_the_certificate_holds_the_quorum_of_precommits_sorted_by_voter() -> None:
    engine, _ = replica(0)
    blk = block(0)
    engine.on_proposal(proposal(1, 0, blk), valid=True)
    for voter in (3, 1, 0):
        engine.on_vote(vote(voter, 1, 0, PREVOTE, blk.hash))
    engine.on_vote(vote(2, 1, 0, PRECOMMIT, NIL, sign=True))  # a nil precommit: not in the QC
    actions: list = []
    for voter in (3, 0, 1):
        actions += engine.on_vote(vote(voter, 1, 0, PRECOMMIT, blk.hash, sign=True))
    (decide,) = of(actions, Decide)
    qc = decide.certificate
    assert certificate_problems(qc, blk, 1, COMMITTEE, signed=True) == []
    assert [v for v, _ in qc.signatures] == sorted([IDS[0], IDS[1], IDS[3]])
    assert (qc.round, qc.step, qc.block_hash) == (0, PRECOMMIT, blk.hash)
    assert all(vote_signature_ok(v, COMMITTEE) for v in qc.votes())


def test_an_invalid_proposal_gets_a_nil_prevote() -> None:
    engine, _ = replica(0)
    blk = block(0)
    actions = engine.on_proposal(proposal(1, 0, blk), valid=False)
    assert cast(actions) == [(0, PREVOTE, NIL)]
    # even a prevote quorum for it does not make this replica lock on or precommit it
    actions = votes_from(engine, (1, 2, 3), 1, 0, PREVOTE, blk.hash)
    assert cast(actions) == []
    assert engine.locked_block is None
    # nor decide it
    assert of(votes_from(engine, (1, 2, 3), 1, 0, PRECOMMIT, blk.hash), Decide) == []


def test_propose_timeout_prevotes_nil_and_a_nil_quorum_precommits_nil() -> None:
    engine, _ = replica(0)
    assert cast(engine.on_timeout(1, 0, Step.PROPOSE)) == [(0, PREVOTE, NIL)]  # line 57
    assert engine.on_timeout(1, 0, Step.PROPOSE) == []  # once
    actions = votes_from(engine, (0, 1, 2), 1, 0, PREVOTE, NIL)
    assert cast(actions) == [(0, PRECOMMIT, NIL)]  # line 44
    # a proposal arriving late changes nothing in this round
    assert cast(engine.on_proposal(proposal(1, 0, block(0)), valid=True)) == []


def test_prevote_timeout_precommits_nil_when_the_prevotes_are_split() -> None:
    engine, _ = replica(0)
    blk = block(0)
    engine.on_proposal(proposal(1, 0, blk), valid=True)
    engine.on_vote(vote(0, 1, 0, PREVOTE, blk.hash))
    engine.on_vote(vote(1, 1, 0, PREVOTE, NIL))
    actions = engine.on_vote(vote(2, 1, 0, PREVOTE, NIL))
    assert of(actions, ScheduleTimeout) == [ScheduleTimeout(1, 0, Step.PREVOTE, TIMEOUTS.prevote)]
    assert cast(actions) == []
    assert cast(engine.on_timeout(1, 0, Step.PREVOTE)) == [(0, PRECOMMIT, NIL)]  # line 61


def test_timeouts_grow_with_the_round() -> None:
    engine, _ = replica(0)
    delays: dict[int, list[float]] = {Step.PROPOSE: [], Step.PREVOTE: [], Step.PRECOMMIT: []}
    actions = engine.start_height(1, COMMITTEE)
    for round_ in range(6):
        actions += engine.on_timeout(1, round_, Step.PROPOSE)
        actions += votes_from(engine, (1, 2, 3), 1, round_, PREVOTE, bytes([7]) * 32)
        actions += engine.on_timeout(1, round_, Step.PREVOTE)
        actions += votes_from(engine, (1, 2, 3), 1, round_, PRECOMMIT, NIL)
        actions += engine.on_timeout(1, round_, Step.PRECOMMIT)
    for timeout in of(actions, ScheduleTimeout):
        assert timeout.delay == TIMEOUTS.of(timeout.step, timeout.round)
        delays[timeout.step].append(timeout.delay)
    for step, values in delays.items():
        assert len(values) >= 6, step
        assert all(a < b for a, b in itertools.pairwise(values)), (step, values)
    assert engine.round == 6


def test_timeouts_of_is_linear_in_the_round() -> None:
    t = Timeouts(propose=2.0, prevote=1.0, precommit=0.25, delta=0.5)
    assert [t.of(Step.PROPOSE, r) for r in range(3)] == [2.0, 2.5, 3.0]
    assert t.of(Step.PREVOTE, 4) == 3.0 and t.of(Step.PRECOMMIT, 1) == 0.75


def test_the_leader_of_a_later_round_proposes_after_the_precommit_timeout() -> None:
    me = leader(1, 1)
    engine, _ = replica(me)
    others = [i for i in range(4) if i != me]
    actions = next_round(engine, others)
    assert Propose(1, 1, -1, None) in actions
    assert ScheduleTimeout(1, 1, Step.PROPOSE, TIMEOUTS.of(Step.PROPOSE, 1)) in actions


# -- locking ----------------------------------------------------------------------------------


def test_a_locked_replica_prevotes_only_its_block_or_a_justified_newer_one() -> None:
    """Replica 0 locks B in round 1, then sees C proposed in later rounds."""
    engine, _ = replica(0)
    c, b = block(0), block(1)
    # Round 0 (leader 1): replica 0 times out and prevotes nil; 1, 2, 3 prevote C, so C has a
    # prevote quorum in round 0, but replica 0 never saw the proposal in time and cannot lock.
    assert cast(engine.on_timeout(1, 0, Step.PROPOSE)) == [(0, PREVOTE, NIL)]
    votes_from(engine, (1, 2, 3), 1, 0, PREVOTE, c.hash)
    assert cast(engine.on_timeout(1, 0, Step.PREVOTE)) == [(0, PRECOMMIT, NIL)]
    next_round(engine)
    assert engine.on_proposal(proposal(1, 0, c), valid=True) == []  # old round: kept, no vote
    # Round 1 (leader 2): B is proposed and gets a prevote quorum: replica 0 locks B.
    assert cast(engine.on_proposal(proposal(1, 1, b), valid=True)) == [(1, PREVOTE, b.hash)]
    actions = votes_from(engine, (0, 1, 2), 1, 1, PREVOTE, b.hash)  # its own vote fed back too
    assert cast(actions) == [(1, PRECOMMIT, b.hash)]
    assert (engine.locked_round, engine.locked_block) == (1, b)
    next_round(engine)
    # Round 2 (leader 3): C again, justified by round 0 < locked round 1: refused.
    assert cast(engine.on_proposal(proposal(1, 2, c, valid_round=0), valid=True)) == [
        (2, PREVOTE, NIL)]
    # Round 3: replica 0 leads and re-proposes B, its valid block, with valid round 1.
    assert Propose(1, 3, 1, b) in next_round(engine)
    next_round(engine)
    # Round 4 (leader 1): C as a fresh proposal (valid_round -1): refused.
    assert cast(engine.on_proposal(proposal(1, 4, c), valid=True)) == [(4, PREVOTE, NIL)]
    next_round(engine)
    # Round 5 (leader 2): C with valid round 4, but no prevote quorum in round 4: no prevote
    # until the propose timeout, which prevotes nil.
    assert cast(engine.on_proposal(proposal(1, 5, c, valid_round=4), valid=True)) == []
    votes_from(engine, (1, 2), 1, 4, PREVOTE, c.hash)  # 2 of 4 is no quorum
    assert cast(engine.on_vote(vote(3, 1, 4, PREVOTE, NIL))) == []
    assert cast(engine.on_timeout(1, 5, Step.PROPOSE)) == [(5, PREVOTE, NIL)]
    assert engine.locked_block == b
    next_round(engine)
    # Round 6 (leader 3): C with valid round 5 >= locked round 1. Prevoted once the round-5
    # prevote quorum for C is known.
    assert cast(engine.on_proposal(proposal(1, 6, c, valid_round=5), valid=True)) == []
    assert cast(votes_from(engine, (1, 2), 1, 5, PREVOTE, c.hash)) == []
    actions = engine.on_vote(vote(3, 1, 5, PREVOTE, c.hash))
    assert cast(actions) == [(6, PREVOTE, c.hash)]


def test_a_locked_replica_prevotes_a_proposal_of_its_locked_block() -> None:
    engine, _ = replica(0)
    b = block(0)
    engine.on_proposal(proposal(1, 0, b), valid=True)
    votes_from(engine, (0, 1, 2), 1, 0, PREVOTE, b.hash)
    assert engine.locked_block == b
    next_round(engine)
    # the leader of round 1 proposes B fresh: same block as the lock, so prevoted
    assert cast(engine.on_proposal(proposal(1, 1, b), valid=True)) == [(1, PREVOTE, b.hash)]


def test_the_lock_moves_when_a_later_round_has_a_prevote_quorum() -> None:
    engine, _ = replica(0)
    b, c = block(0), block(1)
    engine.on_proposal(proposal(1, 0, b), valid=True)
    votes_from(engine, (0, 1, 2), 1, 0, PREVOTE, b.hash)
    next_round(engine)
    assert cast(engine.on_proposal(proposal(1, 1, c), valid=True)) == [(1, PREVOTE, NIL)]
    actions = votes_from(engine, (1, 2, 3), 1, 1, PREVOTE, c.hash)  # line 36, step prevote
    assert cast(actions) == [(1, PRECOMMIT, c.hash)]
    state = engine.lock_state()
    assert (state.locked_round, state.locked_block, state.valid_round, state.valid_block) == (
        1, c, 1, c)


def test_a_quorum_seen_after_precommitting_updates_only_the_valid_block() -> None:
    me = leader(1, 1)  # replica 2: leads round 1
    engine, _ = replica(me)
    b = block(0)
    others = [i for i in range(4) if i != me]
    assert cast(engine.on_timeout(1, 0, Step.PROPOSE)) == [(0, PREVOTE, NIL)]
    votes_from(engine, (me,), 1, 0, PREVOTE, NIL)
    actions = votes_from(engine, (0, 1), 1, 0, PREVOTE, b.hash)  # 2f+1 prevotes, split
    assert of(actions, ScheduleTimeout) == [ScheduleTimeout(1, 0, Step.PREVOTE, TIMEOUTS.prevote)]
    assert cast(engine.on_timeout(1, 0, Step.PREVOTE)) == [(0, PRECOMMIT, NIL)]
    engine.on_proposal(proposal(1, 0, b), valid=True)
    assert cast(votes_from(engine, (3,), 1, 0, PREVOTE, b.hash)) == []  # a late quorum for B
    assert (engine.locked_round, engine.locked_block) == (-1, None)
    assert (engine.valid_round, engine.valid_block) == (0, b)
    actions = next_round(engine, others)
    assert Propose(1, 1, 0, b) in actions  # it re-proposes B, saying where B got its quorum


# -- round skipping ---------------------------------------------------------------------------


def test_f_plus_one_messages_of_a_higher_round_make_the_replica_jump() -> None:
    engine, _ = replica(0)
    assert votes_from(engine, (1,), 1, 3, PREVOTE, NIL) == []
    assert engine.on_vote(vote(1, 1, 3, PRECOMMIT, NIL)) == []  # the same member again
    assert engine.on_vote(Vote(CHAIN_ID, 1, 3, PREVOTE, NIL, signer(9).id, b"s")) == []  # outsider
    assert engine.round == 0
    actions = engine.on_vote(vote(2, 1, 3, PREVOTE, NIL))  # f+1 = 2 distinct members
    assert engine.round == 3 and engine.step == Step.PROPOSE
    assert ScheduleTimeout(1, 3, Step.PROPOSE, TIMEOUTS.of(Step.PROPOSE, 3)) in actions
    assert Propose(1, 3, -1, None) in actions  # replica 0 leads (1 + 3) % 4 == 0


def test_a_proposal_counts_towards_a_round_jump_and_is_then_prevoted() -> None:
    engine, _ = replica(1)
    blk = block(5)
    assert engine.on_proposal(proposal(1, 5, blk), valid=True) == []
    actions = engine.on_vote(vote(0, 1, 5, PREVOTE, blk.hash))
    assert engine.round == 5
    assert cast(actions) == [(5, PREVOTE, blk.hash)]


def test_the_jump_goes_to_the_highest_round_with_f_plus_one_and_never_back() -> None:
    engine, _ = replica(0)
    votes_from(engine, (1,), 1, 2, PREVOTE, NIL)
    votes_from(engine, (2,), 1, 2, PREVOTE, NIL)
    assert engine.round == 2
    votes_from(engine, (1, 2, 3), 1, 1, PREVOTE, NIL)
    assert engine.round == 2
    votes_from(engine, (1, 3), 1, 7, PRECOMMIT, NIL)
    assert engine.round == 7


# -- heights: buffering and old messages ------------------------------------------------------


def test_next_height_messages_are_buffered_and_used_after_start_height() -> None:
    engine, _ = replica(0)
    parent = block(0)
    child = block(0, parent=parent)
    early = [engine.on_proposal(proposal(2, 0, child), valid=True)]
    early += [engine.on_vote(vote(v, 2, 0, PREVOTE, child.hash)) for v in (1, 2)]
    early += [engine.on_vote(vote(v, 3, 0, PREVOTE, NIL)) for v in (1, 2, 3)]  # two ahead: dropped
    assert all(actions == [] for actions in early)
    assert engine.height == 1 and engine.round == 0
    actions = engine.start_height(2, COMMITTEE)
    # the buffered proposal is prevoted (its block valid, as reported) ...
    assert cast(actions) == [(0, PREVOTE, child.hash)]
    # ... and with its own prevote fed back the buffered prevotes complete a quorum
    actions = engine.on_vote(vote(0, 2, 0, PREVOTE, child.hash))
    assert cast(actions) == [(0, PRECOMMIT, child.hash)]
    engine.on_vote(vote(0, 2, 0, PRECOMMIT, child.hash))
    votes_from(engine, (1, 2), 2, 0, PRECOMMIT, child.hash)
    assert engine.step == Step.DECIDED
    engine.start_height(3, COMMITTEE)
    assert engine.round == 0 and engine._votes[(0, PREVOTE)].total() == 0  # height 3: dropped


def test_a_buffered_proposal_reported_invalid_gets_a_nil_prevote() -> None:
    engine, _ = replica(0)
    child = block(0, parent=block(0))
    engine.on_proposal(proposal(2, 0, child), valid=False)
    assert cast(engine.start_height(2, COMMITTEE)) == [(0, PREVOTE, NIL)]


def test_messages_of_earlier_heights_are_ignored() -> None:
    engine, _ = replica(0, height=2)
    old = block(0)
    assert engine.on_proposal(proposal(1, 0, old), valid=True) == []
    assert votes_from(engine, (1, 2, 3), 1, 0, PRECOMMIT, old.hash) == []
    assert votes_from(engine, (1, 2), 1, 4, PREVOTE, NIL) == []  # no round jump either
    assert engine.on_block(old, valid=True) == []
    assert engine.round == 0 and engine.step == Step.PROPOSE
    assert engine.on_timeout(1, 0, Step.PROPOSE) == []  # a timer of the old height


def test_a_stale_timeout_of_an_earlier_round_is_ignored() -> None:
    engine, _ = replica(0)
    next_round(engine)
    assert engine.on_timeout(1, 0, Step.PROPOSE) == []
    assert engine.on_timeout(1, 0, Step.PRECOMMIT) == []
    assert engine.round == 1 and engine.step == Step.PROPOSE


# -- who counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("me", [None, signer(9).id], ids=["no-identity", "not-a-member"])
def test_followers_decide_without_ever_voting_or_proposing(me: bytes | None) -> None:
    engine = CommitteeConsensus(CHAIN_ID, me, TIMEOUTS)
    actions = engine.start_height(1, COMMITTEE)
    # a follower steps through the round like a member (timeouts included) but casts nothing
    actions += engine.on_timeout(1, 0, Step.PROPOSE)
    actions += votes_from(engine, (0, 1, 2), 1, 0, PREVOTE, NIL)
    actions += votes_from(engine, (0, 1, 2), 1, 0, PRECOMMIT, NIL)
    actions += engine.on_timeout(1, 0, Step.PRECOMMIT)
    blk = block(1)
    actions += engine.on_proposal(proposal(1, 1, blk), valid=True)
    actions += votes_from(engine, (0, 1, 3), 1, 1, PREVOTE, blk.hash)
    actions += votes_from(engine, (1, 2, 3), 1, 1, PRECOMMIT, blk.hash)
    assert of(actions, CastVote) == [] and of(actions, Propose) == []
    (decide,) = of(actions, Decide)
    assert (decide.round, decide.block) == (1, blk)
    assert certificate_problems(decide.certificate, blk, 1, COMMITTEE, signed=False) == []


def test_messages_from_outsiders_wrong_leaders_or_other_chains_are_ignored() -> None:
    engine, _ = replica(0)
    blk = block(0)
    assert engine.on_proposal(proposal(1, 0, blk, proposer=2), valid=True) == []  # not its turn
    assert engine.on_proposal(proposal(1, 0, blk, chain_id="other"), valid=True) == []
    assert engine.on_vote(Vote(CHAIN_ID, 1, 0, PREVOTE, blk.hash, signer(9).id, b"s")) == []
    assert engine.on_vote(vote(1, 1, 0, PREVOTE, blk.hash, chain_id="other")) == []
    assert engine.step == Step.PROPOSE
    assert engine._votes[(0, PREVOTE)].total() == 0
    # the real proposal still goes through
    assert cast(engine.on_proposal(proposal(1, 0, blk), valid=True)) == [(0, PREVOTE, blk.hash)]


# -- equivocation -------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [PREVOTE, PRECOMMIT])
def test_two_conflicting_votes_are_reported_and_count_once_for_each_block(step) -> None:
    engine, _ = replica(0)
    b, c = block(0), block(1)
    first, second = vote(3, 1, 0, step, b.hash), vote(3, 1, 0, step, c.hash)
    assert engine.on_vote(first) == []
    assert engine.on_vote(first) == []  # a duplicate is no equivocation
    actions = engine.on_vote(second)
    assert actions == [Equivocation(IDS[3], first, second)]
    (report,) = actions
    assert report.first.voter == report.second.voter == report.offender
    assert (report.first.height, report.first.round, report.first.step) == (
        report.second.height, report.second.round, report.second.step)
    votes = engine._votes[(0, step)]
    assert votes.total() == 1  # one member (timeouts and round jumps count members)
    assert votes.count(b.hash) == 1 and votes.count(c.hash) == 1  # as in the paper: per block
    # a nil vote after a block vote conflicts too; repeating a vote does not count it twice
    assert of(engine.on_vote(vote(3, 1, 0, step, NIL)), Equivocation)
    engine.on_vote(second)
    assert votes.count(c.hash) == 1 and votes.count(NIL) == 1


def test_two_conflicting_proposals_are_reported_and_the_first_one_stands() -> None:
    engine, _ = replica(0)
    lead = leader(1, 0)
    a, b = block_on(genesis(), 0, lead), block_on(genesis(), 0, lead, variant=1)
    first, second = proposal(1, 0, a), proposal(1, 0, b)
    assert cast(engine.on_proposal(first, valid=True)) == [(0, PREVOTE, a.hash)]
    assert engine.on_proposal(first, valid=True) == []
    actions = engine.on_proposal(second, valid=True)
    assert actions == [Equivocation(IDS[lead], first, second)]
    assert engine._proposals[0] is first


def test_a_quorum_completed_by_an_equivocators_other_vote_decides() -> None:
    """Replica 0 first got member 3's nil precommit; the others decided B with member 3's B
    precommit. Their certificate's votes must still make replica 0 decide B."""
    engine, _ = replica(0)
    blk = block(0)
    engine.on_proposal(proposal(1, 0, blk), valid=True)
    engine.on_vote(vote(3, 1, 0, PRECOMMIT, NIL))
    votes_from(engine, (1, 2), 1, 0, PRECOMMIT, blk.hash)
    actions = engine.on_vote(vote(3, 1, 0, PRECOMMIT, blk.hash))
    assert of(actions, Equivocation)
    (decide,) = of(actions, Decide)
    assert decide.block == blk
    assert [v for v, _ in decide.certificate.signatures] == sorted([IDS[1], IDS[2], IDS[3]])


def test_an_equivocators_votes_count_for_a_bounded_number_of_blocks() -> None:
    engine, _ = replica(0)
    for i in range(MAX_VALUES_PER_VOTER + 5):
        engine.on_vote(vote(3, 1, 0, PREVOTE, bytes([i + 1]) * 32))
    votes = engine._votes[(0, PREVOTE)]
    assert sum(votes.tally.values()) == MAX_VALUES_PER_VOTER and votes.total() == 1


def test_equivocation_is_reported_after_the_decision_too() -> None:
    engine, _ = replica(0)
    blk = block(0)
    engine.on_proposal(proposal(1, 0, blk), valid=True)
    votes_from(engine, (1, 2, 3), 1, 0, PRECOMMIT, blk.hash)
    assert engine.step == Step.DECIDED
    assert of(engine.on_vote(vote(3, 1, 0, PRECOMMIT, NIL)), Equivocation)


# -- deciding -------------------------------------------------------------------------------------


def test_a_quorum_for_an_unknown_block_fetches_it_once_then_decides() -> None:
    engine, _ = replica(0)
    blk = block(0)
    actions = votes_from(engine, (1, 2, 3), 1, 0, PRECOMMIT, blk.hash)
    assert of(actions, FetchBlock) == [FetchBlock(1, blk.hash)]
    assert of(engine.on_vote(vote(0, 1, 0, PRECOMMIT, blk.hash)), FetchBlock) == []  # once
    assert engine.on_block(block(0, parent=blk), valid=True) == []  # another height
    actions = engine.on_block(blk, valid=True)
    (decide,) = of(actions, Decide)
    assert decide.block == blk
    assert len(decide.certificate.signatures) == 4


def test_a_decision_in_an_earlier_round_is_taken_from_a_later_round() -> None:
    engine, _ = replica(0)
    blk = block(0)
    engine.on_proposal(proposal(1, 0, blk), valid=True)
    votes_from(engine, (2, 3), 1, 2, PREVOTE, NIL)  # f+1 of round 2: jump
    assert engine.round == 2
    actions = votes_from(engine, (1, 2, 3), 1, 0, PRECOMMIT, blk.hash)
    (decide,) = of(actions, Decide)
    assert (decide.round, decide.block) == (0, blk)


def test_a_block_reported_invalid_can_be_reported_valid_later() -> None:
    engine, _ = replica(0)
    blk = block(0)
    assert cast(engine.on_proposal(proposal(1, 0, blk), valid=False)) == [(0, PREVOTE, NIL)]
    assert of(votes_from(engine, (1, 2, 3), 1, 0, PRECOMMIT, blk.hash), Decide) == []
    (decide,) = of(engine.on_block(blk, valid=True), Decide)
    assert decide.block == blk
    # the other way round, a valid block stays valid
    engine, _ = replica(0)
    engine.on_block(blk, valid=True)
    assert cast(engine.on_proposal(proposal(1, 0, blk), valid=False)) == [(0, PREVOTE, blk.hash)]


# -- restart within a height ------------------------------------------------------------------


def test_start_height_with_a_lock_resumes_its_round_and_keeps_the_lock() -> None:
    b, c = block(0), block(2)
    lock = LockState(round=2, locked_round=0, locked_block=b, valid_round=1, valid_block=b)
    engine, actions = replica(0, lock=lock)
    assert engine.round == 2
    assert ScheduleTimeout(1, 2, Step.PROPOSE, TIMEOUTS.of(Step.PROPOSE, 2)) in actions
    assert cast(engine.on_proposal(proposal(1, 2, c), valid=True)) == [(2, PREVOTE, NIL)]
    assert engine.lock_state() == lock
    # as the leader of round 3 it re-proposes its valid block
    assert Propose(1, 3, 1, b) in next_round(engine)


def test_a_restarted_replica_with_its_guard_never_signs_a_conflicting_vote(tmp_path: Path) -> None:
    b, c = block(0), block(1)
    signed: dict[tuple[int, int, int], bytes] = {}

    def carry_out(engine: CommitteeConsensus, guard: VoteGuard, actions: list) -> list:
        """Signs through the guard as a daemon would; returns the votes that went out."""
        out = []
        for action in of(actions, CastVote):
            position = (action.height, action.round, int(action.step))
            sig = guard.sign(*position, action.block_hash, engine.lock_state(),
                             lambda a=action: f"{a.round}/{a.step}/{a.block_hash.hex()}".encode())
            if sig is not None:
                assert signed.setdefault(position, action.block_hash) == action.block_hash
                out.append((*position, action.block_hash))
        return out

    guard = VoteGuard(tmp_path)
    engine, _ = replica(0)
    out = carry_out(engine, guard, engine.on_proposal(proposal(1, 0, b), valid=True))
    out += carry_out(engine, guard, votes_from(engine, (0, 1, 2), 1, 0, PREVOTE, b.hash))
    assert out == [(1, 0, 1, b.hash), (1, 0, 2, b.hash)]  # prevoted and precommitted B
    old_precommit = guard.last
    del engine, guard  # crash

    guard = VoteGuard(tmp_path)
    lock = guard.lock_for(1)
    assert lock is not None and (lock.locked_round, lock.locked_block) == (0, b)
    engine = CommitteeConsensus(CHAIN_ID, IDS[0], TIMEOUTS)
    assert engine.start_height(1, COMMITTEE, lock) == [
        ScheduleTimeout(1, 0, Step.PROPOSE, TIMEOUTS.propose)]
    # round 0 again, the proposal not re-sent yet: the nil prevote is refused (already past it)
    actions = engine.on_timeout(1, 0, Step.PROPOSE)
    assert cast(actions) == [(0, PREVOTE, NIL)] and carry_out(engine, guard, actions) == []
    # the peers' prevotes come again; the prevote timeout asks for a nil precommit where B was
    # precommitted: refused
    actions = votes_from(engine, (1, 2), 1, 0, PREVOTE, b.hash)
    actions += votes_from(engine, (3,), 1, 0, PREVOTE, NIL)
    actions += engine.on_timeout(1, 0, Step.PREVOTE)
    assert cast(actions) == [(0, PRECOMMIT, NIL)] and carry_out(engine, guard, actions) == []
    assert guard.last == old_precommit
    next_round(engine)
    # round 1: C proposed fresh; the restored lock makes it a nil prevote, which is signed
    actions = engine.on_proposal(proposal(1, 1, c), valid=True)
    assert carry_out(engine, guard, actions) == [(1, 1, 1, NIL)]

    # without the lock, the same restart would have prevoted C: the lock is what keeps it safe
    forgetful = CommitteeConsensus(CHAIN_ID, IDS[0], TIMEOUTS)
    forgetful.start_height(1, COMMITTEE, LockState(round=1))
    assert cast(forgetful.on_proposal(proposal(1, 1, c), valid=True)) == [(1, PREVOTE, c.hash)]


# -- simulations --------------------------------------------------------------------------------


def assert_safe(sim: Simulation) -> None:
    assert sim.disagreements() == []
    for r in sim.honest:
        for height, decision in r.decisions.items():
            assert certificate_problems(
                decision.certificate, decision.block, height, sim.committee, sim.sign) == []


def test_sim_honest_committee_decides_the_same_chain_with_real_certificates() -> None:
    sim = Simulation(4, seed=1, sign=True)
    sim.start()
    sim.run(heights=12)
    assert sim.decided_heights() >= 12
    assert_safe(sim)
    chain = [sim.replicas[0].decisions[h].block for h in range(1, 13)]
    assert [b.height for b in chain] == list(range(1, 13))
    assert all(child.header.parent_hash == parent.hash
               for parent, child in zip([genesis(), *chain], chain, strict=False))
    for r in sim.replicas:
        assert [r.decisions[h].block.hash for h in range(1, 13)] == [b.hash for b in chain]
        for h in range(1, 13):
            qc = r.decisions[h].certificate
            assert len({v for v, _ in qc.signatures}) >= sim.committee.quorum
            assert qc.block_hash == chain[h - 1].hash
    # a fast network decides every height in round 0, proposed by the round-0 leader
    assert all(d.round == 0 for r in sim.replicas for d in r.decisions.values())
    assert all(r.equivocations == [] for r in sim.replicas)


@pytest.mark.parametrize("delay", [(0.01, 0.3), (0.0, 3.0)], ids=["fast", "slower-than-timeouts"])
def test_sim_random_delays_keep_agreement_and_make_progress(delay) -> None:
    late_rounds = 0
    for seed in range(30):
        sim = Simulation(4, seed=seed, delay=delay)
        sim.start()
        sim.run(heights=10, max_time=2000)
        assert_safe(sim)
        assert sim.decided_heights() >= 10, seed
        late_rounds += sum(d.round > 0 for r in sim.replicas for d in r.decisions.values())
        if 2 * delay[1] < TIMEOUTS.propose:
            # The next leader's proposal often reaches a replica before that replica decided:
            # it is buffered and, once the height starts, prevoted like any other.
            assert all(v.block_hash != NIL for r in sim.replicas for v in r.votes_cast), seed
    if 2 * delay[1] < TIMEOUTS.propose:
        assert late_rounds == 0  # every height decided in round 0
    else:
        assert late_rounds > 0  # the slow network did exercise later rounds


def test_sim_dropped_messages_with_gossip_keep_agreement_and_make_progress() -> None:
    for seed in range(10):
        sim = Simulation(4, seed=seed, delay=(0.01, 0.4), drop=0.3, gossip=1.0)
        sim.start()
        sim.run(heights=5, max_time=2000)
        assert_safe(sim)
        assert sim.decided_heights() >= 5, seed


def test_sim_a_silent_leader_costs_one_round() -> None:
    sim = Simulation(4, seed=3, silent={1})
    sim.start()
    sim.run(heights=6)
    assert_safe(sim)
    assert sim.decided_heights() >= 6
    for r in sim.honest:
        for height, decision in r.decisions.items():
            round0_leader = leader(height, 0)
            if round0_leader == 1:  # height 1 and 5: replica 1 should have proposed
                assert decision.round == 1
                assert decision.block.header.proposer == IDS[leader(height, 1)]
            else:
                assert decision.round == 0


def test_sim_invalid_blocks_are_never_decided() -> None:
    sim = Simulation(4, seed=9, valid=lambda b: b.header.proposer != IDS[2])
    sim.start()
    sim.run(heights=8)
    assert_safe(sim)
    assert sim.decided_heights() >= 8
    for r in sim.replicas:
        for height, decision in r.decisions.items():
            assert decision.block.header.proposer != IDS[2]
            assert decision.round == (1 if leader(height, 0) == 2 else 0)
    # validity is deterministic: everybody, replica 2 included, prevoted nil on them
    prevotes = [v for r in sim.replicas for v in r.votes_cast
                if v.step == PREVOTE and leader(v.height, v.round) == 2]
    assert prevotes and all(v.block_hash == NIL for v in prevotes)


def test_sim_silent_leaders_make_rounds_and_timeouts_grow() -> None:
    sim = Simulation(7, seed=4, silent={1, 2})  # f = 2: the leaders of rounds 0 and 1
    sim.start()
    sim.run(heights=1)
    assert_safe(sim)
    for r in sim.honest:
        assert r.decisions[1].round == 2
        assert r.decisions[1].block.header.proposer == sim.committee.proposer(1, 2)
        proposes = [t for t in r.timeouts if t.height == 1 and t.step == Step.PROPOSE]
        assert [t.round for t in proposes] == [0, 1, 2]
        assert proposes[0].delay < proposes[1].delay < proposes[2].delay
        precommits = [t for t in r.timeouts if t.height == 1 and t.step == Step.PRECOMMIT]
        assert len(precommits) >= 2 and precommits[0].delay < precommits[1].delay


@pytest.mark.parametrize("kind", ["leader", "voter", "both"])
def test_sim_one_equivocating_member_cannot_split_the_honest_ones(kind: str) -> None:
    byz = Byzantine(equivocate_proposals=kind != "voter", equivocate_votes=kind != "leader")
    for seed in range(15):
        sim = Simulation(4, seed=seed, delay=(0.01, 0.6), byzantine={1: byz}, gossip=1.0)
        sim.start()
        sim.run(heights=6, max_time=2000)
        assert_safe(sim)
        assert sim.decided_heights() >= 6, seed


@pytest.mark.parametrize("kind", ["leader", "voter"])
def test_sim_an_equivocation_is_reported_with_both_messages(kind: str) -> None:
    byz = Byzantine(equivocate_proposals=kind == "leader", equivocate_votes=kind == "voter",
                    witnesses=frozenset({0}))
    sim = Simulation(4, seed=7, byzantine={1: byz})
    sim.start()
    sim.run(heights=4)
    assert_safe(sim)
    reports = sim.replicas[0].equivocations
    assert reports
    message_type = Proposal if kind == "leader" else Vote
    for report in reports:
        assert report.offender == IDS[1]
        first, second = report.first, report.second
        assert isinstance(first, message_type) and isinstance(second, message_type)
        if isinstance(first, Proposal):
            assert first.proposer == second.proposer == IDS[1]
            assert (first.height, first.round) == (second.height, second.round)
            assert first.block.hash != second.block.hash
        else:
            assert first.voter == second.voter == IDS[1]
            assert (first.height, first.round, first.step) == (
                second.height, second.round, second.step)
            assert first.block_hash != second.block_hash
    assert {type(r.first) for r in reports} == {message_type}
    # those that saw only one version report nothing
    assert all(r.equivocations == [] for r in sim.replicas[2:])


def test_sim_f_plus_one_cut_off_halts_decisions_until_they_come_back() -> None:
    sim = Simulation(4, seed=5)
    sim.partition({0, 1}, {2}, {3})
    sim.start()
    sim.run(max_time=300)  # nothing is left to do: every replica waits for a quorum
    assert all(r.decisions == {} for r in sim.replicas)
    assert not sim._queue
    sim.heal()
    sim.run(heights=5, max_time=2000)
    assert_safe(sim)
    assert sim.decided_heights() >= 5


def test_sim_f_plus_one_silent_lose_liveness_but_not_safety() -> None:
    sim = Simulation(4, seed=6, silent={2, 3})
    sim.start()
    sim.run(max_time=1000)
    assert all(r.decisions == {} for r in sim.replicas)
    # the two alive replicas prevoted nil and wait for a quorum that cannot come
    assert all(r.engine.round == 0 and r.engine.step == Step.PREVOTE for r in sim.honest)


@pytest.mark.parametrize("identities", [False, True], ids=["no-identity", "not-a-member"])
def test_sim_followers_decide_the_same_chain_without_voting(identities: bool) -> None:
    sim = Simulation(4, seed=8, followers=2, follower_identities=identities)
    sim.start()
    sim.run(heights=5)
    members, followers = sim.replicas[:4], sim.replicas[4:]
    assert_safe(sim)
    for f in followers:
        assert f.votes_cast == [] and f.proposals_made == [] and f.signed == {}
        assert [f.decisions[h].block.hash for h in range(1, 6)] == [
            members[0].decisions[h].block.hash for h in range(1, 6)]


def test_sim_crash_after_precommit_and_restart_from_the_guard(tmp_path: Path) -> None:
    refusals = restarts = 0
    for seed in range(12):
        directory = tmp_path / f"guard-{seed}"
        sim = Simulation(4, seed=seed, delay=(0.01, 0.4), gossip=1.0,
                         guard_dirs={3: directory})
        crash_at = {seed % 3 + 1}  # crash replica 3 right after a precommit at this height

        def on_signed(replica, position, block_hash, sim=sim, crash_at=crash_at) -> None:
            height, _, step = position
            if replica.index == 3 and step == PRECOMMIT and height in crash_at:
                crash_at.discard(height)
                sim.at(sim.now, lambda: sim.crash(3))  # after the precommit went out
                sim.at(sim.now + 0.3, lambda: sim.restart(3))

        sim.on_signed = on_signed
        sim.start()
        sim.run(heights=5, max_time=2000)
        assert_safe(sim)
        assert sim.double_signed() == []
        assert sim.decided_heights() >= 5, seed
        restarts += not crash_at
        refusals += len(sim.replicas[3].refused)
    assert restarts == 12
    assert refusals > 0  # the guard had to refuse something a restarted replica asked for
