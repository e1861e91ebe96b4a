"""Screening an update pool before it is aggregated: the configured defense, on the real path.

The aggregating node and every committee replica call ``screen`` on the same inputs (the pool's
updates, each sender's watermark seed, the defense fixed in the genesis) and reach the same
decision, so a commit names its discard set and a replica refuses one that does not reproduce.

Steps, in order:

1. **PN watermark** (seed 004 Algorithm 2; ``watermark``), when the defense has one: every
   update must carry its sender's own mark at its base version (``unmarked`` otherwise: an
   all-zero free rider, a client that skipped the protocol), and must not carry another pool
   member's mark at its base version or the ``watermark_window`` versions before (``copy``: a
   lazy client's upload, perhaps relabelled onto a newer version). The other clients are the
   senders in the pool: a copy is caught when its source also sent an update to this pool, as
   every active client does each round.
2. **The rule** on what is left:
   - ``none``: nothing more;
   - ``cluster`` (seed 002 Algorithm 4, ``contribution``): updates outside the anchor's DBSCAN
     cluster are discarded (``low_contribution``); the caller aggregates the rest with the
     chain's usual rule;
   - ``median`` / ``trimmed_mean``: the coordinate-wise rule makes the new model
     (``robust``), no update is discarded;
   - ``krum`` / ``multi_krum``: the updates not selected are discarded (``not_selected``), the
     new model is the mean of the selected ones. With fewer than ``2f + 3`` updates Krum cannot
     score; the pool is then kept whole and aggregated with the usual rule (every replica does
     the same).

Robust rules ignore staleness weights (they take the admissible updates as one round's).
Each update is named by a unique key (its digest). The clustering sees one point per client,
its newest update (fedasync pools may hold several of a fast client's): otherwise one client's
three updates make a dense group of their own and can hold the anchor. Its other updates share
that verdict. The watermark and the robust rules judge every update.

**Watermark seeds.** A client's PN seed is ``SHA-256(tag || public key)`` (``seed_for_key``): it
is fixed by the key the client registers on CMBC, so it is on chain with the registration, and
a CTBC replica (which cannot read CMBC deterministically) derives it from the key every signed
update carries. Publishing the seed this way gives a copier no more than the paper's registered
seeds do (they are public too).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dualchain.learning.aggregation import Update, canonical_order
from dualchain.learning.contribution import ROBUST_PARAMS, ClusterParams, identify_contributions
from dualchain.learning.robust import RobustRule, robust_aggregate
from dualchain.learning.watermark import WatermarkParams, carries_own_mark, detect_copies

DEFENSE_RULES: tuple[str, ...] = ("none", "cluster", "median", "trimmed_mean", "krum",
                                  "multi_krum")
REASON_COPY = "copy"
REASON_UNMARKED = "unmarked"
REASON_LOW = "low_contribution"
REASON_NOT_SELECTED = "not_selected"
REASONS: tuple[str, ...] = (REASON_COPY, REASON_UNMARKED, REASON_LOW, REASON_NOT_SELECTED)
_SEED_TAG = b"dualchain/pn-seed/v1"


def seed_for_key(public_key: bytes) -> bytes:
    """A client's PN watermark seed: fixed by its registered key (see the module docstring)."""
    return hashlib.sha256(_SEED_TAG + public_key).digest()


@dataclass(frozen=True)
class Defense:
    """What a pool goes through before aggregation (from the genesis ``defense`` section)."""

    rule: str = "none"
    watermark: WatermarkParams | None = None
    watermark_window: int = 2  # older base versions a copy's source may have been made on
    cluster: ClusterParams = ROBUST_PARAMS
    robust: RobustRule = field(default_factory=RobustRule)  # its name follows ``rule``

    def __post_init__(self) -> None:
        if self.rule not in DEFENSE_RULES:
            raise ValueError(f"unknown defense {self.rule!r}; known: {', '.join(DEFENSE_RULES)}")
        if self.watermark_window < 0:
            raise ValueError(f"watermark_window must be >= 0, got {self.watermark_window}")
        if self.cluster.strategy != "discard":
            raise ValueError("the cluster defense discards (strategy 'discard')")

    @property
    def active(self) -> bool:
        return self.rule != "none" or self.watermark is not None


