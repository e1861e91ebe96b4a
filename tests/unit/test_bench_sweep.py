"""The node sweeps' pieces that run without processes: the points, the etcd check, the CLI."""

from __future__ import annotations

import pytest

from dualchain import cli
from dualchain.bench import etcd, sweep


def test_a_consensus_run_becomes_a_point_with_view_changes_per_100_heights() -> None:
    run = {"nodes": 16, "tps": 250.0, "latency_p50_s": 1.5, "latency_p99_s": 3.0,
           "view_changes": 2, "heights": 400, "messages_per_tx": 3.5, "bytes_per_tx": 9000,
           "cpu_percent_per_replica_mean": 12.5, "offered_rate_tps": 375.0, "refused_busy": 0,
           "block_interval_ms": 500, "timeouts_ms": [1000, 500, 500, 500]}
    point = sweep._point(run)
    assert point["view_changes_per_100_heights"] == 0.5
    assert {k: point[k] for k in ("nodes", "tps", "latency_p50_s", "latency_p99_s",
                                  "view_changes", "messages_per_tx", "cpu_percent_per_replica")
            } == {"nodes": 16, "tps": 250.0, "latency_p50_s": 1.5, "latency_p99_s": 3.0,
                  "view_changes": 2, "messages_per_tx": 3.5, "cpu_percent_per_replica": 12.5}


def test_the_offered_rate_falls_with_the_committee_and_stays_in_bounds() -> None:
    rates = [sweep.offered_rate(n) for n in (4, 8, 16, 24, 36)]
    assert rates == sorted(rates, reverse=True)
    assert min(rates) >= 60 and max(rates) <= 2000
    assert sweep.timeouts_ms(16) is None and sweep.timeouts_ms(36) == (3600, 1800, 1800, 900)


def test_without_etcd_the_baseline_is_skipped_with_the_reason(monkeypatch) -> None:
    monkeypatch.setattr(etcd.shutil, "which", lambda name: None)
    reason = etcd.etcd_available()
    assert reason is not None and "apt-get install etcd-server" in reason


@pytest.mark.parametrize("nodes", ["4,x", "0", "", "4,-8"])
def test_bad_node_lists_are_refused_with_a_reason(nodes, capsys) -> None:
    code = cli.main(["bench", "paper", "--experiment", "fig9", "--nodes", nodes, "--json"])
    assert code == 2
    assert "--nodes" in capsys.readouterr().err


def test_a_list_of_nodes_is_refused_for_a_testbed_experiment(capsys) -> None:
    code = cli.main(["bench", "paper", "--experiment", "table3", "--nodes", "2,4"])
    assert code == 2
    assert "comma-separated list" in capsys.readouterr().err
