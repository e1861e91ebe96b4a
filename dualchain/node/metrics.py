"""Prometheus metrics of a server node (prefix ``dualchain_node_``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from dualchain.chain.daemon.metrics import ProcessCollector


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "dualchain_node"
        self.version = Gauge(f"{p}_model_version", "newest committed model version", registry=r)
        self.accuracy = Gauge(f"{p}_accuracy", "test accuracy of the newest version", registry=r)
        self.clients = Gauge(f"{p}_clients", "clients registered on CMBC (final)", registry=r)
        self.updates_accepted = Counter(f"{p}_updates_accepted", "updates that passed the checks",
                                        registry=r)
        self.updates_refused = Counter(f"{p}_updates_refused", "updates refused, by reason",
                                       ["reason"], registry=r)
        self.updates_included = Counter(f"{p}_updates_included",
                                        "updates included in committed versions", registry=r)
        self.updates_dropped = Counter(f"{p}_updates_dropped",
                                       "pooled updates dropped as too stale", registry=r)
        r.register(ProcessCollector("dualchain_process"))

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)

    def accepted_count(self) -> float:
        return self.updates_accepted._value.get()

    def refused_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for metric in self.updates_refused.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["reason"]] = int(sample.value)
        return out
