"""Prometheus metrics of a chain daemon, on its own registry and HTTP port.

CPU and memory come from psutil at scrape time (a custom collector), so they cost nothing
between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dualchain.chain.verifier import SignatureVerifier

_LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_VERIFY_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


class ProcessCollector(Collector):
    """CPU seconds, CPU percent since the last scrape, RSS and threads of this process."""

    def __init__(self, prefix: str) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # prime the percent counter
        self._prefix = prefix

    def collect(self) -> Iterator[GaugeMetricFamily]:
        times = self._process.cpu_times()
        yield GaugeMetricFamily(f"{self._prefix}_cpu_seconds", "CPU seconds used (user+system)",
                                value=times.user + times.system)
        yield GaugeMetricFamily(f"{self._prefix}_cpu_percent",
                                "CPU percent since the previous scrape (100 = one core)",
                                value=self._process.cpu_percent(None))
        yield GaugeMetricFamily(f"{self._prefix}_rss_bytes", "resident memory",
                                value=self._process.memory_info().rss)
        yield GaugeMetricFamily(f"{self._prefix}_threads", "threads",
                                value=self._process.num_threads())


class VerifierCollector(Collector):
    """Signatures the backend checked and checks the verified-signature cache answered: their
    ratio to committed transactions shows whether a replica checks anything twice."""

    def __init__(self, prefix: str, verifier: SignatureVerifier) -> None:
        self._prefix = prefix
        self._verifier = verifier

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(f"{self._prefix}_signatures_checked",
                                  "signatures checked by the ML-DSA backend",
                                  value=self._verifier.checked)
        yield CounterMetricFamily(f"{self._prefix}_signature_cache_hits",
                                  "signature checks answered by the verified-signature cache",
                                  value=self._verifier.cache_hits)


class ChainMetrics:
    """The metrics every chain daemon exports (prefix ``dualchain_chain_``)."""

    def __init__(self, kind: str) -> None:
        self.registry = CollectorRegistry()
        p = "dualchain_chain"
        r = self.registry
        self.height = Gauge(f"{p}_height", "committed height", ["kind"], registry=r).labels(kind)
        self.round = Gauge(f"{p}_round", "current consensus round (view)", registry=r)
        self.view_changes = Counter(f"{p}_view_changes", "rounds started after round 0",
                                    registry=r)
        self.commit_latency = Histogram(
            f"{p}_commit_latency_seconds",
            "from admission of a transaction to this replica to its commit",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.block_time = Histogram(f"{p}_block_seconds", "from entering a height to its commit",
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.txs_committed = Counter(f"{p}_txs_committed", "transactions committed", registry=r)
        self.mempool_size = Gauge(f"{p}_mempool_size", "pending transactions", registry=r)
        self.verify_seconds = Histogram(
            f"{p}_signature_verify_seconds", "time to check a batch of signatures",
            buckets=_VERIFY_BUCKETS, registry=r)
        self.rejected = Counter(f"{p}_rejected", "refused inputs by reason", ["reason"],
                                registry=r)
        self.equivocations = Counter(f"{p}_equivocations", "conflicting messages seen",
                                     registry=r)
        self.peer_messages = Counter(f"{p}_peer_messages", "gossip messages received, by kind",
                                     ["kind"], registry=r)
        self.peer_bytes = Counter(f"{p}_peer_bytes", "gossip bytes received, by message kind",
                                  ["kind"], registry=r)
        self.peers_connected = Gauge(f"{p}_peers_connected", "peers with an open link",
                                     registry=r)
        self.registry.register(ProcessCollector("dualchain_process"))

    def watch_verifier(self, verifier: SignatureVerifier) -> None:
        self.registry.register(VerifierCollector("dualchain_chain", verifier))

    def serve(self, port: int) -> None:
        """Starts the HTTP endpoint (a daemon thread); port 0 means no endpoint."""
        if port:
            start_http_server(port, registry=self.registry)


_INTERVAL_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 40.0)


class PowMetrics:
    """What a proof-of-work daemon adds (prefix ``dualchain_pow_``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "dualchain_pow"
        r = registry
        self.final_height = Gauge(f"{p}_final_height", "highest final block", registry=r)
        self.difficulty = Gauge(f"{p}_difficulty", "expected hashes for the next block",
                                registry=r)
        self.reorgs = Counter(f"{p}_reorgs", "head changes that disconnected blocks", registry=r)
        self.reorg_depth = Histogram(f"{p}_reorg_depth_blocks", "blocks disconnected by a reorg",
                                     buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=r)
        self.max_reorg_depth = Gauge(f"{p}_max_reorg_depth", "deepest reorg so far (blocks)",
                                     registry=r)
        self.refused_reorgs = Counter(f"{p}_refused_reorgs",
                                      "reorgs refused because they would revert final blocks",
                                      registry=r)
        self.orphans = Counter(f"{p}_orphans_parked",
                               "blocks parked because their parent was unknown", registry=r)
        self.accept_seconds = Histogram(
            f"{p}_block_accept_seconds", "time to accept a new block: waiting for the previous "
            "one (stage=wait) and checking, storing and connecting it (stage=process)",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.compact_misses = Counter(f"{p}_compact_misses",
                                      "announced blocks fetched whole (a transaction was missing)",
                                      registry=r)
        self.side_blocks = Counter(f"{p}_side_blocks",
                                   "valid blocks stored on a branch with less work", registry=r)
        self.block_interval = Histogram(f"{p}_block_interval_seconds",
                                        "timestamp difference of connected blocks to parent",
                                        buckets=_INTERVAL_BUCKETS, registry=r)
        self.hashrate = Gauge(f"{p}_miner_hashrate", "hash rate reported by a miner (H/s)",
                              ["miner"], registry=r)
        self.mined = Counter(f"{p}_solutions", "blocks submitted by miners, by outcome",
                             ["outcome"], registry=r)
