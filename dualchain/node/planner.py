"""The node's side of scheduling: what to put on CMBC after one of its versions is anchored.

``Planner`` holds a replica of the CMBC application fed with final blocks only, so everything it
decides rests on records no reorg can take back, and the node hands out tasks from the final
plan alone. When a block makes this node's anchor final, ``records_after`` returns what to
submit, all computed from the state at that block's height (the basis):

- a GROUP_ASSIGNMENT when there is none yet, the clients' states drifted beyond the genesis
  threshold since the assignment in force, or the server nodes changed (a node joined: each
  node manages at least one group) (Algorithm 1: re-cluster everyone), or when clients
  joined or left (Algorithm 2: place the newcomers, keep the rest);
- a TASK_PLAN over the assignment (new or in force) for the tasks after that version.

Every CMBC replica re-executes both (``apps.cmbc.management``) before accepting them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dualchain.apps.cmbc import management
from dualchain.apps.cmbc.app import CmbcApp
from dualchain.apps.cmbc.payloads import (
    MANAGEMENT_KINDS,
    GroupAssignment,
    Regrouping,
    TaskPlan,
)
from dualchain.apps.genesis import SchedParams
from dualchain.chain.errors import ValidationError
from dualchain.chain.types import Block, Transaction
from dualchain.scheduler import drifted


@dataclass(frozen=True)
class Records:
    assignment: GroupAssignment | None  # None: the one in force stays
    plan: TaskPlan
    makespans: list[dict[str, float]]  # per group: planned, OLAR optimum, equal split


class Planner:
    """``sched``: the CMBC genesis section (the replica must apply the chain's own rules);
    ``plans``: whether this node makes records (the ddmlts policy) or only reads them."""

    def __init__(self, sched: SchedParams | None, plans: bool = True,
                 single_chain: bool = False, block_reward: int = 0) -> None:
        self.sched = sched if plans else None
        self.final = CmbcApp(max_undo=1, sched=sched, block_reward=block_reward)
        self.single_chain = single_chain

    def apply_final(self, block: Block) -> list[Transaction]:
        """Applies a final block; returns its management transactions that took part (a
        single chain's block also holds refused ones: they used their nonce, nothing more)."""
        if self.single_chain:  # a CTBC block: its management transactions, as CTBC ran them
            txs = [tx for tx in block.transactions if tx.kind in MANAGEMENT_KINDS]
            refused = {h for h, _ in self.final.apply_transactions(
                block.header.height, txs, skip_refused=True)}
            return [tx for tx in txs if tx.hash not in refused]
        self.final.apply_block(block)
        return list(block.transactions)

    def batches_for(self, client: bytes) -> int | None:
        """The client's batches in the final plan, None when it has none."""
        plan = self.final.plan()
        if plan is None:
            return None
        return dict(plan.tasks).get(client)

    def group_of(self, client: bytes) -> int:
        """The index of the client's group in the final assignment (0 when there is none)."""
        assignment = self.final.assignment()
        if assignment is not None:
            for i, (_, members) in enumerate(assignment.groups):
                if client in members:
                    return i
        return 0

    def active_clients(self, clients: Iterable[bytes]) -> set[bytes]:
        """Of ``clients``, those whose node is not a pending joiner (those get no tasks)."""
        out = set()
        for client in clients:
            registered = self.final.client(client)
            if registered is None or not self.final.pending(registered[1].node):
                out.add(client)
        return out

    def serving_nodes(self, configured: Iterable[bytes]) -> list[bytes]:
        """The server nodes taking part now, in id order: the configured ones (the genesis set)
        and every admitted joiner, less joiners still pending."""
        final = self.final
        joined = {n for n in final.joiners() if final.admitted_at(n) is not None}
        return sorted(n for n in set(configured) | joined if not final.pending(n))

    def planned_clients(self) -> set[bytes]:
        plan = self.final.plan()
        return set() if plan is None else {c for c, _ in plan.tasks}

    def records_after(self, version: int) -> Records | None:
        """The records for the tasks after ``version``, from the state at the final height."""
        if self.sched is None:
            return None
        basis = self.final.height
        states = self.final.states_at(basis)
        if not states:
            return None
        current = self.final.assignment()
        reason = self._regrouping(current, states)
        assignment = None
        if reason is not None:
            groups = management.expected_groups(
                reason, states, self.final.nodes_of(list(states)), current, self.sched,
                version, basis)
            previous = current.digest if current is not None else bytes(32)
            assignment = GroupAssignment(version, basis, reason, previous, groups)
        in_force = assignment or current
        assert in_force is not None
        plan = management.make_plan(version, in_force, states, self.sched, basis)
        return Records(assignment, plan, management.group_makespans(plan, in_force, states))

    def _regrouping(self, current: GroupAssignment | None,
                    states: dict) -> Regrouping | None:
        assert self.sched is not None
        if current is None:
            return Regrouping.RECLUSTER
        members = {c for _, group in current.groups for c in group}
        try:
            then = self.final.states_at(current.basis_height)
        except ValidationError:  # the history no longer reaches back: start afresh
            return Regrouping.RECLUSTER
        common = {c: s for c, s in states.items() if c in then}
        if drifted({c: then[c] for c in common}, common, self.sched.drift):
            return Regrouping.RECLUSTER
        managers = {node for node, _ in current.groups}
        if managers != set(self.final.nodes_of(list(states)).values()):
            return Regrouping.RECLUSTER
        if members != set(states):
            return Regrouping.PLACE
        return None
