"""Linear vote collection (``collector.py``): the routing rules, the collector's bundles, and
simulated committees with the same faults as the all-to-all runs (delays beyond the timeouts,
drops, partitions, crashes with restarts, equivocation, silent and withholding collectors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualchain.chain.consensus.collector import Collector, moved_on, vote_targets
from dualchain.chain.consensus.committee import NIL, Step
from dualchain.chain.types import VoteStep
from tests.unit.chain.consensus.simulation import Byzantine, Simulation, make_committee
from tests.unit.chain.consensus.test_committee import assert_safe, leader, vote

PREVOTE, PRECOMMIT = VoteStep.PREVOTE, VoteStep.PRECOMMIT
COMMITTEE = make_committee(4)
IDS = COMMITTEE.members
B = b"\x01" * 32


def test_round_zero_block_votes_go_to_the_collectors_and_the_rest_to_everybody() -> None:
    lead, following = IDS[leader(1, 0)], IDS[leader(2, 0)]
    assert vote_targets(COMMITTEE, vote(0, 1, 0, PREVOTE, B)) == (lead,)
    assert vote_targets(COMMITTEE, vote(0, 1, 0, PRECOMMIT, B)) == (lead, following)
    assert vote_targets(COMMITTEE, vote(0, 1, 0, PREVOTE, NIL)) is None
    assert vote_targets(COMMITTEE, vote(0, 1, 0, PRECOMMIT, NIL)) is None
    assert vote_targets(COMMITTEE, vote(0, 1, 1, PREVOTE, B)) is None


def test_the_collector_bundles_a_quorum_once_then_a_block_quorum_completed_later() -> None:
    collector = Collector(COMMITTEE.quorum)  # 3 of 4
    assert collector.add(vote(0, 1, 0, PREVOTE, B)) == []
    assert collector.add(vote(0, 1, 0, PREVOTE, B)) == []  # a duplicate counts once
    assert collector.add(vote(1, 1, 0, PREVOTE, NIL)) == []
    first = collector.add(vote(2, 1, 0, PREVOTE, B))  # a quorum of any values: its block votes
    assert sorted(v.voter for v in first) == sorted([IDS[0], IDS[2]])
    assert all(v.block_hash == B for v in first)
    late = collector.add(vote(3, 1, 0, PREVOTE, B))  # B now has a quorum: B's votes again
    assert sorted(v.voter for v in late) == sorted([IDS[0], IDS[2], IDS[3]])
    assert collector.add(vote(0, 1, 0, PRECOMMIT, B)) == []  # steps are separate


def test_a_quorum_for_one_block_goes_out_in_one_bundle() -> None:
    collector = Collector(COMMITTEE.quorum)
    bundles = [collector.add(vote(i, 1, 0, PRECOMMIT, B)) for i in range(4)]
    assert [len(b) for b in bundles] == [0, 0, 3, 0]


def test_a_vote_falls_back_to_everybody_until_its_step_moved_on() -> None:
    prevote, precommit = vote(0, 1, 0, PREVOTE, B), vote(0, 1, 0, PRECOMMIT, B)
    assert not moved_on(1, 0, Step.PREVOTE, prevote)
    assert moved_on(1, 0, Step.PRECOMMIT, prevote)
    assert not moved_on(1, 0, Step.PRECOMMIT, precommit)
    assert moved_on(1, 0, Step.DECIDED, precommit)
    assert moved_on(1, 1, Step.PROPOSE, precommit) and moved_on(2, 0, Step.PROPOSE, prevote)


# -- simulated committees ----------------------------------------------------------------------


def votes_per_height(sim: Simulation, heights: int) -> float:
    return (sim.sent["Vote"] + sim.sent["tuple"]) / heights


def test_sim_linear_votes_are_o_n_messages_a_height_and_decide_in_round_zero() -> None:
    n, heights = 16, 8
    counts = {}
    for linear in (False, True):
        sim = Simulation(n, seed=2, linear=linear, delay=(0.01, 0.1))
        sim.start()
        sim.run(heights=heights)
        assert_safe(sim)
        assert sim.decided_heights() >= heights
        assert all(d.round == 0 for r in sim.replicas for d in r.decisions.values())
        counts[linear] = votes_per_height(sim, sim.decided_heights())
    # all-to-all: 2 x 16 x 15 = 480 vote messages a height; linear: 2 x 15 votes in (a precommit
    # to two collectors) plus 2 x 15 bundles out, about 4N.
    assert counts[False] >= 2 * n * (n - 1)
    assert counts[True] <= 5 * n, counts


@pytest.mark.parametrize("delay", [(0.01, 0.3), (0.0, 3.0)], ids=["fast", "slower-than-timeouts"])
def test_sim_linear_random_delays_keep_agreement_and_make_progress(delay) -> None:
    for seed in range(30):
        sim = Simulation(4 + 3 * (seed % 2), seed=seed, delay=delay, linear=True)
        sim.start()
        sim.run(heights=8, max_time=3000)
        assert_safe(sim)
        assert sim.decided_heights() >= 8, seed


def test_sim_linear_dropped_messages_with_gossip_keep_agreement_and_make_progress() -> None:
    for seed in range(15):
        sim = Simulation(4, seed=seed, delay=(0.01, 0.4), drop=0.3, gossip=1.0, linear=True)
        sim.start()
        sim.run(heights=5, max_time=3000)
        assert_safe(sim)
        assert sim.decided_heights() >= 5, seed


@pytest.mark.parametrize("fault", ["silent", "withholding"])
def test_sim_a_faulty_collector_costs_time_never_liveness(fault: str) -> None:
    """A silent member (it leads some heights, so collects them) or a collector that takes the
    votes and never bundles them: the others fall back to all-to-all and decide every height.
    A replica that moved on cannot tell whether the others got the bundle; one left behind
    catches up as in the daemon, by the re-sends of a stalled height (``gossip``)."""
    for seed in range(10):
        n = 4 + 3 * (seed % 2)
        faulty = seed % n
        kwargs = ({"silent": {faulty}} if fault == "silent"
                  else {"byzantine": {faulty: Byzantine(withhold_bundles=True)}})
        sim = Simulation(n, seed=seed, delay=(0.01, 0.3), linear=True, gossip=1.0, **kwargs)
        sim.start()
        sim.run(heights=2 * n, max_time=3000)
        assert_safe(sim)
        assert sim.decided_heights() >= 2 * n, seed
        if fault == "withholding":  # its heights still decide in round 0, after the fallback
            assert all(d.round == 0 for r in sim.honest for d in r.decisions.values()), seed


@pytest.mark.parametrize("kind", ["leader", "voter", "both"])
def test_sim_linear_one_equivocating_member_cannot_split_the_honest_ones(kind: str) -> None:
    byz = Byzantine(equivocate_proposals=kind != "voter", equivocate_votes=kind != "leader",
                    withhold_bundles=kind == "both")
    for seed in range(15):
        sim = Simulation(4, seed=seed, delay=(0.01, 0.6), byzantine={1: byz}, gossip=1.0,
                         linear=True)
        sim.start()
        sim.run(heights=6, max_time=3000)
        assert_safe(sim)
        assert sim.decided_heights() >= 6, seed


def test_sim_linear_partition_halts_then_heals() -> None:
    for seed in range(10):
        sim = Simulation(4, seed=seed, linear=True)
        sim.partition({0, 1}, {2}, {3})
        sim.start()
        sim.run(max_time=300)
        assert all(r.decisions == {} for r in sim.replicas)
        sim.heal()
        sim.run(heights=5, max_time=3000)
        assert_safe(sim)
        assert sim.decided_heights() >= 5, seed


def test_sim_linear_crash_and_restart_from_the_guard(tmp_path: Path) -> None:
    for seed in range(12):
        sim = Simulation(4, seed=seed, delay=(0.01, 0.4), gossip=1.0, linear=True,
                         guard_dirs={3: tmp_path / f"guard-{seed}"})
        crash_at = {seed % 3 + 1}

        def on_signed(replica, position, block_hash, sim=sim, crash_at=crash_at) -> None:
            height, _, step = position
            if replica.index == 3 and step == PRECOMMIT and height in crash_at:
                crash_at.discard(height)
                sim.at(sim.now, lambda: sim.crash(3))
                sim.at(sim.now + 0.3, lambda: sim.restart(3))

        sim.on_signed = on_signed
        sim.start()
        sim.run(heights=5, max_time=3000)
        assert_safe(sim)
        assert sim.double_signed() == []
        assert sim.decided_heights() >= 5, seed
        assert not crash_at


def test_sim_linear_with_idle_waiting_commits_work_and_goes_quiet() -> None:
    for seed in range(10):
        sim = Simulation(4, seed=seed, linear=True, wait_for_work=True, delay=(0.01, 0.3))
        sim.at(2.0, lambda sim=sim, seed=seed: sim.add_work(seed % 4))
        sim.at(20.0, lambda sim=sim: sim.work.clear())
        sim.start()
        sim.run(max_time=600)
        assert_safe(sim)
        assert sim.decided_heights() >= 1, seed
        assert all(r.engine.waiting for r in sim.replicas), seed
