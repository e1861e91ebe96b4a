"""Precision, recall and false-positive rate of per-update detection decisions.

Each update gets one decision (flagged or not) and has one truth (malicious or not). Counts add
up over rounds and runs; a rate whose denominator is zero is None (JSON null), never a made-up 0
or 1: a detector that flags nothing has no precision, a run with no attacker has no recall.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class DetectionCounts:
    tp: int = 0  # malicious and flagged
    fp: int = 0  # honest but flagged
    fn: int = 0  # malicious, missed
    tn: int = 0  # honest, passed

    @classmethod
    def from_decisions(cls, flagged: Iterable[bool], malicious: Iterable[bool]) -> DetectionCounts:
        """Counts from aligned per-update decisions and truths (equal lengths)."""
        flags, truths = list(flagged), list(malicious)
        if len(flags) != len(truths):
            raise ValueError(f"{len(flags)} decisions for {len(truths)} updates")
        tp = sum(f and t for f, t in zip(flags, truths, strict=True))
        fp = sum(f and not t for f, t in zip(flags, truths, strict=True))
        fn = sum(t and not f for f, t in zip(flags, truths, strict=True))
        return cls(tp, fp, fn, len(flags) - tp - fp - fn)

    @classmethod
    def from_ids(
        cls, flagged: Iterable[bytes], malicious: Iterable[bytes], updates: Iterable[bytes]
    ) -> DetectionCounts:
        """Counts for one round where each update is known by its client id."""
        ids = list(updates)
        flag_set, bad_set = set(flagged), set(malicious)
        if not flag_set <= set(ids):
            raise ValueError("a flagged id is not among the round's updates")
        return cls.from_decisions((i in flag_set for i in ids), (i in bad_set for i in ids))

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    @property
    def precision(self) -> float | None:
        flagged = self.tp + self.fp
        return self.tp / flagged if flagged else None

    @property
    def recall(self) -> float | None:
        bad = self.tp + self.fn
        return self.tp / bad if bad else None

    @property
    def false_positive_rate(self) -> float | None:
        honest = self.fp + self.tn
        return self.fp / honest if honest else None

    def as_dict(self) -> dict[str, float | int | None]:
        """The ``attacks`` experiment's per-update metrics and the counts behind them."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "false_positive_rate": self.false_positive_rate,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }
