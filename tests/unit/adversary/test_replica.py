"""Byzantine replica strategies: what each tells the daemon to send, and their config errors."""

from __future__ import annotations

import pytest

from dualchain.adversary.client import AttackConfigError
from dualchain.adversary.replica import (
    HONEST,
    EquivocatingReplica,
    make_replica_strategy,
)

BLOCK = b"\x01" * 32
NIL = bytes(32)


def test_an_honest_replica_sends_each_message_once() -> None:
    assert make_replica_strategy(None) is HONEST
    assert HONEST.twin_vote(BLOCK) is None and not HONEST.splits_proposals


def test_an_equivocator_votes_twice_for_blocks_and_splits_its_proposals() -> None:
    strategy = make_replica_strategy({"strategy": "equivocate"})
    assert isinstance(strategy, EquivocatingReplica) and strategy.splits_proposals
    twin = strategy.twin_vote(BLOCK)
    assert twin is not None and twin not in (BLOCK, NIL)
    assert strategy.twin_vote(NIL) is None  # a nil vote is not evidence of anything
    other = make_replica_strategy({"strategy": "equivocate", "twin_hash": "ab" * 32})
    assert other.twin_vote(BLOCK) == b"\xab" * 32


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"strategy": "lie"}, "unknown replica strategy kind 'lie'; known: equivocate, honest"),
        ({}, "'strategy' is missing"),
        ([], "adversary must be a table"),
        ({"strategy": "equivocate", "when": 3}, "unknown parameter 'when'"),
        ({"strategy": "equivocate", "kind": "x"}, "unknown parameter 'kind'"),
        ({"strategy": "equivocate", "twin_hash": "zz"}, "twin_hash must be hex"),
        ({"strategy": "equivocate", "twin_hash": "00" * 32}, "not all zero"),
    ],
)
def test_bad_strategy_configs_are_refused_in_one_line(config, message) -> None:
    with pytest.raises(AttackConfigError, match=message) as info:
        make_replica_strategy(config)
    assert "\n" not in str(info.value)
