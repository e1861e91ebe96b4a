"""Two-stage node join on CMBC: a joiner's request, then its admission by a server node once
CTBC committed it; a pending joiner is no server node and its clients are not scheduled."""

from __future__ import annotations

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.apps.cmbc.payloads import NodeAdmission, NodeJoinRequest, StateReport
from dualchain.apps.genesis import SchedParams
from dualchain.chain.types import TxKind
from tests.ledger_builders import make_signer
from tests.unit.apps.cmbc.test_app import CLIENT, CLIENT_2, Chain, refused

NODE = make_signer(31)
JOINER = make_signer(32)
REQUEST = NodeJoinRequest("127.0.0.1:7305", "127.0.0.1:7005")
SLOW = StateReport(task=1, rtt_ms=40, completion_ms=9000, speed_milli=50_000, failures=0,
                   disconnected_ms=0, samples=640)


def _joined_chain() -> tuple[Chain, CmbcApp]:
    """NODE serves CLIENT; JOINER asked to join and serves CLIENT_2; both clients reported."""
    c = Chain()
    app = CmbcApp(sched=SchedParams())
    app.apply_block(c.block([c.register(CLIENT, NODE.id), c.register(CLIENT_2, JOINER.id),
                             c.tx(JOINER, TxKind.NODE_JOIN_REQUEST, REQUEST.encode())]))
    app.apply_block(c.block([c.report(CLIENT), c.report(CLIENT_2, SLOW)]))
    return c, app


def test_a_join_request_is_recorded_with_the_joiners_key_and_tx() -> None:
    c = Chain()
    app = CmbcApp()
    tx = c.tx(JOINER, TxKind.NODE_JOIN_REQUEST, REQUEST.encode())
    app.apply_block(c.block([tx]))
    assert app.join_request(JOINER.id) == (JOINER.public_key, tx.hash, REQUEST)
    assert app.joiners() == [JOINER.id]
    assert app.pending(JOINER.id) and app.admitted_at(JOINER.id) is None
    refused("already_requested", app.check_tx,
            c.tx(JOINER, TxKind.NODE_JOIN_REQUEST, REQUEST.encode()))


def test_a_pending_joiner_is_no_server_node_and_its_clients_are_not_scheduled() -> None:
    _, app = _joined_chain()
    assert app.is_server_node(NODE.id)
    assert not app.is_server_node(JOINER.id)
    assert set(app.states_at(app.height)) == {CLIENT.id}


def test_an_admission_by_a_server_node_completes_the_join() -> None:
    c, app = _joined_chain()
    app.apply_block(c.block([c.tx(NODE, TxKind.NODE_JOIN_REQUEST,
                                  NodeAdmission(JOINER.id, 17).encode())]))
    assert app.admitted_at(JOINER.id) == 17 and not app.pending(JOINER.id)
    assert app.is_server_node(JOINER.id)
    assert set(app.states_at(app.height)) == {CLIENT.id, CLIENT_2.id}
    # A second admission (another node saw the same commit) is accepted and changes nothing.
    before = app.app_hash()
    app.apply_block(c.block([c.tx(NODE, TxKind.NODE_JOIN_REQUEST,
                                  NodeAdmission(JOINER.id, 18).encode())]))
    assert app.admitted_at(JOINER.id) == 17
    assert app.app_hash() == before


def test_admissions_are_refused_from_the_joiner_itself_others_and_for_unknown_joins() -> None:
    c, app = _joined_chain()
    before = app.app_hash()
    refused("not_a_node", app.check_tx,
            c.tx(JOINER, TxKind.NODE_JOIN_REQUEST, NodeAdmission(JOINER.id, 17).encode()))
    refused("not_a_node", app.check_tx,
            c.tx(CLIENT, TxKind.NODE_JOIN_REQUEST, NodeAdmission(JOINER.id, 17).encode()))
    refused("unknown_join", app.check_tx,
            c.tx(NODE, TxKind.NODE_JOIN_REQUEST, NodeAdmission(CLIENT.id, 17).encode()))
    assert app.app_hash() == before and app.pending(JOINER.id)


def test_a_join_request_without_addresses_is_malformed() -> None:
    c = Chain()
    refused("bad_payload", CmbcApp().check_tx,
            c.tx(JOINER, TxKind.NODE_JOIN_REQUEST, NodeJoinRequest("", "x:1").encode()))


def test_a_schedule_made_while_a_joiner_was_pending_still_reproduces_after_its_admission(
        ) -> None:
    """A node plans from the final state at its basis height; the records may be mined after
    the joiner's admission. Re-executed with the joiner's pending state read at the time of
    mining they did not reproduce (its clients counted): refused for good (plan_mismatch),
    which is what stalled the server nodes of a node-join testbed (docs/cmbc.md)."""
    from dualchain.node.planner import Planner

    c = Chain()
    app = CmbcApp(sched=SchedParams())
    planner = Planner(SchedParams())
    for block in [c.block([c.register(CLIENT, NODE.id), c.register(CLIENT_2, JOINER.id),
                           c.tx(JOINER, TxKind.NODE_JOIN_REQUEST, REQUEST.encode())]),
                  c.block([c.report(CLIENT), c.report(CLIENT_2, SLOW)])]:
        app.apply_block(block)
        planner.apply_final(block)
    records = planner.records_after(1)
    assert records is not None and records.assignment is not None
    assert set(c for _, group in records.assignment.groups for c in group) == {CLIENT.id}
    schedule = [c.tx(NODE, TxKind.GROUP_ASSIGNMENT, records.assignment.encode()),
                c.tx(NODE, TxKind.TASK_PLAN, records.plan.encode())]
    app.apply_block(c.block([c.tx(NODE, TxKind.NODE_JOIN_REQUEST,
                                  NodeAdmission(JOINER.id, 17).encode())]))
    assert not app.pending(JOINER.id) and not app.pending_at(JOINER.id, app.height)
    assert app.pending_at(JOINER.id, records.plan.basis_height)
    app.apply_block(c.block(schedule))  # raises if either record does not reproduce
    assert app.assignment() == records.assignment and app.plan() == records.plan
    # A later basis counts the admitted joiner's clients.
    assert set(app.states_at(app.height)) == {CLIENT.id, CLIENT_2.id}
