"""A miner's Prometheus metrics are its own counters, read when Prometheus scrapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualchain.chain.miner import MinerConfig, MinerStats, serve_metrics


def test_a_scrape_reads_the_counters_as_they_are_then() -> None:
    stats = MinerStats()
    registry = serve_metrics(stats, 0)  # port 0: no HTTP endpoint, the registry only
    assert registry.get_sample_value("dualchain_miner_blocks_total") == 0
    stats.hashes, stats.blocks, stats.stale, stats.templates = 40_000, 2, 1, 5
    stats.hashrate = 1234.5
    read = {name: registry.get_sample_value(name) for name in (
        "dualchain_miner_hashes_total", "dualchain_miner_blocks_total",
        "dualchain_miner_stale_total", "dualchain_miner_templates_total",
        "dualchain_miner_hashrate_hs")}
    assert read == {"dualchain_miner_hashes_total": 40_000, "dualchain_miner_blocks_total": 2,
                    "dualchain_miner_stale_total": 1, "dualchain_miner_templates_total": 5,
                    "dualchain_miner_hashrate_hs": 1234.5}
    assert registry.get_sample_value("dualchain_process_cpu_seconds") is not None


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_metrics_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(ValueError, match="--metrics-port"):
        MinerConfig(cmbc="127.0.0.1:1", key=Path("k"), metrics_port=port)
