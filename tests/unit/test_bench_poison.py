"""The poison experiment's measurements: what the processes' event lines say about the
poisoned commits and the exclusion, the central baseline under poison, and the document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualchain import cli
from dualchain.bench import paper
from dualchain.bench.poison import attack_of, central_curve, live_summary
from dualchain.deploy.up import UpConfig

POISONER = "aa" * 32


def _history(excluded_at: int, committed_hash: str = "") -> list[tuple[str, dict]]:
    return [
        ("node-0", {"event": "adversary_commit", "version": 3, "hash": "p3", "ctbc_height": 4}),
        ("node-0", {"event": "adversary_commit", "version": 3, "hash": "p3", "ctbc_height": 4}),
        ("node-0", {"event": "node_excluded", "node": POISONER, "version": 2, "ctbc_height": 5}),
        ("node-1", {"event": "node_excluded", "node": POISONER, "version": excluded_at,
                    "ctbc_height": 5}),
        ("node-0", {"event": "adversary_commit", "version": 6, "hash": "p6", "ctbc_height": 9}),
        ("node-1", {"event": "version", "version": 3, "hash": committed_hash or "h3"}),
    ]


def test_refused_poison_and_an_exclusion_before_the_next_version() -> None:
    versions = {v: {"hash": f"h{v}"} for v in range(1, 8)}
    summary = live_summary(_history(2), versions, "node-0", POISONER)
    assert summary["attempted_versions"] == [3, 6]
    assert summary["accepted_poisoned_versions"] == 0
    assert summary["excluded_after_versions"] == 0
    assert summary["exclusion"] == {"seen_by": "node-1", "at_version": 2, "ctbc_height": 5}
    assert [a["committed"] for a in summary["attempts"]] == [False, False]


def test_a_committed_poisoned_model_and_a_late_exclusion_are_counted() -> None:
    versions = {v: {"hash": f"h{v}"} for v in range(1, 8)}
    versions[3] = {"hash": "p3"}  # the poisoned model became version 3
    summary = live_summary(_history(4), versions, "node-0", POISONER)
    assert summary["accepted_poisoned_versions"] == 1
    assert summary["excluded_after_versions"] == 2  # versions 3 and 4 came before it
    never = live_summary(_history(4)[:2], versions, "node-0", POISONER)
    assert never["exclusion"] is None and never["excluded_after_versions"] is None


def test_the_central_aggregator_loses_its_accuracy_at_the_poisoned_version() -> None:
    curve = dict(central_curve(3, 3, 3, 0.05, attack_of((3,), 1.0, 0), 0))
    assert curve[2] > 0.4 and curve[3] < 0.2  # chance is 0.1


def test_the_document_has_the_issues_fields_csv_and_png(tmp_path: Path, monkeypatch) -> None:
    fake = {"mode": "fedavg", "poison_versions": [3, 6], "rho": 0.1,
            "accepted_poisoned_versions": 0, "excluded_after_versions": 0,
            "curves": {name: {"versions": [1, 2, 3], "accuracy": [0.5, 0.8, acc]}
                       for name, acc in (("dualchain", 0.9), ("no_check", 0.2),
                                         ("central", 0.1))}}
    seen = {}

    def poison(base, versions, rho, progress):
        seen.update(versions=tuple(versions), rho=rho)
        return fake

    monkeypatch.setattr(paper.poison_bench, "poison", poison)
    document = paper.run_experiment("poison", UpConfig(), tmp_path, lambda line: None,
                                    poison_versions=(3, 6), rho=0.1)
    assert seen == {"versions": (3, 6), "rho": 0.1}
    assert json.loads((tmp_path / "poison.json").read_text())["curves"] == fake["curves"]
    assert {"accepted_poisoned_versions", "excluded_after_versions", "curves"} <= set(document)
    lines = (tmp_path / "poison.csv").read_text().splitlines()
    assert lines[0] == "curve,version,accuracy" and len(lines) == 10
    assert (tmp_path / "poison.png").stat().st_size > 0


@pytest.mark.parametrize("flags", [
    ["--experiment", "poison", "--poison-versions", "20,x"],
    ["--experiment", "poison", "--poison-versions", "0,60"],
    ["--experiment", "poison", "--rho", "0"],
    ["--experiment", "fig6", "--bad-clients", "0,11"],
    ["--experiment", "fig6", "--wait-s", "-1"],
])
def test_bad_experiment_parameters_are_one_line_errors(flags, capsys) -> None:
    assert cli.main(["bench", "paper", *flags, "--clients", "10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--poison-versions" in err and "Traceback" not in err
