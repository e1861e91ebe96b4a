"""The node's view of who serves: pending joiners take no aggregation turn and their clients
are not waited for; an admitted joiner joins the rotation."""

from __future__ import annotations

from dualchain.apps.cmbc.payloads import NodeAdmission
from dualchain.chain.types import TxKind
from dualchain.node.planner import Planner
from tests.unit.apps.cmbc.test_app import CLIENT, CLIENT_2, Chain
from tests.unit.apps.cmbc.test_join import JOINER, NODE, REQUEST


def _planner() -> tuple[Chain, Planner]:
    c = Chain()
    planner = Planner(None, plans=False)
    planner.apply_final(c.block([c.register(CLIENT, NODE.id), c.register(CLIENT_2, JOINER.id),
                                 c.tx(JOINER, TxKind.NODE_JOIN_REQUEST, REQUEST.encode())]))
    return c, planner


def test_a_pending_joiner_neither_serves_nor_is_waited_for() -> None:
    _, planner = _planner()
    assert planner.serving_nodes([NODE.id, JOINER.id]) == [NODE.id]  # (its own config names it)
    assert planner.serving_nodes([NODE.id]) == [NODE.id]
    assert planner.active_clients([CLIENT.id, CLIENT_2.id]) == {CLIENT.id}


def test_an_admitted_joiner_serves_even_where_the_config_does_not_name_it() -> None:
    c, planner = _planner()
    planner.apply_final(c.block([c.tx(NODE, TxKind.NODE_JOIN_REQUEST,
                                      NodeAdmission(JOINER.id, 9).encode())]))
    assert planner.serving_nodes([NODE.id]) == sorted([NODE.id, JOINER.id])
    assert planner.active_clients([CLIENT.id, CLIENT_2.id]) == {CLIENT.id, CLIENT_2.id}


def test_on_a_single_chain_only_the_management_records_ctbc_applied_count() -> None:
    """A CTBC block keeps a refused transaction (it used its nonce): the node must not act on
    it, e.g. take a refused registration's key."""
    c = Chain()
    planner = Planner(None, plans=False, single_chain=True)
    registration = c.register(CLIENT, NODE.id)
    stray_report = c.report(CLIENT_2)  # CLIENT_2 never registered: refused
    block = c.block([registration, stray_report])  # (its reward is no management record)
    assert planner.apply_final(block) == [registration]
    assert planner.final.clients() == [CLIENT.id]
