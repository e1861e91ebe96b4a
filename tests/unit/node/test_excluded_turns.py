"""A node that CTBC excludes from committing loses its aggregation turns; the others carry on,
and each change is an event line (node.ctbc_follow._note_excluded, node.aggregator)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from dualchain.adversary.node import AggregatorPoison, NodeAttack
from dualchain.node.aggregator import Aggregator
from dualchain.node.ctbc_follow import CtbcFollower
from dualchain.proto.v1 import chain_pb2 as chain_pb

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


class Node(CtbcFollower, Aggregator):
    def __init__(self, me: bytes) -> None:
        self.signer = SimpleNamespace(id=me)
        self.config = SimpleNamespace(nodes={A: "", B: "", C: ""}, aggregator_timeout_s=20.0)
        self.planner = SimpleNamespace(serving_nodes=lambda nodes: sorted(nodes))
        self.excluded_nodes: set[bytes] = set()
        self.version = 4
        self._version_time = time.monotonic()
        self._commit_height = 0  # next turn: order[1]


def test_the_excluded_node_leaves_the_turn_order_and_comes_back(capsys) -> None:
    b, c = Node(B), Node(C)
    assert b.is_aggregator() and not c.is_aggregator()
    for node in (b, c):
        node._note_excluded(chain_pb.ChainStatus(height=9, excluded=[B]))
    assert not b.is_aggregator() and c.is_aggregator()  # order [A, C]: C's turn
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["node"], e["ctbc_height"], e["version"]) for e in events] == [
        ("node_excluded", B.hex(), 9, 4)] * 2
    c._note_excluded(chain_pb.ChainStatus(height=30))
    assert not c.is_aggregator()
    assert json.loads(capsys.readouterr().out)["event"] == "node_readmitted"


@pytest.mark.parametrize("attack, turns", [
    (NodeAttack(), [False, False]),
    (AggregatorPoison(versions=(5,)), [True, False]),
])
def test_only_a_poisoner_takes_the_turn_and_only_at_its_versions(attack, turns) -> None:
    assert [attack.takes_turn(v) for v in (5, 6)] == turns
