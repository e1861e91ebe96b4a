"""The in-process attack x defense experiment: its rows have the issue's shape and its
detection counts say what the defense did."""

from __future__ import annotations

import pytest

from dualchain.bench.attacks import ATTACKS, Federation, attacks, defense, simulate


@pytest.fixture(scope="module")
def fed() -> Federation:
    return Federation(clients=5)


def test_a_lazy_client_is_caught_by_the_watermark_and_missed_without_it(fed) -> None:
    _, caught = simulate(fed, ATTACKS["lazy"], 1, defense("pn", 1), rounds=2, batches=2)
    assert (caught.tp, caught.fn, caught.fp) == (1, 0, 0)  # round 0: nothing to copy yet
    _, missed = simulate(fed, ATTACKS["lazy"], 1, defense("none", 1), rounds=2, batches=2)
    assert (missed.tp, missed.fn) == (0, 1)


def test_rows_have_the_issues_fields(fed, monkeypatch) -> None:
    monkeypatch.setattr("dualchain.bench.attacks.Federation", lambda clients, seed: fed)
    result = attacks(["sign_flip"], ["cluster", "median"], 0.4, 5, 1, 2, lambda line: None)
    keys = {"attack", "defense", "fraction", "final_accuracy", "clean_accuracy", "precision",
            "recall", "false_positive_rate"}
    assert [set(r) for r in result["rows"]] == [keys, keys]
    cluster, median = result["rows"]
    assert cluster["fraction"] == 0.4 and cluster["recall"] == 1.0
    assert median["precision"] is None and median["recall"] is None  # no per-update choice
