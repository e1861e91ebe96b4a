"""A client's Prometheus metrics are counted off the events it prints, and its config names the
port they are served on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualchain.client.config import ClientConfig, ConfigError
from dualchain.client.metrics import ClientMetrics
from tests.unit.client.test_config import base_config


def value(metrics: ClientMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_task_events_count_by_outcome_and_set_the_latest_version_and_loss() -> None:
    metrics = ClientMetrics()
    printed: list[dict] = []
    emit = metrics.observing(printed.append)
    for version, outcome in [(1, "accepted"), (2, "accepted"), (2, "refused:too_stale")]:
        emit({"event": "task", "version": version, "task": 7, "batches": 10, "samples": 640,
              "loss": 0.5, "seconds": 1.25, "outcome": outcome})
    assert len(printed) == 3  # the events still reach stdout, unchanged
    assert value(metrics, "dualchain_client_tasks_total", outcome="accepted") == 2
    assert value(metrics, "dualchain_client_tasks_total", outcome="refused:too_stale") == 1
    assert value(metrics, "dualchain_client_samples_trained_total") == 3 * 640
    assert value(metrics, "dualchain_client_task_seconds_count") == 3
    assert value(metrics, "dualchain_client_model_version") == 2
    assert value(metrics, "dualchain_client_loss") == 0.5


def test_connection_events_drive_the_connected_gauge() -> None:
    metrics = ClientMetrics()
    assert value(metrics, "dualchain_client_connected") == 0
    metrics.observe({"event": "registered", "tx": "00", "seconds": 0.1})
    assert value(metrics, "dualchain_client_connected") == 1
    metrics.observe({"event": "disconnected", "reason": "unreachable"})
    assert value(metrics, "dualchain_client_connected") == 0
    assert value(metrics, "dualchain_client_disconnections_total", reason="unreachable") == 1
    metrics.observe({"event": "reconnected", "seconds": 2.0})
    metrics.observe({"event": "flush", "outcome": "accepted"})
    metrics.observe({"event": "report", "tx": "00", "task": 1})
    assert value(metrics, "dualchain_client_connected") == 1
    assert value(metrics, "dualchain_client_flushes_total", outcome="accepted") == 1
    assert value(metrics, "dualchain_client_reports_total") == 1


def test_process_cpu_and_memory_are_exported_too() -> None:
    assert value(ClientMetrics(), "dualchain_process_rss_bytes") > 0


def test_the_metrics_port_defaults_to_off_and_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "client.json"
    path.write_text(json.dumps(base_config()))
    assert ClientConfig.load(path).metrics_port == 0
    path.write_text(json.dumps(base_config(metrics_port=9300)))
    assert ClientConfig.load(path).metrics_port == 9300
    for bad in (-1, 70000, "9300", True):
        path.write_text(json.dumps(base_config(metrics_port=bad)))
        with pytest.raises(ConfigError, match="metrics_port"):
            ClientConfig.load(path)
