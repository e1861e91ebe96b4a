"""Scheduling on CMBC: what a group assignment or a task plan must be, given the chain.

Both the node that makes a plan and every replica that checks one call these functions on the
same inputs: the state reports CMBC held at the plan's ``basis_height`` (a final height for its
author), the assignment in force and the genesis ``sched`` parameters. A record that does not
reproduce is refused. The scheduler itself (``dualchain.scheduler``) is pure and seeded; the
seed comes from the version and basis, so nobody can pick a convenient draw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from dualchain.apps.cmbc.payloads import GroupAssignment, Regrouping, StateReport, TaskPlan
from dualchain.apps.genesis import SchedParams
from dualchain.scheduler import (
    ClientState,
    Grouping,
    SchedulerParams,
    StateWeights,
    Worker,
    assign_nodes,
    cluster,
    equal_split,
    makespan,
    olar,
    place_newcomer,
    plan_tasks,
)

MAX_FAILURE_RATE = 1.0


def scheduler_params(sched: SchedParams) -> SchedulerParams:
    return SchedulerParams(
        k_max=sched.k_max, alpha=sched.alpha, batches_per_client=sched.batches_per_client,
        lower=sched.lower, upper=sched.upper,
        weights=StateWeights(sched.eps_rtt, sched.eps_completion, sched.eps_speed),
        drift=sched.drift,
    )


def client_state(client: bytes, report: StateReport, batch_size: int) -> ClientState:
    """A state report as the scheduler reads it: speed in batches per second; the per-task
    transfer time (model download, update upload, waiting) as the completion time less the
    training time of its samples and the rtt, to the millisecond (0 when the report names no
    samples); the failure rate mu as
    failures / (failures + 1), in [0, 1) and rising with every failed task."""
    samples_per_s = report.speed_milli / 1000.0
    speed = max(samples_per_s / batch_size, 1e-6)
    upload_ms = 0  # unknown until a task's samples are reported
    if report.samples > 0 and samples_per_s > 0:
        training_ms = 1000.0 * report.samples / samples_per_s
        upload_ms = max(0, round(report.completion_ms - training_ms) - report.rtt_ms)
    return ClientState(
        client=client, rtt_s=report.rtt_ms / 1000.0, completion_s=report.completion_ms / 1000.0,
        speed=speed, failure_rate=min(report.failures / (report.failures + 1), MAX_FAILURE_RATE),
        upload_s=upload_ms / 1000.0,
    )


def plan_seed(version: int, basis_height: int) -> int:
    digest = hashlib.sha256(b"dualchain/plan" + version.to_bytes(8, "big")
                            + basis_height.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:4], "big")


def grouping_of(assignment: GroupAssignment) -> Grouping:
    return Grouping(tuple(members for _, members in assignment.groups))


def expected_groups(reason: Regrouping, states: Mapping[bytes, ClientState],
                    nodes_of: Mapping[bytes, bytes], previous: GroupAssignment | None,
                    sched: SchedParams, version: int, basis_height: int
                    ) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    """The groups (with their managing nodes) a GROUP_ASSIGNMENT of ``reason`` must carry.

    ``states``: every client with a report at the basis; ``nodes_of``: each one's node."""
    params = scheduler_params(sched)
    ordered = [states[c] for c in sorted(states)]
    nodes = sorted({nodes_of[c] for c in states})
    if reason == Regrouping.RECLUSTER or previous is None:
        grouping = cluster(ordered, params.k_max, plan_seed(version, basis_height),
                           params.weights, k_min=len(nodes))
    else:
        kept = tuple(tuple(c for c in members if c in states)
                     for members in grouping_of(previous).groups)
        grouping = Grouping(tuple(g for g in kept if g))
        placed = {c for g in grouping.groups for c in g}
        for client in sorted(states):
            if client not in placed:
                known = {c: states[c] for c in placed}
                grouping = place_newcomer(grouping, known, states[client], params.weights)
                placed.add(client)
    managers = assign_nodes(grouping, nodes)
    return tuple(zip(managers, grouping.groups, strict=True))


def expected_tasks(assignment: GroupAssignment, states: Mapping[bytes, ClientState],
                   sched: SchedParams, version: int, basis_height: int
                   ) -> tuple[tuple[bytes, int], ...]:
    """The (client, batches) a TASK_PLAN over ``assignment`` must carry. A member with no state
    at the basis cannot be sized and makes the plan impossible (the assignment must come
    first)."""
    grouping = grouping_of(assignment)
    tasks = plan_tasks(grouping, states, scheduler_params(sched),
                       plan_seed(version, basis_height), sched.mode)
    return tuple(sorted(tasks.items()))


def make_plan(version: int, assignment: GroupAssignment, states: Mapping[bytes, ClientState],
              sched: SchedParams, basis_height: int) -> TaskPlan:
    return TaskPlan(version, basis_height, assignment.digest,
                    expected_tasks(assignment, states, sched, version, basis_height))


def group_makespans(plan: TaskPlan, assignment: GroupAssignment,
                    states: Mapping[bytes, ClientState]) -> list[dict[str, float]]:
    """Per group, the makespan the plan predicts from the measured states, the OLAR optimum
    and an equal split of the same total work (for reports: how close the plan is)."""
    tasks = dict(plan.tasks)
    out = []
    for _, members in assignment.groups:
        workers = [Worker(states[c].speed, states[c].rtt_s + states[c].upload_s)
                   for c in members]
        counts = [tasks[c] for c in members]
        total = sum(counts)
        out.append({
            "clients": len(members),
            "batches": total,
            "planned_s": round(makespan(workers, counts), 3),
            "olar_s": round(makespan(workers, olar(workers, total)), 3),
            "equal_s": round(makespan(workers, equal_split(len(workers), total)), 3),
        })
    return out
