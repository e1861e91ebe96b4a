"""The journaled key-value state of CMBC: per-block undo, abort of a half-applied block, the
bounded undo depth, and an incremental digest that always equals a fresh recomputation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dualchain.apps.cmbc.state import JournaledState


def recomputed_digest(data: dict[bytes, bytes]) -> bytes:
    """The digest from scratch: sum mod 2^256 of SHA-256(len(key) || key || value)."""
    total = 0
    for key, value in data.items():
        h = hashlib.sha256(len(key).to_bytes(4, "big") + key + value).digest()
        total += int.from_bytes(h, "big")
    return (total % (1 << 256)).to_bytes(32, "big")


def contents(state: JournaledState, keys) -> dict[bytes, bytes]:
    return {k: state.get(k) for k in keys if state.get(k) is not None}


def test_empty_state() -> None:
    s = JournaledState()
    assert s.digest() == bytes(32) == recomputed_digest({})
    assert s.get(b"a") is None and b"a" not in s


def test_put_get_and_digest() -> None:
    s = JournaledState()
    s.put(b"a", b"1")
    s.put(b"b", b"2")
    s.put(b"a", b"3")
    assert s.get(b"a") == b"3" and b"a" in s
    assert s.digest() == recomputed_digest({b"a": b"3", b"b": b"2"})


def test_digest_does_not_depend_on_write_order_or_history() -> None:
    one, two = JournaledState(), JournaledState()
    one.put(b"a", b"1")
    one.put(b"b", b"2")
    two.put(b"b", b"x")
    two.put(b"b", b"2")
    two.put(b"a", b"1")
    assert one.digest() == two.digest()


def test_digest_binds_the_key_value_split() -> None:
    one, two = JournaledState(), JournaledState()
    one.put(b"ab", b"c")
    two.put(b"a", b"bc")
    assert one.digest() != two.digest()


def test_undo_last_takes_a_block_back() -> None:
    s = JournaledState()
    s.begin()
    s.put(b"a", b"1")
    s.commit()
    before = s.digest()
    s.begin()
    s.put(b"a", b"2")
    s.put(b"a", b"3")  # written twice in one block
    s.put(b"new", b"x")  # absent before
    s.commit()
    assert s.get(b"a") == b"3" and s.get(b"new") == b"x"
    s.undo_last()
    assert s.get(b"a") == b"1" and s.get(b"new") is None and b"new" not in s
    assert s.digest() == before == recomputed_digest({b"a": b"1"})
    s.undo_last()
    assert s.get(b"a") is None and s.digest() == bytes(32)


def test_abort_takes_back_the_open_block_only() -> None:
    s = JournaledState()
    s.begin()
    s.put(b"a", b"1")
    s.commit()
    before = s.digest()
    s.begin()
    s.put(b"a", b"2")
    s.put(b"b", b"2")
    s.abort()
    assert s.get(b"a") == b"1" and s.get(b"b") is None and s.digest() == before
    s.undo_last()  # the committed block is still undoable
    assert s.get(b"a") is None


def test_an_empty_block_undoes_to_nothing() -> None:
    s = JournaledState()
    s.put(b"a", b"1")
    s.begin()
    s.commit()
    s.undo_last()
    assert s.get(b"a") == b"1"


def test_one_block_at_a_time() -> None:
    s = JournaledState()
    s.begin()
    with pytest.raises(RuntimeError, match="already"):
        s.begin()


def test_undo_depth_is_bounded() -> None:
    s = JournaledState(max_undo=3)
    for i in range(5):
        s.begin()
        s.put(b"k", b"%d" % i)
        s.commit()
    for expected in (b"3", b"2", b"1"):
        s.undo_last()
        assert s.get(b"k") == expected
    with pytest.raises(RuntimeError, match="undo depth"):
        s.undo_last()
    assert s.get(b"k") == b"1"


def test_writes_outside_a_block_are_not_journaled() -> None:
    s = JournaledState()
    s.put(b"a", b"1")  # e.g. loading: nothing to undo
    with pytest.raises(RuntimeError):
        s.undo_last()


KEYS = [b"k%d" % i for i in range(6)]
op = st.tuples(st.sampled_from(KEYS), st.binary(min_size=0, max_size=4))
step = st.one_of(
    st.tuples(st.just("block"), st.lists(op, max_size=5)),
    st.tuples(st.just("aborted"), st.lists(op, min_size=1, max_size=5)),
    st.tuples(st.just("undo"), st.just([])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=40))
def test_journal_matches_a_model(steps) -> None:
    """Any sequence of applied, aborted and undone blocks leaves the state, and its digest,
    equal to a plain dict replayed the same way, and to a digest computed from scratch."""
    depth = 4
    s = JournaledState(max_undo=depth)
    history: list[dict[bytes, bytes]] = [{}]  # model state after each applied block
    undoable = 0
    for kind, ops in steps:
        if kind == "undo":
            if undoable == 0:  # nothing applied, or only blocks deeper than the bound
                with pytest.raises(RuntimeError):
                    s.undo_last()
            else:
                s.undo_last()
                history.pop()
                undoable -= 1
        else:
            s.begin()
            model = dict(history[-1])
            for key, value in ops:
                s.put(key, value)
                model[key] = value
            if kind == "aborted":
                s.abort()
            else:
                s.commit()
                history.append(model)
                undoable = min(undoable + 1, depth)
        assert contents(s, KEYS) == history[-1]
        assert s.digest() == recomputed_digest(history[-1])
