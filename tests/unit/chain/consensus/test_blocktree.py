"""The in-memory proof-of-work header tree: ancestry, fork paths, fork choice, invalid branches and
the target each child must carry."""

from __future__ import annotations

import pytest

from dualchain.chain.consensus.blocktree import BlockTree
from dualchain.chain.consensus.pow import (
    PowParams,
    block_work,
    next_target,
    target_from_bytes,
    target_to_bytes,
)
from dualchain.chain.types import ZERO_HASH, BlockHeader

PARAMS = PowParams(initial_difficulty=1000, block_interval_ms=1000, retarget_interval=4,
                   max_adjust=4, finality_depth=6, median_window=5)
T0 = 1_700_000_000_000


def genesis() -> BlockHeader:
    return BlockHeader(chain_id="cmbc-test", height=0, parent_hash=ZERO_HASH,
                       tx_root=ZERO_HASH, timestamp_ms=T0, proposer=bytes(32))


def child(parent: BlockHeader, target: int | None = None, dt: int = 1000,
          tag: int = 0) -> BlockHeader:
    """A header on ``parent`` (no seal needed here: the tree trusts the caller's checks);
    ``tag`` makes siblings distinct."""
    return BlockHeader(
        chain_id="cmbc-test", height=parent.height + 1, parent_hash=parent.hash,
        tx_root=bytes([tag]) * 32, timestamp_ms=parent.timestamp_ms + dt, proposer=bytes(32),
        pow_target=target_to_bytes(target or PARAMS.initial_target),
    )


def chain(tree: BlockTree, parent: BlockHeader, length: int, tag: int = 0,
          target: int | None = None, dt: int = 1000) -> list[BlockHeader]:
    out = []
    for _ in range(length):
        parent = child(parent, target, dt, tag)
        tree.add(parent)
        out.append(parent)
    return out


@pytest.fixture
def tree() -> tuple[BlockTree, BlockHeader]:
    t = BlockTree(PARAMS)
    g = genesis()
    t.add(g, work=0)  # as the node loads it from the store: genesis carries no work
    return t, g


def test_cumulative_work_adds_up(tree) -> None:
    t, g = tree
    a = chain(t, g, 3)
    per_block = block_work(PARAMS.initial_target)
    assert [t.get(h.hash).work for h in a] == [per_block, 2 * per_block, 3 * per_block]
    assert t.get(g.hash).work == 0
    assert len(t) == 4 and a[1].hash in t and b"x" * 32 not in t
    again = t.add(a[1])  # a header already in the tree keeps its entry
    assert again is t.get(a[1].hash) and len(t) == 4


def test_work_given_by_the_store_wins(tree) -> None:
    t, g = tree
    h = child(g)
    assert t.add(h, work=123).work == 123


def test_ancestors_and_ancestor_at(tree) -> None:
    t, g = tree
    a = chain(t, g, 5)
    assert [h.height for h in t.ancestors(a[-1].hash, 3)] == [5, 4, 3]
    assert [h.height for h in t.ancestors(a[1].hash, 10)] == [2, 1, 0]
    assert t.ancestors(b"\x09" * 32, 3) == []
    assert t.ancestor_at(a[-1].hash, 2) == a[1]
    assert t.ancestor_at(a[-1].hash, 0) == g
    assert t.ancestor_at(a[2].hash, 3) == a[2]
    with pytest.raises(KeyError):
        t.ancestor_at(a[1].hash, 4)  # above the block itself
    # The window of a median is the parent and its ancestors, newest first.
    assert t.median_window(a[-1].hash) == [h.timestamp_ms for h in reversed(a)]
    assert t.median_window(a[1].hash) == [a[1].timestamp_ms, a[0].timestamp_ms, g.timestamp_ms]


# -- fork path -------------------------------------------------------------------------------------


def test_fork_path_of_an_extension(tree) -> None:
    t, g = tree
    a = chain(t, g, 4)
    assert t.fork_path(a[0].hash, a[3].hash) == ([], [a[1].hash, a[2].hash, a[3].hash])
    assert t.fork_path(a[3].hash, a[3].hash) == ([], [])
    assert t.fork_path(g.hash, a[1].hash) == ([], [a[0].hash, a[1].hash])


def test_fork_path_back_to_an_ancestor(tree) -> None:
    t, g = tree
    a = chain(t, g, 4)
    assert t.fork_path(a[3].hash, a[1].hash) == ([a[3].hash, a[2].hash], [])


def test_fork_path_across_branches(tree) -> None:
    t, g = tree
    trunk = chain(t, g, 2)
    a = chain(t, trunk[-1], 3, tag=1)  # heights 3..5
    b = chain(t, trunk[-1], 2, tag=2)  # heights 3..4
    disconnect, connect = t.fork_path(a[-1].hash, b[-1].hash)
    assert disconnect == [a[2].hash, a[1].hash, a[0].hash]  # newest first
    assert connect == [b[0].hash, b[1].hash]  # oldest first
    disconnect, connect = t.fork_path(b[-1].hash, a[-1].hash)
    assert disconnect == [b[1].hash, b[0].hash]
    assert connect == [a[0].hash, a[1].hash, a[2].hash]


