"""Fixtures of the integration tests: clusters of real daemons that never outlive their test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.integration.cluster import Cluster
from tests.integration.cmbc_cluster import CmbcCluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Adds the log tails of every live cluster to the report of a failing test phase."""
    report = yield
    if report.failed:
        for n, cluster in enumerate(Cluster.instances):
            report.sections.append(
                (f"cluster {n} node logs ({report.when})", cluster.log_tails(40))
            )
    return report


@pytest_asyncio.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Cluster]]:
    """``make_cluster(nodes=4, byzantine=..., consensus=...)``: a started cluster under
    ``tmp_path``, torn down (every process killed by PID) when the test ends, pass or fail."""
    clusters: list[Cluster] = []

    def make(**kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster-{len(clusters)}", **kwargs)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            await cluster.aclose()


@pytest_asyncio.fixture
async def make_cmbc_cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await make_cmbc_cluster(nodes=3, miners=2, pow=..., proxied=False)``: a CMBC cluster
    under ``tmp_path`` with every daemon ready (no miner yet: ``start_miner``), torn down (every
    process killed by PID, proxies closed) when the test ends, pass or fail."""
    clusters: list[CmbcCluster] = []

    async def make(**kwargs: Any) -> CmbcCluster:
        cluster = CmbcCluster(tmp_path / f"cmbc-{len(clusters)}", **kwargs)
        clusters.append(cluster)
        await cluster.aopen()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            await cluster.aclose()
