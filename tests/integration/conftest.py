"""Fixtures of the integration tests: clusters of real daemons that never outlive their test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from dualchain.deploy.up import Testbed
from tests.integration.cluster import Cluster
from tests.integration.cmbc_cluster import CmbcCluster
from tests.integration.testbeds import running_testbed


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


@pytest.fixture
def make_testbed(tmp_path: Path) -> Iterator[Callable[..., Testbed]]:
    """``make_testbed(nodes=2, clients=2, ...)``: a running ``dualchain up`` testbed (the
    ``UpConfig`` keys) under ``tmp_path`` with every process ready, stopped when the test ends,
    pass or fail (see ``testbeds.running_testbed``)."""
    made: list[Testbed] = []
    with contextlib.ExitStack() as stack:
        def make(prepare: Callable[[Testbed], None] | None = None, **config: Any) -> Testbed:
            workdir = tmp_path / f"testbed-{len(made)}"
            made.append(stack.enter_context(running_testbed(workdir, prepare, **config)))
            return made[-1]

        yield make
