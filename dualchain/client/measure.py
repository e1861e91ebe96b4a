"""What the client measures: the eq. 8 inputs of its state reports and its run totals."""

from __future__ import annotations

from dataclasses import dataclass

from dualchain.apps.cmbc.payloads import StateReport

_U32 = 2**32 - 1


@dataclass
class Meter:
    """The eq. 8 inputs measured since the last state report."""

    rtt_ms: int = 0
    completion_ms: int = 0
    speed: float = 0.0  # samples per second of wall training time
    failures: int = 0
    disconnected_s: float = 0.0
    tasks: int = 0  # trained since the last report
    last_task: int = 0
    last_samples: int = 0  # of the task the completion time measures

    def report(self) -> StateReport:
        return StateReport(
            task=self.last_task,
            rtt_ms=min(self.rtt_ms, _U32),
            completion_ms=self.completion_ms,
            speed_milli=round(self.speed * 1000),
            failures=min(self.failures, _U32),
            disconnected_ms=round(self.disconnected_s * 1000),
            samples=self.last_samples,
        )

    def reported(self) -> None:
        self.failures = 0
        self.disconnected_s = 0.0
        self.tasks = 0


@dataclass
class Totals:
    tasks: int = 0  # trained (any outcome)
    accepted: int = 0
    refused: int = 0
    dropped: int = 0
    buffered: int = 0
    flushes: int = 0
    clipped: int = 0
    failures: int = 0
    reports: int = 0
    models_fetched: int = 0
    disconnections: int = 0
    disconnected_s: float = 0.0
    samples: int = 0
    uploaded_bytes: int = 0
