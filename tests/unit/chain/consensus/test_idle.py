"""No empty blocks while nothing is pending (CometBFT's create_empty_blocks = false).

With ``wait_for_work`` a height's round 0 waits for work before its propose step: no proposal,
no timeout, so an idle chain makes no blocks and changes no views. Work (a pending transaction
at this replica), or any proposal or vote of the height from a member, starts the round.
"""

from __future__ import annotations

from dualchain.chain.consensus.committee import (
    NIL,
    CommitteeConsensus,
    LockState,
    Propose,
    ScheduleTimeout,
    Step,
    Timeouts,
    WaitForWork,
)
from dualchain.chain.types import VoteStep
from tests.unit.chain.consensus.simulation import (
    CHAIN_ID,
    Simulation,
    block_on,
    certificate_problems,
    genesis,
    make_committee,
    signer,
)
from tests.unit.chain.consensus.test_committee import leader, proposal, vote

COMMITTEE = make_committee(4)
IDS = COMMITTEE.members
TIMEOUTS = Timeouts()


def waiting(me: int) -> tuple[CommitteeConsensus, list]:
    engine = CommitteeConsensus(CHAIN_ID, IDS[me], TIMEOUTS, wait_for_work=True)
    return engine, engine.start_height(1, COMMITTEE)


def test_a_height_waits_for_work_without_proposing_or_timing_out() -> None:
    engine, actions = waiting(leader(1, 0))
    assert actions == [WaitForWork(1)]
    assert engine.waiting
    assert engine.on_timeout(1, 0, Step.PROPOSE) == []  # nothing was scheduled; nothing moves
    assert engine.step == Step.PROPOSE and engine.round == 0


def test_work_starts_round_zero_once() -> None:
    lead = leader(1, 0)
    engine, _ = waiting(lead)
    assert engine.on_work() == [Propose(1, 0, -1, None),
                                ScheduleTimeout(1, 0, Step.PROPOSE, TIMEOUTS.propose)]
    assert engine.on_work() == []
    other, _ = waiting((lead + 1) % 4)
    assert other.on_work() == [ScheduleTimeout(1, 0, Step.PROPOSE, TIMEOUTS.propose)]


def test_a_proposal_of_the_height_wakes_a_waiting_replica_and_is_prevoted() -> None:
    engine, _ = waiting((leader(1, 0) + 1) % 4)
    actions = engine.on_proposal(proposal(1, 0, block_on(genesis(), 0, leader(1, 0))), True)
    assert ScheduleTimeout(1, 0, Step.PROPOSE, TIMEOUTS.propose) in actions
    assert not engine.waiting and engine.step == Step.PREVOTE


def test_a_members_vote_wakes_a_waiting_leader_but_an_outsiders_does_not() -> None:
    lead = leader(1, 0)
    engine, _ = waiting(lead)
    outsider = vote(0, 1, 0, VoteStep.PREVOTE, NIL)
    outsider = type(outsider)(CHAIN_ID, 1, 0, VoteStep.PREVOTE, NIL, signer(9).id, b"sig")
    assert engine.on_vote(outsider) == [] and engine.waiting
    actions = engine.on_vote(vote((lead + 1) % 4, 1, 0, VoteStep.PREVOTE, NIL))
    assert Propose(1, 0, -1, None) in actions and not engine.waiting


def test_a_replica_restarted_with_a_lock_does_not_wait() -> None:
    held = block_on(genesis(), 0, leader(1, 0))
    engine = CommitteeConsensus(CHAIN_ID, IDS[1], TIMEOUTS, wait_for_work=True)
    actions = engine.start_height(1, COMMITTEE, LockState(0, 0, held, 0, held))
    assert not engine.waiting
    assert ScheduleTimeout(1, 0, Step.PROPOSE, TIMEOUTS.propose) in actions


def test_a_later_round_never_waits() -> None:
    engine, _ = waiting(1)
    engine.on_work()
    for voter in (0, 2, 3):
        engine.on_vote(vote(voter, 1, 0, VoteStep.PRECOMMIT, NIL))
    actions = engine.on_timeout(1, 0, Step.PRECOMMIT)
    assert engine.round == 1 and not engine.waiting
    assert ScheduleTimeout(1, 1, Step.PROPOSE, TIMEOUTS.of(Step.PROPOSE, 1)) in actions


# -- simulated committees ----------------------------------------------------------------------


def assert_safe(sim: Simulation) -> None:
    assert sim.disagreements() == []
    for r in sim.honest:
        for height, decision in r.decisions.items():
            assert certificate_problems(
                decision.certificate, decision.block, height, sim.committee, sim.sign) == []


def test_sim_an_idle_committee_sends_nothing_and_changes_no_view() -> None:
    sim = Simulation(4, seed=1, wait_for_work=True)
    sim.start()
    sim.run(max_time=3600)
    assert all(r.decisions == {} and r.timeouts == [] and r.votes_cast == []
               and r.proposals_made == [] for r in sim.replicas)
    assert all(len(r.waits) == 1 for r in sim.replicas)


def test_sim_work_at_one_replica_commits_and_the_chain_goes_quiet_again() -> None:
    """The work stays pending at one replica only (as if its gossip were lost): the leader
    learns of it through that replica's nil prevote after its propose timeout, and proposes."""
    for seed in range(20):
        sim = Simulation(4, seed=seed, wait_for_work=True, delay=(0.01, 0.3))
        holder = seed % 4
        sim.at(5.0, lambda sim=sim, holder=holder: sim.add_work(holder))
        sim.at(30.0, lambda sim=sim: sim.work.clear())
        sim.start()
        sim.run(max_time=3600)
        assert_safe(sim)
        decided = sim.decided_heights()
        assert decided >= 1, seed
        last = max(d.time for r in sim.replicas for d in r.decisions.values())
        assert last < 40.0, seed  # once the work is gone, no further blocks
        assert all(r.engine.waiting for r in sim.replicas), seed


def test_sim_work_everywhere_with_faults_keeps_agreement_and_progress() -> None:
    for seed in range(20):
        sim = Simulation(4, seed=seed, wait_for_work=True, delay=(0.01, 0.5), drop=0.2,
                         gossip=1.0, silent={seed % 4})
        for i in range(4):
            sim.at(1.0 + i, lambda sim=sim, i=i: sim.add_work(i))
        sim.start()
        sim.run(heights=6, max_time=2000)
        assert_safe(sim)
        assert sim.decided_heights() >= 6, seed
