"""The CTBC genesis's optional ``defense`` section: what every committee member re-runs on a
commit's updates before the aggregate (``learning.screening``, docs/threat-model.md).

Plain values only: the chain layer does not import the detectors; ``ctbc.fl.fl_rules`` builds
them from these values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class DefenseParamsError(ValueError):
    """A value of the defense section is out of range (the genesis wraps it)."""


@dataclass(frozen=True)
class DefenseParams:
    """What every committee member re-runs on a commit's updates before the aggregate
    (``learning.screening``; docs/threat-model.md). Optional, CTBC with ``fl`` only; absent:
    no defense. ``watermark_length`` 0 turns the PN watermark off; ``krum_m`` 0 means K - f."""

    rule: str = "none"  # none, cluster, median, trimmed_mean, krum, multi_krum
    watermark_length: int = 0
    watermark_snr_db: float = 6.0
    watermark_threshold: float = 4.5
    watermark_window: int = 2
    cluster_metric: str = "cosine"
    cluster_eps: float = 0.8
    cluster_min_samples: int = 3
    cluster_anchor: str = "median"
    cluster_max_norm_ratio: float = 3.0  # longer than this times the pool's median: discarded
    trim_beta: float = 0.2
    krum_f: int = 1
    krum_m: int = 0
    exclude_after: int = 2  # offences after which nodes refuse a client's updates (0: never)
    # A discarded update counts as an offence only this stale or fresher: a slow honest
    # client's stale update points where the model was, not where it is (clients.py).
    offence_max_staleness: int = 2


DEFENSE_RULES = ("none", "cluster", "median", "trimmed_mean", "krum", "multi_krum")


def check_defense(d: DefenseParams) -> None:
    """Raises DefenseParamsError (one line, the field first) for a value out of range."""
    if d.rule not in DEFENSE_RULES:
        known = ", ".join(DEFENSE_RULES)
        raise DefenseParamsError(f"defense.rule: {d.rule!r} is not one of {known}")
    for name in ("watermark_length", "watermark_window", "cluster_min_samples", "krum_f",
                 "krum_m", "exclude_after", "offence_max_staleness"):
        value = getattr(d, name)
        if type(value) is not int or not 0 <= value <= 1 << 20:
            raise DefenseParamsError(f"defense.{name}: must be an integer in [0, 2^20]")
    if 0 < d.watermark_length < 64:
        raise DefenseParamsError("defense.watermark_length: 0 (off) or at least 64")
    if d.cluster_metric not in ("cosine", "euclidean"):
        raise DefenseParamsError("defense.cluster_metric: cosine or euclidean")
    if d.cluster_anchor not in ("mean", "median"):
        raise DefenseParamsError("defense.cluster_anchor: mean or median")
    for name in ("watermark_threshold", "cluster_eps"):
        if not math.isfinite(getattr(d, name)) or getattr(d, name) <= 0:
            raise DefenseParamsError(f"defense.{name}: must be a positive finite number")
    if not (math.isfinite(d.watermark_snr_db) and -20 <= d.watermark_snr_db <= 60):
        raise DefenseParamsError("defense.watermark_snr_db: must be within [-20, 60]")
    if not (math.isfinite(d.cluster_max_norm_ratio) and 0 <= d.cluster_max_norm_ratio <= 1e6):
        raise DefenseParamsError("defense.cluster_max_norm_ratio: must be in [0, 1e6] (0: off)")
    if not (math.isfinite(d.trim_beta) and 0 <= d.trim_beta < 0.5):
        raise DefenseParamsError("defense.trim_beta: must be in [0, 0.5)")
