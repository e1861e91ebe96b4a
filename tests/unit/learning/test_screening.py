"""The defense a pool goes through before aggregation (``learning.screening``): each step on
constructed pools of real digits deltas, and the same decision from the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.learning.aggregation import Update
from dualchain.learning.robust import RobustRule, robust_aggregate
from dualchain.learning.screening import (
    REASON_COPY,
    REASON_LOW,
    REASON_NOT_SELECTED,
    REASON_UNMARKED,
    Candidate,
    Defense,
    newest_per_client,
    screen,
    seed_for_key,
)
from dualchain.learning.watermark import WatermarkParams, embed
from tests.digits_deltas import client_deltas, start_model

WM = WatermarkParams()


def _key(i: int) -> bytes:
    return bytes([i]) * 32


def _client(i: int) -> bytes:
    return bytes([100 + i]) * 32


def _seed(i: int) -> bytes:
    return seed_for_key(b"key-of-client-%d" % i)


def _pool(deltas, version: int = 3, mark: bool = True) -> list[Candidate]:
    out = []
    for i, d in enumerate(deltas):
        delta = embed(d, _seed(i), version, WM) if mark else np.asarray(d, np.float32)
        out.append(Candidate(_key(i), _seed(i), Update(_client(i), version, 64, delta)))
    return out


def test_seeds_follow_the_key_and_differ_between_keys() -> None:
    assert seed_for_key(b"a") == seed_for_key(b"a") != seed_for_key(b"b")
    assert len(seed_for_key(b"a")) == 32


def test_honest_marked_updates_are_all_kept() -> None:
    pool = _pool(client_deltas()[:8])
    result = screen(pool, Defense(watermark=WM), start_model())
    assert result.discarded == () and len(result.kept) == 8 and result.params is None


def test_a_lazy_copy_and_an_unmarked_free_rider_are_discarded_with_their_reasons() -> None:
    deltas = client_deltas()[:6]
    pool = _pool(deltas)
    rng = np.random.default_rng(0)
    source = pool[0].update.delta.astype(np.float64)
    hidden = source + rng.normal(0, np.sqrt(np.mean(source ** 2)), source.size)  # noise = power
    copy = embed(hidden.astype(np.float32), _seed(6), 3, WM)  # the copier marks it as its own
    pool.append(Candidate(_key(6), _seed(6), Update(_client(6), 3, 64, copy)))
    zero = np.zeros(deltas[0].size, np.float32)
    pool.append(Candidate(_key(7), _seed(7), Update(_client(7), 3, 64, zero)))
    result = screen(pool, Defense(watermark=WM), start_model())
    assert result.discarded == ((_key(6), REASON_COPY), (_key(7), REASON_UNMARKED))
    assert [c.key for c in result.kept] == [_key(i) for i in range(6)]


def test_a_copy_relabelled_onto_a_newer_version_is_caught_within_the_window() -> None:
    deltas = client_deltas()[:5]
    pool = _pool(deltas, version=4)
    old = embed(deltas[0], _seed(0), 3, WM)  # the source's update of the version before
    copy = embed(old, _seed(5), 4, WM)
    pool.append(Candidate(_key(5), _seed(5), Update(_client(5), 4, 64, copy)))
    caught = screen(pool, Defense(watermark=WM, watermark_window=1), start_model())
    assert caught.discarded == ((_key(5), REASON_COPY),)
    missed = screen(pool, Defense(watermark=WM, watermark_window=0), start_model())
    assert missed.discarded == ()


def test_clustering_discards_sign_flipped_updates() -> None:
    deltas = list(client_deltas()[:10])
    for i in (7, 8, 9):
        deltas[i] = -deltas[i]
    result = screen(_pool(deltas, mark=False), Defense(rule="cluster"), start_model())
    assert result.discarded == tuple((_key(i), REASON_LOW) for i in (7, 8, 9))
    assert result.params is None


def test_a_client_with_many_updates_is_one_point_in_the_clustering() -> None:
    """A fast flipper's four updates beside three honest clients (fedasync): judged per update
    they hold the median anchor and the three honest updates are the ones discarded; as one
    client's point all four are discarded, and no honest update is."""
    deltas = client_deltas()[:7]
    pool = _pool(deltas[:3], mark=False)
    for i, d in enumerate(deltas[3:]):  # client 3's four updates, on versions 0 to 3
        pool.append(Candidate(_key(3 + i), _seed(3), Update(_client(3), i, 64,
                                                            -np.asarray(d, np.float32))))
    result = screen(pool, Defense(rule="cluster"), start_model())
    assert result.discarded == tuple((_key(i), REASON_LOW) for i in (3, 4, 5, 6))
    assert newest_per_client([(b"a", b"c", 1), (b"b", b"c", 2), (b"z", b"c", 2),
                              (b"d", b"e", 0)]) == {b"c": b"b", b"e": b"d"}


def test_two_colluders_alone_with_the_anchor_are_no_group() -> None:
    """Two flippers and one honest client (a small fedasync pool): the two flipped updates and
    their anchor would be a dense group and the honest update the one discarded. A group needs
    min_samples updates, so this pool is not judged: nothing discarded, no offence."""
    deltas = list(client_deltas()[:3])
    deltas[1], deltas[2] = -deltas[1], -deltas[2]
    result = screen(_pool(deltas, mark=False), Defense(rule="cluster"), start_model())
    assert result.discarded == ()


def test_multi_krum_leaves_out_the_attackers_and_makes_the_model() -> None:
    deltas = list(client_deltas()[:10])
    for i in (0, 1, 2):
        deltas[i] = (5 * deltas[i]).astype(np.float32)
    pool = _pool(deltas, mark=False)
    defense = Defense(rule="multi_krum", robust=RobustRule(f=3))
    result = screen(pool, defense, start_model())
    assert result.discarded == tuple((_key(i), REASON_NOT_SELECTED) for i in (0, 1, 2))
    keyed = [Update(c.key, 3, 64, c.update.delta) for c in pool]
    expected = robust_aggregate(start_model(), keyed, RobustRule("multi_krum", f=3)).params
    assert result.params is not None and np.array_equal(result.params, expected)
    assert result.selected_weight == pytest.approx(1 / 7)


def test_coordinate_rules_make_the_model_and_discard_nothing() -> None:
    pool = _pool(client_deltas()[:5], mark=False)
    for rule in ("median", "trimmed_mean"):
        result = screen(pool, Defense(rule=rule), start_model())
        assert result.discarded == () and result.params is not None


def test_krum_with_too_few_updates_keeps_the_pool_whole() -> None:
    pool = _pool(client_deltas()[:4], mark=False)  # f = 1 needs 5
    result = screen(pool, Defense(rule="krum"), start_model())
    assert result.discarded == () and result.params is None and len(result.kept) == 4


def test_the_decision_does_not_depend_on_the_order_of_the_pool() -> None:
    deltas = list(client_deltas()[:8])
    deltas[3] = -deltas[3]
    pool = _pool(deltas)
    defense = Defense(rule="cluster", watermark=WM)
    a = screen(pool, defense, start_model())
    b = screen(list(reversed(pool)), defense, start_model())
    assert a.discarded == b.discarded == ((_key(3), REASON_LOW),)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown defense"):
        Defense(rule="magic")
    pool = _pool(client_deltas()[:2], mark=False)
    with pytest.raises(ValueError, match="same key"):
        screen([pool[0], pool[0]], Defense(rule="cluster"), start_model())
