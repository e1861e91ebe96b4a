"""Fair aggregation (seed 002 eq. II.4): aggregation weights from contributions and sample counts.

Seed 002 §II-E replaces the plain average by

    w_g = sum_i p_i w^i,   p_i = theta_i / sum_{k=1}^{lambda n} theta_k        (II.4)

where theta_i is client i's contribution weight from Algorithm 4 (the cosine similarity of its
update to the temporary global update, computed by ``dualchain.learning.contribution``) and the
sum runs over the lambda*n high-contribution clients. Here the "gradients" w^i are our deltas (see
``aggregation``'s docstring), so the new model is ``global + mixing * sum_i c_i * delta_i``.

**Weightings** (``FAIR_WEIGHTINGS``):

- ``contribution``: ``p_i = theta_i / sum_k theta_k``, eq. II.4 as printed. The seed argues that
  theta already reflects data size and quality, so no sample count appears.
- ``contribution_samples``: ``p_i = theta_i n_i / sum_k theta_k n_k`` with n_i the samples the
  client trained on; §II-E motivates II.4 by unequal sample sizes, and this is the FedAvg weight
  scaled by contribution. It trusts the self-reported n_i (seed 004 warns that clients may
  exaggerate it), which is bounded (``aggregation.counted_samples``: at most 4 times the pool's
  low median), not verified.

A theta that is zero or negative (an update pointing away from the global one) gets weight 0 and
its client is listed in ``dropped``; theta must be finite. ``theta`` maps a client id to its
weight, or is a sequence of one weight per update in canonical order (as
``contribution.identify_contributions`` returns them), which tells apart two updates of one fast
client in the same window. A client missing from the mapping is an error: the caller passes the
updates that Algorithm 4's strategy kept, each with its weight.

**Staleness.** With a ``StalenessRule`` the coefficient is also multiplied by ``w(s_i)`` (seed 000
eq. 2) and updates beyond its maximum staleness are dropped. The normalisation stays the sum of the
kept contributions without ``w``, so a stale update is damped in absolute terms as in eq. 2 (with
``rule=None`` the coefficients are exactly II.4's and sum to ``mixing``).

**Determinism.** Same as ``aggregation``: its canonical sort and checks of the updates, each
coefficient computed in float64 (the normaliser with ``math.fsum``, exact and order-free) and
rounded once to float32, and its element-wise float32 accumulation in sorted order; shuffling the
inputs gives identical bytes on every IEEE-754 replica.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# One accumulation and one set of checks for both rules, so replicas get the same bytes by the
# same code.
from dualchain.learning.aggregation import (
    AggregateResult,
    StalenessRule,
    Update,
    apply_coefficients,
    canonical_order,
    check_global,
    check_staleness,
    counted_samples,
)

FAIR_WEIGHTINGS: tuple[str, ...] = ("contribution", "contribution_samples")

# The aggregation rules a node can be configured with: seed 000 eq. 2 or seed 002 eq. II.4.
AGGREGATION_KINDS: tuple[str, ...] = ("staleness", "fair")


Theta = Mapping[bytes, float] | Sequence[float]


def _thetas(updates: Sequence[Update], theta: Theta) -> list[float]:
    """One theta per update: by client id, or a sequence in canonical order (contribution's)."""
    if isinstance(theta, Mapping):
        out = []
        for u in updates:
            if u.client_id not in theta:
                raise ValueError(f"no contribution weight for client {u.client_id.hex()}")
            out.append(theta[u.client_id])
    else:
        if len(theta) != len(updates):
            raise ValueError(f"{len(theta)} contribution weights for {len(updates)} updates")
        out = list(theta)
    for u, t in zip(updates, out, strict=True):
        if not math.isfinite(t):
            raise ValueError(f"contribution weight of client {u.client_id.hex()} is not finite")
    return [float(t) for t in out]


def fair_coefficients(
    updates: Sequence[Update],
    theta: Theta,
    current_version: int,
    *,
    weighting: str = "contribution",
    rule: StalenessRule | None = None,
    mixing: float = 1.0,
) -> tuple[list[Update], list[float], list[bytes]]:
    """(kept updates in canonical order, their float64 coefficients, dropped client ids).

    ``updates`` must already be in ``aggregation.canonical_order``.
    """
    if weighting not in FAIR_WEIGHTINGS:
        known = ", ".join(FAIR_WEIGHTINGS)
        raise ValueError(f"unknown fair weighting {weighting!r}; known: {known}")
    if not (mixing > 0 and math.isfinite(mixing)):
        raise ValueError(f"mixing must be positive and finite, got {mixing}")
    kept: list[Update] = []
    raw: list[float] = []
    dropped: list[bytes] = []
    samples = counted_samples(updates)
    for u, t, n in zip(updates, _thetas(updates, theta), samples, strict=True):
        s = current_version - u.base_version
        check_staleness(s)
        if t <= 0.0 or (rule is not None and not rule.admits(s)):
            dropped.append(u.client_id)
            continue
        kept.append(u)
        raw.append(t * n if weighting == "contribution_samples" else t)
    total = math.fsum(raw)
    coefficients = []
    for u, r in zip(kept, raw, strict=True):
        damp = 1.0 if rule is None else rule.weight(current_version - u.base_version)
        coefficients.append(mixing * r * damp / total)
    return kept, coefficients, dropped


def aggregate_fair(
    global_params: np.ndarray,
    updates: Sequence[Update],
    current_version: int,
    theta: Theta,
    *,
    weighting: str = "contribution",
    rule: StalenessRule | None = None,
    mixing: float = 1.0,
) -> AggregateResult:
    """Seed 002 eq. II.4 on deltas (see the module docstring); nothing kept: global unchanged."""
    check_global(global_params)
    ordered = canonical_order(updates, global_params.size)
    kept, coefficients, dropped = fair_coefficients(
        ordered, theta, current_version, weighting=weighting, rule=rule, mixing=mixing
    )
    params, weights = apply_coefficients(global_params, kept, coefficients)
    return AggregateResult(params=params, weights=weights, dropped=tuple(dropped))