def test_fork_path_from_genesis_siblings(tree) -> None:
    t, g = tree
    a = chain(t, g, 2, tag=1)
    b = chain(t, g, 2, tag=2)
    assert t.fork_path(a[-1].hash, b[-1].hash) == (
        [a[1].hash, a[0].hash], [b[0].hash, b[1].hash])


# -- fork choice -----------------------------------------------------------------------------------


def test_best_tip_is_the_most_work(tree) -> None:
    t, g = tree
    assert t.best_tip() == g.hash
    long = chain(t, g, 3, tag=1)
    # Two blocks at a quarter of the target (four times the work each) beat three.
    heavy = chain(t, g, 2, tag=2, target=PARAMS.initial_target // 4)
    assert t.get(heavy[-1].hash).work > t.get(long[-1].hash).work
    assert t.best_tip() == heavy[-1].hash
    assert t.better(heavy[-1].hash, long[-1].hash)
    assert not t.better(long[-1].hash, heavy[-1].hash)


def test_best_tip_keeps_the_first_seen_on_a_tie(tree) -> None:
    t, g = tree
    first = chain(t, g, 2, tag=1)
    second = chain(t, g, 2, tag=2)
    assert t.get(first[-1].hash).work == t.get(second[-1].hash).work
    assert t.best_tip() == first[-1].hash
    assert not t.better(second[-1].hash, first[-1].hash)  # a tie does not switch
    assert not t.better(first[-1].hash, second[-1].hash)
    # One more block breaks the tie.
    third = chain(t, second[-1], 1, tag=2)
    assert t.best_tip() == third[0].hash
    assert t.better(third[0].hash, first[-1].hash)


def test_mark_invalid_takes_the_branch_out_of_fork_choice(tree) -> None:
    t, g = tree
    trunk = chain(t, g, 1)
    good = chain(t, trunk[0], 2, tag=1)
    bad = chain(t, trunk[0], 4, tag=2)
    assert t.best_tip() == bad[-1].hash
    marked = t.mark_invalid(bad[1].hash)
    assert sorted(marked) == sorted(h.hash for h in bad[1:])
    assert not t.get(bad[0].hash).invalid  # its parent stays valid
    assert all(t.get(h.hash).invalid for h in bad[1:])
    assert not any(t.get(h.hash).invalid for h in [*trunk, *good])
    assert t.best_tip() == good[-1].hash
    assert not t.better(bad[-1].hash, good[-1].hash)  # however much work it has


def test_mark_invalid_reaches_descendants_added_in_any_order(tree) -> None:
    t, g = tree
    a = child(g, tag=1)
    b = child(a, tag=1)
    c = child(b, tag=1)
    t.add(a)
    t.add(c)  # before its parent (the tree itself does not need arrival order)
    t.add(b)
    t.mark_invalid(a.hash)
    assert all(t.get(h.hash).invalid for h in (a, b, c))


# -- expected targets ------------------------------------------------------------------------------


def test_expected_target_at_genesis_and_between_retargets(tree) -> None:
    t, g = tree
    assert t.expected_target(g.hash) == PARAMS.initial_target
    a = chain(t, g, 6, target=777)  # heights 1..6
    for h in a[:6]:
        if (h.height + 1) % PARAMS.retarget_interval:
            assert t.expected_target(h.hash) == 777, h.height


# R = 4: three intervals measured against two block intervals (2000 ms).
@pytest.mark.parametrize(("dt", "num", "den"), [(1000, 3, 2), (2000, 3, 1), (500, 3, 4),
                                                (100, 1, 4), (9000, 4, 1)])
def test_expected_target_retargets_on_its_own_branch(tree, dt: int, num: int, den: int) -> None:
    t, g = tree
    base = 10**40
    a = chain(t, g, 7, target=base, dt=dt)  # heights 1..7: height 8 retargets
    assert t.expected_target(a[-1].hash) == base * num // den
    # Same as the pure rule over the branch's timestamps.
    assert t.expected_target(a[-1].hash) == next_target(
        PARAMS, 8, base, lambda h: t.ancestor_at(a[-1].hash, h).timestamp_ms)


def test_expected_target_differs_between_branches(tree) -> None:
    t, g = tree
    base = 10**40
    trunk = chain(t, g, 4, target=base)  # heights 1..4
    fast = chain(t, trunk[-1], 3, target=base, dt=500, tag=1)  # 5..7
    slow = chain(t, trunk[-1], 3, target=base, dt=1500, tag=2)
    # Window of height 8: heights 4..7, three intervals measured against 2000 ms.
    assert t.expected_target(fast[-1].hash) == base * 1500 // 2000
    assert t.expected_target(slow[-1].hash) == base * 4500 // 2000
    assert target_from_bytes(fast[-1].pow_target) == base  # the headers keep theirs