@dataclass(frozen=True, eq=False)
class Candidate:
    """One pooled update: ``key`` unique in the pool (the signed update's digest)."""

    key: bytes
    pn_seed: bytes
    update: Update


@dataclass(frozen=True, eq=False)
class Screening:
    kept: tuple[Candidate, ...]  # in key order
    discarded: tuple[tuple[bytes, str], ...]  # (key, reason), in key order
    params: np.ndarray | None  # the new model when a robust rule made it; None: caller's rule
    selected_weight: float = 0.0  # Krum family: the weight of each selected update (1/m)


def _watermark_reason(c: Candidate, seeds: dict[bytes, bytes], defense: Defense) -> str | None:
    params = defense.watermark
    assert params is not None
    u = c.update
    if not carries_own_mark(u.delta, c.pn_seed, u.base_version, params):
        return REASON_UNMARKED
    others = {cid: s for cid, s in seeds.items() if cid != u.client_id}
    if not others:
        return None
    for version in range(u.base_version, max(-1, u.base_version - defense.watermark_window - 1),
                         -1):
        if detect_copies(u.delta, c.pn_seed, others, version, params):
            return REASON_COPY
    return None


def newest_per_client(entries: Iterable[tuple[bytes, bytes, int]]) -> dict[bytes, bytes]:
    """From (key, client id, base version) per update: client id -> the key of its newest
    update (highest base version, then the smallest key), the one that stands for the client."""
    newest: dict[bytes, tuple[int, bytes]] = {}
    for key, client, base_version in entries:
        best = newest.get(client)
        if best is None or (base_version, best[1]) > (best[0], key):
            newest[client] = (base_version, key)
    return {client: key for client, (_, key) in newest.items()}


def screen(candidates: Sequence[Candidate], defense: Defense, base: np.ndarray) -> Screening:
    """The defense on ``candidates`` (see the module docstring); ``base``: the global model."""
    ordered = sorted(candidates, key=lambda c: c.key)
    if len({c.key for c in ordered}) != len(ordered):
        raise ValueError("two pooled updates have the same key")
    discarded: dict[bytes, str] = {}
    if defense.watermark is not None:
        seeds = {c.update.client_id: c.pn_seed for c in ordered}
        for c in ordered:
            reason = _watermark_reason(c, seeds, defense)
            if reason is not None:
                discarded[c.key] = reason
    left = [c for c in ordered if c.key not in discarded]
    params: np.ndarray | None = None
    weight = 0.0
    # Detectors see each update under its key, so a client's two updates stay apart.
    keyed = [Update(c.key, c.update.base_version, c.update.samples, c.update.delta)
             for c in left]
    if left and defense.rule == "cluster":
        canonical_order(keyed, base.size)  # the same checks as the aggregation's
        newest = newest_per_client((c.key, c.update.client_id, c.update.base_version)
                                   for c in left)
        stands = set(newest.values())
        result = identify_contributions([k for k in keyed if k.client_id in stands],
                                        defense.cluster)
        low = set(result.discarded_ids)
        discarded.update((c.key, REASON_LOW) for c in left
                         if newest[c.update.client_id] in low)
    elif left and defense.rule in ("median", "trimmed_mean"):
        rule = RobustRule(defense.rule, beta=defense.robust.beta)
        params = robust_aggregate(base, keyed, rule).params
    elif left and defense.rule in ("krum", "multi_krum"):
        f = defense.robust.f
        if len(keyed) >= 2 * f + 3:
            m = defense.robust.m if defense.rule == "multi_krum" else None
            m = min(m, len(keyed)) if m is not None else None
            rule = RobustRule(defense.rule, f=f, m=m)
            result = robust_aggregate(base, keyed, rule)
            discarded.update((k, REASON_NOT_SELECTED) for k in result.rejected)
            params = result.params
            weight = 1.0 / len(result.selected)
    kept = tuple(c for c in ordered if c.key not in discarded)
    return Screening(kept=kept, discarded=tuple(sorted(discarded.items())), params=params,
                     selected_weight=weight)
