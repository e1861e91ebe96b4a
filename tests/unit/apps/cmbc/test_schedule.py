"""Scheduling records on CMBC: a replica accepts a group assignment and a task plan only when
re-running the scheduler on the chain's client states reproduces them; everything else is
refused with its reason and changes nothing."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.apps.cmbc.payloads import (
    GroupAssignment,
    Regrouping,
    StateReport,
    TaskPlan,
)
from dualchain.apps.genesis import SchedParams
from dualchain.chain.errors import DecodeError
from dualchain.chain.types import TxKind
from dualchain.node.planner import Planner
from tests.ledger_builders import make_signer
from tests.unit.apps.cmbc.test_app import Chain, refused

SCHED = SchedParams(batches_per_client=10, upper=80, batch_size=64, history=4)
NODE = make_signer(31)
OUTSIDER = make_signer(32)
CLIENTS = [make_signer(40 + i) for i in range(6)]
# Three fast clients, three slow ones (samples per second x 1000).
SPEEDS = [4_000_000, 3_800_000, 4_200_000, 500_000, 450_000, 550_000]


def report(speed_milli: int, task: int = 1) -> StateReport:
    return StateReport(task=task, rtt_ms=10, completion_ms=round(64e6 / speed_milli),
                       speed_milli=speed_milli, failures=0, disconnected_ms=0)


class Setup:
    """A replica and a planner fed the same blocks: registrations, then state reports."""

    def __init__(self) -> None:
        self.chain = Chain()
        self.replica = CmbcApp(sched=SCHED)
        self.planner = Planner(SCHED)
        self.blocks: list = []  # every block added, for more replicas
        self.add([self.chain.register(c, node=NODE.id) for c in CLIENTS])
        self.add([self.chain.report(c, report(s)) for c, s in zip(CLIENTS, SPEEDS, strict=True)])

    def add(self, txs) -> None:
        block = self.chain.block(txs)
        self.blocks.append(block)
        self.replica.apply_block(block)
        self.planner.apply_final(block)

    def records_block(self, assignment: GroupAssignment | None, plan: TaskPlan | None,
                      sender=NODE, advance: bool = False):
        txs = []
        if assignment is not None:
            txs.append(self.chain.tx(sender, TxKind.GROUP_ASSIGNMENT, assignment.encode()))
        if plan is not None:
            txs.append(self.chain.tx(sender, TxKind.TASK_PLAN, plan.encode()))
        return self.chain.block(txs, advance=advance)


@pytest.fixture
def setup() -> Setup:
    return Setup()


def test_a_replica_accepts_the_records_the_planner_makes(setup: Setup) -> None:
    records = setup.planner.records_after(1)
    assert records is not None and records.assignment is not None
    assert records.assignment.reason == Regrouping.RECLUSTER
    groups = [set(members) for _, members in records.assignment.groups]
    fast, slow = {c.id for c in CLIENTS[:3]}, {c.id for c in CLIENTS[3:]}
    assert fast in groups and slow in groups  # Algorithm 1 separates them
    setup.replica.apply_block(setup.records_block(records.assignment, records.plan))
    assert setup.replica.plan() == records.plan
    assert setup.replica.assignment() == records.assignment
    # Faster clients get more batches; the total work is the same as equal tasks would be.
    tasks = dict(records.plan.tasks)
    assert min(tasks[c.id] for c in CLIENTS[:3]) > max(tasks[c.id] for c in CLIENTS[3:])
    assert sum(tasks.values()) == SCHED.batches_per_client * len(CLIENTS)


def test_a_plan_that_does_not_reproduce_is_refused_and_changes_nothing(setup: Setup) -> None:
    records = setup.planner.records_after(1)
    assert records is not None
    setup.replica.apply_block(setup.records_block(records.assignment, None))
    tasks = list(records.plan.tasks)
    (a, na), (b, nb) = tasks[0], tasks[1]
    tasks[0], tasks[1] = (a, na + 1), (b, nb - 1)  # the same total, moved between two clients
    forged = replace(records.plan, tasks=tuple(tasks))
    before = setup.replica.app_hash()
    refused("plan_mismatch", setup.replica.apply_block, setup.records_block(None, forged))
    assert setup.replica.app_hash() == before and setup.replica.plan() is None


def test_a_group_assignment_that_does_not_reproduce_is_refused(setup: Setup) -> None:
    records = setup.planner.records_after(1)
    assert records is not None and records.assignment is not None
    (n0, g0), (n1, g1) = records.assignment.groups
    swapped = replace(records.assignment, groups=((n0, tuple(sorted((*g0[1:], g1[0])))),
                                                  (n1, tuple(sorted((*g1[1:], g0[0]))))))
    refused("plan_mismatch", setup.replica.apply_block, setup.records_block(swapped, None))
    assert setup.replica.assignment() is None


def test_records_from_outside_or_without_a_sched_section_are_refused(setup: Setup) -> None:
    records = setup.planner.records_after(1)
    assert records is not None
    refused("not_a_node", setup.replica.apply_block,
            setup.records_block(records.assignment, None, sender=OUTSIDER))
    no_sched = CmbcApp()
    tx = setup.chain.tx(NODE, TxKind.TASK_PLAN, records.plan.encode())
    refused("unsupported_kind", no_sched.check_tx, tx)


def test_an_overtaken_record_is_superseded_and_changes_nothing(setup: Setup) -> None:
    """A plan over another assignment, a plan for an older version and an assignment that does
    not replace the one in force are accepted with no effect (refusing them would strand their
    sender's later transactions behind an unusable nonce)."""
    records = setup.planner.records_after(1)
    assert records is not None and records.assignment is not None
    other = replace(records.plan, assignment=b"\x01" * 32)
    setup.replica.apply_block(setup.records_block(records.assignment, other, advance=True))
    assert setup.replica.assignment() == records.assignment and setup.replica.plan() is None
    setup.replica.apply_block(setup.records_block(None, records.plan, advance=True))
    assert setup.replica.plan() == records.plan
    before = setup.replica.app_hash()
    older = replace(records.plan, version=0)
    not_replacing = replace(records.assignment, groups=records.assignment.groups[::-1])
    setup.replica.apply_block(setup.records_block(not_replacing, older, advance=True))
    assert setup.replica.app_hash() == before


def test_basis_in_the_future_or_beyond_the_history_is_refused(setup: Setup) -> None:
    records = setup.planner.records_after(1)
    assert records is not None and records.assignment is not None
    future = replace(records.assignment, basis_height=setup.replica.height + 1)
    refused("future_basis", setup.replica.apply_block, setup.records_block(future, None))
    for task in range(2, 2 + SCHED.history):  # push the first reports out of the history
        setup.add([setup.chain.report(c, report(s, task))
                   for c, s in zip(CLIENTS, SPEEDS, strict=True)])
    refused("basis_too_old", setup.replica.apply_block,
            setup.records_block(records.assignment, None))


def test_unchanged_states_keep_the_groups_and_a_newcomer_is_placed(setup: Setup) -> None:
    first = setup.planner.records_after(1)
    assert first is not None
    block = setup.records_block(first.assignment, first.plan, advance=True)
    setup.replica.apply_block(block)
    setup.planner.apply_final(block)
    again = setup.planner.records_after(2)
    assert again is not None and again.assignment is None  # no drift: the groups stay
    newcomer = make_signer(60)
    setup.add([setup.chain.register(newcomer, node=NODE.id)])
    setup.add([setup.chain.report(newcomer, report(480_000))])
    placed = setup.planner.records_after(3)
    assert placed is not None and placed.assignment is not None
    assert placed.assignment.reason == Regrouping.PLACE
    slow_group = next(m for _, m in placed.assignment.groups if CLIENTS[3].id in m)
    assert newcomer.id in slow_group  # Algorithm 2: with the clients like it
    setup.replica.apply_block(setup.records_block(placed.assignment, placed.plan))
    assert dict(setup.replica.plan().tasks)[newcomer.id] >= 1


def test_a_rolled_back_block_takes_its_records_back(setup: Setup) -> None:
    records = setup.planner.records_after(1)
    assert records is not None
    before = setup.replica.app_hash()
    block = setup.records_block(records.assignment, records.plan)
    setup.replica.apply_block(block)
    setup.replica.rollback_block(block)
    assert setup.replica.app_hash() == before and setup.replica.plan() is None


def test_a_state_report_becomes_the_scheduler_s_time_model() -> None:
    from dualchain.apps.cmbc.management import client_state

    # 640 samples at 320 samples/s train in 2 s; of the 2.5 s the task took, 20 ms are the rtt
    # and 480 ms the transfers.
    r = StateReport(task=1, rtt_ms=20, completion_ms=2500, speed_milli=320_000, failures=1,
                    disconnected_ms=0, samples=640)
    state = client_state(b"c" * 32, r, batch_size=64)
    assert state.speed == 5.0 and state.rtt_s == 0.02 and state.upload_s == 0.48
    assert state.failure_rate == 0.5
    no_samples = client_state(b"c" * 32, replace(r, samples=0), batch_size=64)
    assert no_samples.upload_s == 0.0  # not measured: the time model has the rtt only


def test_payloads_round_trip_and_malformed_ones_are_refused(setup: Setup) -> None:
    records = setup.planner.records_after(1)
    assert records is not None and records.assignment is not None
    assert GroupAssignment.decode(records.assignment.encode()) == records.assignment
    assert TaskPlan.decode(records.plan.encode()) == records.plan
    for bad in (records.plan.encode()[:-1], records.plan.encode() + b"x",
                records.assignment.encode()[:20]):
        with pytest.raises(DecodeError):
            (TaskPlan if bad.startswith(b"DCP1") else GroupAssignment).decode(bad)
    zero = TaskPlan(1, 1, b"\x00" * 32, ((b"\x01" * 32, 0),))
    with pytest.raises(DecodeError):
        TaskPlan.decode(zero.encode())


def test_a_node_that_does_not_plan_still_follows_the_chain_s_plans(setup: Setup) -> None:
    """A node outside the ddmlts policy makes no records but must apply the chain's rules to
    the final blocks it reads (a mirror without the sched section would refuse them)."""
    records = setup.planner.records_after(1)
    assert records is not None
    reader = Planner(SCHED, plans=False)
    for block in setup.blocks:
        reader.apply_final(block)
    reader.apply_final(setup.records_block(records.assignment, records.plan))
    assert reader.records_after(2) is None
    assert reader.batches_for(CLIENTS[0].id) == dict(records.plan.tasks)[CLIENTS[0].id]
