"""eq. 9, Algorithm 1 (clustering), Algorithm 2 (newcomers) and node assignment."""

from __future__ import annotations

import random

import numpy as np
import pytest

from dualchain.scheduler import (
    ClientState,
    Grouping,
    assign_nodes,
    cluster,
    dispersion,
    place_newcomer,
)

FAST = range(0, 6)
SLOW = range(10, 16)


def _cid(i: int) -> bytes:
    return bytes([i]) * 4


def _population(seed: int = 1, jitter: float = 0.05) -> list[ClientState]:
    """Fast clients (~8 batches/s, short rtt) and slow ones (~1 batch/s, long rtt)."""
    rng = random.Random(seed)

    def noisy(x: float) -> float:
        return x * (1 + jitter * rng.random())

    fast = [ClientState(_cid(i), noisy(0.02), noisy(1.0), noisy(8.0), 0.0) for i in FAST]
    slow = [ClientState(_cid(i), noisy(0.2), noisy(8.0), noisy(1.0), 0.1) for i in SLOW]
    return fast + slow


def _ids(r: range) -> set[bytes]:
    return {_cid(i) for i in r}


# -- dispersion ---------------------------------------------------------------------------------


def test_dispersion_is_rms_distance_to_the_centroid() -> None:
    g = np.array([[3.0, 4.0], [0.0, 0.0]])  # centroid (1.5, 2): both 2.5 away
    assert dispersion(g) == pytest.approx(2.5)
    g = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # sqrt(mean ||g_i||^2 - ||mean g||^2) = sqrt(2/3 - 2/9)
    assert dispersion(g) == pytest.approx((2 / 3 - 2 / 9) ** 0.5, abs=1e-9)


def test_dispersion_sees_direction_not_only_length() -> None:
    # A fast and a slow client can have state vectors of equal length; they are not alike.
    assert dispersion(np.array([[0.0, 1 / 3, 0.0, 0.0], [0.0, 0.0, 1 / 3, 0.0]])) > 0.2


def test_dispersion_of_tiny_or_identical_groups_is_zero() -> None:
    assert dispersion(np.zeros((0, 4))) == 0.0
    assert dispersion(np.array([[1.0, 2.0, 3.0, 0.0]])) == 0.0
    assert dispersion(np.array([[0.1, 0.2, 0.3, 0.0]] * 3)) == 0.0


# -- Grouping -----------------------------------------------------------------------------------


def test_grouping_is_canonical() -> None:
    g = Grouping(((b"\x05", b"\x03"), (b"\x02", b"\x09"), (b"\x04",)))
    assert g.groups == ((b"\x02", b"\x09"), (b"\x03", b"\x05"), (b"\x04",))
    assert g.k == 3
    assert g.group_of(b"\x05") == 1
    assert g.group_of(b"\x07") is None
    assert g == Grouping(((b"\x04",), (b"\x03", b"\x05"), (b"\x09", b"\x02")))


def test_grouping_refuses_empty_groups_and_duplicates() -> None:
    with pytest.raises(ValueError):
        Grouping(((b"\x01",), ()))
    with pytest.raises(ValueError):
        Grouping(((b"\x01",), (b"\x01", b"\x02")))


# -- cluster (Algorithm 1) ----------------------------------------------------------------------


def test_cluster_separates_fast_from_slow() -> None:
    g = cluster(_population(), k_max=2, seed=7)
    assert {frozenset(x) for x in g.groups} == {frozenset(_ids(FAST)), frozenset(_ids(SLOW))}


@pytest.mark.parametrize("k_max", [3, 4, 6])
def test_larger_k_only_refines_the_obvious_split(k_max: int) -> None:
    g = cluster(_population(), k_max=k_max, seed=7)
    assert 2 <= g.k <= k_max
    for members in g.groups:
        assert set(members) <= _ids(FAST) or set(members) <= _ids(SLOW)


def test_cluster_finds_three_real_groups() -> None:
    rng = random.Random(2)
    mid = [ClientState(_cid(i), 0.1 * (1 + 0.05 * rng.random()), 3.0, 3.0 * (1 + 0.05 *
                       rng.random()), 0.05) for i in range(30, 36)]
    g = cluster(_population() + mid, k_max=6, seed=7)
    assert {frozenset(x) for x in g.groups} == {
        frozenset(_ids(FAST)), frozenset(_ids(SLOW)), frozenset(_cid(i) for i in range(30, 36))}


def test_noise_is_not_split_but_the_plain_rule_runs_to_k_max() -> None:
    states = _population()
    assert cluster(states, k_max=6, seed=7).k == 2
    # split_gain = 1.0: "keep K + 1 whenever it is lower at all" -- any finer partition is.
    assert cluster(states, k_max=6, seed=7, split_gain=1.0).k == 6
    with pytest.raises(ValueError):
        cluster(states, k_max=6, seed=7, split_gain=0.0)


def test_cluster_stops_when_dispersion_stops_falling() -> None:
    # Identical states within each side: K = 2 already has zero dispersion.
    g = cluster(_population(jitter=0.0), k_max=6, seed=3)
    assert g.k == 2


def test_cluster_ignores_input_order_and_repeats_for_a_seed() -> None:
    states = _population(seed=4)
    shuffled = list(states)
    random.Random(9).shuffle(shuffled)
    first = cluster(states, k_max=4, seed=11)
    assert cluster(shuffled, k_max=4, seed=11) == first
    assert cluster(states, k_max=4, seed=11) == first


