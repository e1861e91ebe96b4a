"""Prometheus metrics of a client (FL device) process (prefix ``dualchain_client_``).

They are read off the JSON events the worker emits (``observe``), so the worker keeps one way of
reporting and the metrics always agree with the event lines on stdout.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from dualchain.chain.daemon.metrics import ProcessCollector

_TASK_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)


class ClientMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        p = "dualchain_client"
        self.tasks = Counter(f"{p}_tasks", "trained tasks by outcome (accepted, buffered, "
                             "dropped, refused:<code>)", ["outcome"], registry=r)
        self.task_seconds = Histogram(f"{p}_task_seconds",
                                      "from receiving a task to its outcome (fetch, train, "
                                      "upload)", buckets=_TASK_BUCKETS, registry=r)
        self.samples = Counter(f"{p}_samples_trained", "training samples processed", registry=r)
        self.loss = Gauge(f"{p}_loss", "mean training loss of the latest task", registry=r)
        self.version = Gauge(f"{p}_model_version", "global model version of the latest task",
                             registry=r)
        self.connected = Gauge(f"{p}_connected", "1 while the server node answers", registry=r)
        self.disconnections = Counter(f"{p}_disconnections", "times the node stopped answering "
                                      "(or an offline window began)", ["reason"], registry=r)
        self.flushes = Counter(f"{p}_flushes", "buffered runs uploaded, by outcome",
                               ["outcome"], registry=r)
        self.reports = Counter(f"{p}_reports", "STATE_REPORT transactions sent", registry=r)
        r.register(ProcessCollector("dualchain_process"))

    def observe(self, event: dict) -> None:
        """Counts one worker event (the ``event`` lines of ``client.main``)."""
        kind = event.get("event")
        if kind == "task":
            self.tasks.labels(str(event.get("outcome", ""))).inc()
            self.task_seconds.observe(float(event.get("seconds", 0.0)))
            self.samples.inc(int(event.get("samples", 0)))
            self.loss.set(float(event.get("loss", 0.0)))
            self.version.set(int(event.get("version", 0)))
        elif kind in ("registered", "reconnected"):
            self.connected.set(1)
        elif kind == "disconnected":
            self.connected.set(0)
            self.disconnections.labels(str(event.get("reason", ""))).inc()
        elif kind == "flush":
            self.flushes.labels(str(event.get("outcome", ""))).inc()
        elif kind == "report":
            self.reports.inc()

    def observing(self, emit: Callable[[dict], None]) -> Callable[[dict], None]:
        """``emit`` that also counts each event here first."""

        def both(event: dict) -> None:
            self.observe(event)
            emit(event)

        return both

    def serve(self, port: int) -> None:
        """Starts the HTTP endpoint (a daemon thread); port 0 means no endpoint."""
        if port:
            start_http_server(port, registry=self.registry)
