"""fig8's communication time, computed from constructed event lines (no processes), and its
command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualchain import cli
from dualchain.bench import fig8

T0 = 1_800_000_000.0  # a Unix time; every event below is relative to it


def ready(name: str, cid: str) -> tuple[str, dict]:
    return name, {"event": "ready", "id": cid}


def task(name: str, tid: int, train_s: float, trained_at: float) -> tuple[str, dict]:
    return name, {"event": "task", "version": 0, "task": tid, "outcome": "accepted",
                  "train_s": train_s, "trained_at": T0 + trained_at}


def version(node: str, v: int, adopted: float, last: tuple[str, int, float] | None
            ) -> tuple[str, dict]:
    update = None if last is None else {"client": last[0], "task": last[1],
                                        "arrived": T0 + last[2]}
    return node, {"event": "version", "version": v, "adopted": T0 + adopted,
                  "time": T0 + adopted + 0.3, "last_update": update}


def two_node_history() -> list[tuple[str, dict]]:
    """Versions 1..3 on 2 nodes, client-0 (id aa) on node-0, client-1 (id bb) on node-1."""
    return [
        ready("client-0", "aa"), ready("client-1", "bb"),
        version("node-0", 1, 10.0, None), version("node-1", 1, 10.2, None),
        # round 2: client-0 trains 10.5..11.5, received at 11.7; client-1 trains
        # 10.4..12.4, received at 12.6, the version's last: 10.0 -> 14.0
        task("client-0", 7, 1.0, 11.5), task("client-1", 3, 2.0, 12.4),
        version("node-1", 2, 14.1, ("bb", 3, 12.6)), version("node-0", 2, 14.0, ("aa", 7, 11.7)),
        # round 3: 14.0 -> 20.0; the last update (client-0's task 8) began training at 13.0,
        # before the round: only 14.0..16.0 of its 3 s count
        task("client-0", 8, 3.0, 16.0),
        version("node-0", 3, 20.0, ("aa", 8, 16.5)), version("node-1", 3, 20.4, None),
        # version 4 reported by one node only (the run stopped): not complete
        task("client-1", 4, 1.0, 21.0),
        version("node-1", 4, 23.0, ("bb", 4, 21.2)),
    ]


def test_the_round_less_the_training_of_the_last_received_included_update() -> None:
    rows = {r["version"]: r for r in fig8.version_rounds(two_node_history(), nodes=2)}
    assert sorted(rows) == [2, 3, 4]  # version 1 has no round before it
    two = rows[2]
    # the round starts and ends at the first node to adopt; client-1's update came last
    assert two["round_s"] == 4.0 and two["training_s"] == 2.0
    assert two["communication_s"] == 2.0
    assert (two["to_training_s"], two["upload_s"], two["commit_s"]) == (0.4, 0.2, 1.4)
    assert two["complete"]


def test_training_that_began_before_the_round_counts_only_inside_it() -> None:
    three = {r["version"]: r for r in fig8.version_rounds(two_node_history(), 2)}[3]
    assert three["round_s"] == 6.0
    assert three["training_s"] == 2.0 and three["communication_s"] == 4.0
    assert three["to_training_s"] == 0.0


def test_a_version_not_every_node_reported_is_not_counted() -> None:
    rows = fig8.version_rounds(two_node_history(), nodes=2)
    four = rows[-1]
    assert four["version"] == 4 and not four["complete"]
    summary = fig8.summarise(rows, warmup=1)
    assert summary["versions"] == 2
    assert summary["communication_s_median"] == 3.0 and summary["round_s_median"] == 5.0
    assert summary["communication_s_p90"] == 4.0  # nearest rank of two: the larger


def test_a_critical_task_without_its_training_event_leaves_the_version_unmeasured() -> None:
    history = [ready("client-0", "aa"),
               version("node-0", 1, 10.0, None),
               version("node-0", 2, 14.0, ("aa", 99, 13.0))]  # task 99 never reported
    [row] = fig8.version_rounds(history, nodes=1)
    assert row["round_s"] == 4.0 and row["communication_s"] is None
    assert fig8.summarise([row], warmup=0) == {
        "versions": 0, **{f"{k}_median": None for k in fig8.FIELDS},
        "communication_s_p90": None}


def test_warmup_versions_are_left_out() -> None:
    rows = fig8.version_rounds(two_node_history(), nodes=2)
    assert fig8.summarise(rows, warmup=2)["versions"] == 1
    assert fig8.summarise(rows, warmup=2)["communication_s_median"] == 4.0


def test_p90_over_ten_versions() -> None:
    rows = [{"version": v, "complete": True, "communication_s": float(v),
             **{k: 1.0 for k in fig8.FIELDS if k != "communication_s"}} for v in range(1, 11)]
    summary = fig8.summarise(rows, warmup=0)
    assert summary["communication_s_median"] == 5.5 and summary["communication_s_p90"] == 9.0
    rows = rows[:9]  # fewer than ten: the largest; never below the median
    assert fig8.summarise(rows, warmup=0)["communication_s_p90"] == 9.0


def test_the_machine_window_averages_the_samples_inside_it() -> None:
    sampler = fig8.MachineSampler()
    sampler.samples = [(1.0, 50.0, 4 * 2**30), (2.0, 100.0, 2 * 2**30), (3.0, 10.0, 2**30)]
    assert sampler.window(1.0, 2.0) == {"machine_busy_percent": 75.0,
                                        "memory_available_min_gb": 2.0}
    assert sampler.window(5.0, 6.0)["machine_busy_percent"] is None


def test_the_document_csv_and_png_are_written(tmp_path: Path, monkeypatch) -> None:
    calls = []

    def fake_point(base, n, chains, per_node, warmup, workdir, progress):
        calls.append((n, chains, per_node, warmup))
        return {"nodes": n, "chains": chains, "communication_s_median": 1.0 + n,
                "communication_s_p90": 2.0 + n, "round_s_median": 3.0, "versions": 5,
                "per_version": [{"version": 3}]}

    monkeypatch.setattr(fig8, "run_point", fake_point)
    from dualchain.deploy.up import UpConfig

    doc = fig8.fig8_sweep(UpConfig(), [4, 8], 2, 1, tmp_path, lambda line: None)
    assert calls == [(4, "dual", 2, 1), (4, "single", 2, 1), (8, "dual", 2, 1),
                     (8, "single", 2, 1)]
    assert [(p["nodes"], p["chains"]) for p in doc["points"]] == [
        (4, "dual"), (4, "single"), (8, "dual"), (8, "single")]
    assert (tmp_path / "fig8.png").stat().st_size > 0
    csv_text = (tmp_path / "fig8.csv").read_text()
    assert csv_text.startswith("nodes,chains,communication_s_median") and "per_version" not in \
        csv_text


def test_the_cli_takes_a_node_list_for_fig8(monkeypatch, tmp_path: Path) -> None:
    seen = {}

    def fake_sweep(base, nodes, per_node, warmup, out, progress, chains):
        seen.update(nodes=nodes, per_node=per_node, warmup=warmup, rounds=base.rounds,
                    chains=chains)
        return {"points": []}

    monkeypatch.setattr(fig8, "fig8_sweep", fake_sweep)
    code = cli.main(["bench", "paper", "--experiment", "fig8", "--nodes", "4,8",
                     "--clients-per-node", "2", "--rounds", "6", "--out", str(tmp_path),
                     "--chains", "single", "--json"])
    assert code == 0
    assert seen == {"nodes": [4, 8], "per_node": 2, "warmup": 2, "rounds": 6,
                    "chains": ["single"]}


@pytest.mark.parametrize("flags", [["--clients-per-node", "0"], ["--warmup", "-1"],
                                   ["--chains", "dual,triple"]])
def test_bad_fig8_options_are_refused_with_a_reason(flags, capsys) -> None:
    code = cli.main(["bench", "paper", "--experiment", "fig8", "--nodes", "4,8", *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert "--clients-per-node" in err and "Traceback" not in err