def test_cluster_small_inputs() -> None:
    one = _population()[:1]
    assert cluster([], k_max=4, seed=0) == Grouping(())
    assert cluster(one, k_max=4, seed=0).groups == ((one[0].client,),)
    states = _population()
    assert cluster(states, k_max=1, seed=0).k == 1
    same = [ClientState(_cid(i), 0.1, 1.0, 2.0, 0.0) for i in range(5)]
    assert cluster(same, k_max=4, seed=0).k == 1


def test_cluster_refuses_duplicate_ids() -> None:
    s = _population()[0]
    with pytest.raises(ValueError):
        cluster([s, s], k_max=2, seed=0)


# -- place_newcomer (Algorithm 2) ---------------------------------------------------------------


def _two_groups() -> tuple[Grouping, dict[bytes, ClientState]]:
    states = _population()
    return cluster(states, k_max=2, seed=7), {s.client: s for s in states}


def test_slow_newcomer_joins_the_slow_group() -> None:
    grouping, states = _two_groups()
    new = ClientState(_cid(40), 0.205, 8.1, 1.02, 0.1)
    placed = place_newcomer(grouping, states, new)
    assert placed.k == 2
    assert set(placed.groups[placed.group_of(new.client)]) == _ids(SLOW) | {new.client}


def test_fast_newcomer_joins_the_fast_group() -> None:
    grouping, states = _two_groups()
    new = ClientState(_cid(41), 0.021, 1.01, 8.1, 0.0)
    placed = place_newcomer(grouping, states, new)
    assert set(placed.groups[placed.group_of(new.client)]) == _ids(FAST) | {new.client}


def test_newcomer_placement_is_not_fooled_by_equal_lengths() -> None:
    # Same rtt and failure rate everywhere: a slow client's gamma (0, ~1/3, ~0, 0) is as long
    # as a fast one's (0, ~0, ~1/3, 0). Squared lengths alone would not tell the groups apart.
    rng = random.Random(6)
    fast = [ClientState(_cid(i), 0.01, 8 / v, v, 0.0)
            for i, v in ((i, 60 + 4 * rng.random()) for i in FAST)]
    slow = [ClientState(_cid(i), 0.01, 8 / v, v, 0.0)
            for i, v in ((i, 7 + 1.5 * rng.random()) for i in SLOW)]
    states = {s.client: s for s in fast + slow}
    grouping = cluster(fast + slow, k_max=4, seed=1)
    assert grouping.k == 2
    for speed in (7.5, 6.0):  # among the slow ones, and slower than all of them
        new = ClientState(_cid(50), 0.01, 8 / speed, speed, 0.0)
        placed = place_newcomer(grouping, states, new)
        assert set(placed.groups[placed.group_of(new.client)]) == _ids(SLOW) | {new.client}


def test_outlier_goes_to_the_nearest_centroid() -> None:
    grouping, states = _two_groups()
    new = ClientState(_cid(42), 0.5, 20.0, 0.5, 1.0)  # beyond every group's range
    placed = place_newcomer(grouping, states, new)
    assert set(placed.groups[placed.group_of(new.client)]) == _ids(SLOW) | {new.client}


def test_place_newcomer_edge_cases() -> None:
    grouping, states = _two_groups()
    new = ClientState(_cid(43), 0.1, 2.0, 3.0, 0.0)
    assert place_newcomer(Grouping(()), {}, new).groups == ((new.client,),)
    with pytest.raises(ValueError):
        place_newcomer(grouping, states, states[_cid(0)])
    partial = {c: s for c, s in states.items() if c != _cid(1)}
    with pytest.raises(ValueError):
        place_newcomer(grouping, partial, new)


# -- assign_nodes -------------------------------------------------------------------------------


def test_assign_nodes_balances_clients() -> None:
    groups = Grouping(((b"a1", b"a2", b"a3", b"a4"), (b"b1", b"b2", b"b3"), (b"c1", b"c2"),
                       (b"d1",)))
    nodes = [b"n2", b"n1"]
    # 4 -> n1, 3 -> n2, 2 -> n2 (3 < 4), 1 -> n1 (4 < 5): loads 5 and 5.
    assert assign_nodes(groups, nodes) == (b"n1", b"n2", b"n2", b"n1")


def test_assign_nodes_one_group_per_node_when_enough_nodes() -> None:
    groups = Grouping(((b"a",), (b"b", b"c"), (b"d",)))
    assert assign_nodes(groups, [b"z", b"y", b"x", b"w"]) == (b"x", b"w", b"y")


def test_assign_nodes_edge_cases() -> None:
    assert assign_nodes(Grouping(()), []) == ()
    with pytest.raises(ValueError):
        assign_nodes(Grouping(((b"a",),)), [])


def test_cluster_makes_at_least_k_min_groups_so_every_node_can_manage_one() -> None:
    states = _population()  # two tight clusters: the gain rule alone stops at K = 2
    assert cluster(states, k_max=4, seed=0).k == 2
    assert cluster(states, k_max=2, seed=0, k_min=3).k == 3
    assert cluster(states[:2], k_max=4, seed=0, k_min=3).k == 2  # no more than distinct states
