"""Robust aggregation baselines: median, trimmed mean, Krum, Multi-Krum."""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.learning.aggregation import Update
from dualchain.learning.contribution import cosine_similarity
from dualchain.learning.robust import RobustRule, krum_scores, robust_aggregate
from tests.digits_deltas import client_deltas


def _cid(c: int) -> bytes:
    return bytes([c]) * 4


def _updates(rows: list[list[float]] | list[np.ndarray]) -> list[Update]:
    return [Update(_cid(c), 0, 1, np.asarray(r, dtype=np.float32)) for c, r in enumerate(rows)]


def test_constructed_values() -> None:
    g = np.zeros(2, np.float32)
    ups = _updates([[1, 10], [2, 20], [100, -5], [3, 30], [4, 40]])
    assert robust_aggregate(g, ups, RobustRule("median")).params.tolist() == [3.0, 20.0]
    # beta 0.2 of 5 trims one value on each side: mean of the middle three.
    trimmed = robust_aggregate(g, ups, RobustRule("trimmed_mean", beta=0.2)).params
    assert trimmed.tolist() == pytest.approx([3.0, 20.0])
    even = robust_aggregate(g, _updates([[1, 0], [2, 0], [5, 0], [9, 0]]), RobustRule("median"))
    assert even.params.tolist() == [3.5, 0.0]
    med = robust_aggregate(np.ones(2, np.float32), ups, RobustRule("median"))
    assert med.params.tolist() == [4.0, 21.0] and not med.per_update
    assert len(med.selected) == 5 and med.rejected == ()


def test_krum_scores_and_choice_on_points() -> None:
    pts = [[0.0], [1.0], [2.0], [3.0], [50.0]]
    # f = 1, K = 5: each score sums the K - f - 2 = 2 smallest squared distances.
    scores = krum_scores([np.array(p) for p in pts], f=1)
    assert scores == [1 + 4, 1 + 1, 1 + 1, 1 + 4, 47**2 + 48**2]
    krum = robust_aggregate(np.zeros(1, np.float32), _updates(pts), RobustRule("krum", f=1))
    assert krum.selected == (_cid(1),) and krum.params.tolist() == [1.0]  # tie: canonical order
    assert krum.per_update and len(krum.rejected) == 4
    multi = robust_aggregate(np.zeros(1, np.float32), _updates(pts), RobustRule("multi_krum", f=1))
    assert multi.selected == tuple(_cid(c) for c in range(4))  # m = K - f = 4
    assert multi.rejected == (_cid(4),) and multi.params.tolist() == [1.5]


@pytest.mark.parametrize(
    "rule",
    [
        RobustRule("median"),
        RobustRule("trimmed_mean", beta=0.3),
        RobustRule("krum", f=3),
        RobustRule("multi_krum", f=3),
    ],
)
def test_rules_resist_30_percent_scaled_updates_on_digits(rule: RobustRule) -> None:
    """3 of 10 real digits updates scaled x10: the plain mean is dragged 3.7 times too long, the
    robust rules stay near the honest mean, and the Krum family picks honest updates only."""
    deltas = client_deltas(clients=10, batches=5)
    bad = {1, 4, 7}
    ups = _updates([10 * d if c in bad else d for c, d in enumerate(deltas)])
    honest = np.mean([d.astype(np.float64) for c, d in enumerate(deltas) if c not in bad], axis=0)
    plain = np.mean([u.delta.astype(np.float64) for u in ups], axis=0)
    assert np.linalg.norm(plain) > 3 * np.linalg.norm(honest)
    result = robust_aggregate(np.zeros(honest.size, np.float32), ups, rule)
    got = result.params.astype(np.float64)
    assert cosine_similarity(got, honest) > 0.7
    assert 0.4 < np.linalg.norm(got) / np.linalg.norm(honest) < 1.6
    if result.per_update:
        assert not {_cid(c) for c in bad} & set(result.selected)
        assert {_cid(c) for c in bad} <= set(result.rejected)


def test_krum_rejects_sign_flippers_on_digits() -> None:
    deltas = client_deltas(clients=10, batches=5)
    bad = {0, 3, 9}
    ups = _updates([-d if c in bad else d for c, d in enumerate(deltas)])
    result = robust_aggregate(
        np.zeros(deltas[0].size, np.float32), ups, RobustRule("multi_krum", f=3)
    )
    assert set(result.rejected) == {_cid(c) for c in bad}


def test_order_does_not_matter_and_the_global_is_added() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.normal(size=50) for _ in range(7)]
    g = rng.normal(size=50).astype(np.float32)
    for rule in (RobustRule("median"), RobustRule("trimmed_mean"), RobustRule("multi_krum", f=2)):
        a = robust_aggregate(g, _updates(rows), rule)
        shuffled = _updates(rows)
        b = robust_aggregate(g, [shuffled[i] for i in (3, 6, 0, 2, 5, 1, 4)], rule)
        assert a.params.tobytes() == b.params.tobytes() and a.selected == b.selected
        assert a.params.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "bulyan"}, "unknown robust rule"),
        ({"name": "trimmed_mean", "beta": 0.5}, "beta"),
        ({"name": "krum", "f": -1}, "non-negative"),
        ({"name": "multi_krum", "m": 0}, "at least 1"),
    ],
)
def test_rule_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RobustRule(**kwargs)  # type: ignore[arg-type]


def test_bad_inputs_are_refused() -> None:
    g = np.zeros(2, np.float32)
    ups = _updates([[1, 1], [2, 2], [3, 3], [4, 4]])
    with pytest.raises(ValueError, match="needs at least 5 updates"):
        robust_aggregate(g, ups, RobustRule("krum", f=1))
    with pytest.raises(ValueError, match="exceeds"):
        robust_aggregate(g, ups, RobustRule("multi_krum", f=0, m=5))
    with pytest.raises(ValueError, match="at least one update"):
        robust_aggregate(g, [], RobustRule())
    with pytest.raises(ValueError, match="float32"):
        robust_aggregate(g.astype(np.float64), ups, RobustRule())
    with pytest.raises(ValueError, match="size 2"):
        robust_aggregate(g, [*ups, Update(b"x", 0, 1, np.ones(3, np.float32))], RobustRule())
