"""Precision, recall and false-positive rate of per-update detection decisions."""

from __future__ import annotations

import pytest

from dualchain.adversary.metrics import DetectionCounts


def test_counts_and_rates() -> None:
    c = DetectionCounts.from_decisions(
        [True, True, False, False, True, False], [True, False, True, False, True, False]
    )
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 2)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(2 / 3)
    assert c.false_positive_rate == pytest.approx(1 / 3)
    total = c + DetectionCounts(tp=1, tn=3)
    assert total == DetectionCounts(3, 1, 1, 5)
    assert total.as_dict()["recall"] == pytest.approx(0.75)


def test_undefined_rates_are_none() -> None:
    nothing_flagged = DetectionCounts.from_decisions([False, False], [True, False])
    assert nothing_flagged.precision is None and nothing_flagged.recall == 0.0
    clean_run = DetectionCounts.from_decisions([False, True], [False, False])
    assert clean_run.recall is None and clean_run.false_positive_rate == 0.5
    assert DetectionCounts().as_dict()["false_positive_rate"] is None


def test_from_ids() -> None:
    c = DetectionCounts.from_ids([b"b"], [b"b", b"c"], [b"a", b"b", b"c"])
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 0, 1, 1)
    with pytest.raises(ValueError, match="not among"):
        DetectionCounts.from_ids([b"z"], [], [b"a"])
    with pytest.raises(ValueError, match="2 decisions for 1 updates"):
        DetectionCounts.from_decisions([True, False], [True])
