"""Aggregation rules over flat float32 vectors: staleness-weighted asynchronous (seed 000 eq. 2),
FedAsync-style staleness functions, FedAvg, and the admission checks on an update.

Numpy only (no torch): CTBC validators re-execute the aggregate from the signed updates and must
obtain the same bytes as the proposer.

**What an update carries: a delta.** Seed 000 eq. 2 is

    theta^{t+1} = theta^t - 1/|K_t| * sum_{i in K_t} 1/|v_l(i) - v_g| * eta_i * grad_i

where client i trained on version v_l(i) and v_g is the current version. Our clients run m_n SGD
steps rather than one gradient, so an update carries the client's whole local progress
``delta_i = params_after - params_of_base_version``: that is -eta_i times the sum of its gradients,
i.e. the term ``-eta_i * grad_i`` of eq. 2 generalised to several local steps (for one step it is
exactly that term). Deltas rather than models because the aggregator and every validator can apply
them to the current global model without fetching each client's base version, the norm bound of
the admission check is meaningful on a delta (not on a whole model), and the chain stores what the
paper says clients send (the "gradient").

**Async rule.** ``new = global + mixing * (1/|K|) * sum_i w(s_i) * delta_i`` with staleness
``s_i = current_version - base_version_i`` and K the updates kept (not beyond the maximum
staleness). The 1/|K| normalisation is eq. 2's: a stale update is damped in absolute terms, not
merely relative to the others (normalising by the sum of weights would undo the damping whenever
all updates are equally stale). Samples are not weighted in, as in eq. 2: a client that trained on
more batches already moved further. ``mixing = 1`` is eq. 2 as printed.

**Staleness weight ``eq2``.** Printed eq. 2 uses 1/|v_l - v_g|, which divides by zero for a fresh
update (s = 0). DESIGN step 5 fixes it as ``w(s) = 1/(1+s)``: weight 1 when fresh, 1/2 at s = 1,
1/3 at s = 2. This equals FedAsync's polynomial rule with a = 1.

**Several updates from one client.** A fast client may finish two tasks before the aggregator
fires; each is a separate update on the version it fetched and counts once in |K|. Whether to
accept that is the node's policy (rate limits), not the rule's. The very same update twice (same
client, base version and delta bytes) is refused as a replay.

**Determinism.** Updates are sorted by (client id, base version, SHA-256 of the delta), each
coefficient is computed in double precision and rounded once to float32, and the sum is
accumulated element-wise in float32 in that order with separate multiply and add ufuncs (no
reassociation, no BLAS), so every IEEE-754 replica produces the same bytes. The ``polynomial``
rule calls ``pow``; glibc's is correctly rounded, other libms could in principle differ in the last
double bit, which the rounding to float32 absorbs except in vanishingly rare cases.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dualchain.learning.plugins import PluginError, call, load_object

RULES: tuple[str, ...] = ("eq2", "constant", "polynomial", "hinge")


@dataclass(frozen=True)
class StalenessRule:
    """Staleness weighting ``w(s)``; updates with ``s > max_staleness`` are dropped.

    - ``eq2``: 1 / (1 + s)
    - ``constant``: 1
    - ``polynomial``: (1 + s) ** -a
    - ``hinge``: 1 if s <= b else 1 / (a * (s - b) + 1)
    """

    name: str = "eq2"
    a: float = 0.5
    b: int = 4
    max_staleness: int = 10

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"unknown staleness rule {self.name!r}; known: {', '.join(RULES)}")
        if self.name in ("polynomial", "hinge") and not (self.a > 0 and math.isfinite(self.a)):
            raise ValueError(f"staleness rule {self.name} needs a > 0, got {self.a}")
        if self.b < 0:
            raise ValueError(f"staleness rule hinge needs b >= 0, got {self.b}")
        if self.max_staleness < 0:
            raise ValueError(f"max_staleness must not be negative, got {self.max_staleness}")

    def admits(self, s: int) -> bool:
        check_staleness(s)
        return s <= self.max_staleness

    def weight(self, s: int) -> float:
        """w(s) in (0, 1], or 0.0 when ``s`` is beyond ``max_staleness``."""
        if not self.admits(s):
            return 0.0
        if self.name == "eq2":
            return 1.0 / (1 + s)
        if self.name == "constant":
            return 1.0
        if self.name == "polynomial":
            return float((1 + s) ** -self.a)
        return 1.0 if s <= self.b else 1.0 / (self.a * (s - self.b) + 1.0)


def check_staleness(s: int) -> None:
    if s < 0:
        raise ValueError(f"staleness {s} is negative: an update cannot be based on a future model")


@dataclass(frozen=True, eq=False)
class Update:
    """One client's contribution: its local progress on top of model version ``base_version``."""

    client_id: bytes
    base_version: int
    samples: int  # samples processed in training (FedAvg weight, contribution accounting)
    delta: np.ndarray  # float32 flat: params after local training - params of base_version


@dataclass(frozen=True, eq=False)
class AggregateResult:
    params: np.ndarray  # new global model, float32 flat
    weights: tuple[tuple[bytes, float], ...]  # (client id, float32 coefficient on its delta)
    dropped: tuple[bytes, ...]  # client ids left out (too stale)


# Machine codes of UpdateRejected, used as metric labels and in error statuses.
REJECT_SHAPE = "shape"
REJECT_NON_FINITE = "non_finite"
REJECT_NORM = "norm"


class UpdateRejected(ValueError):
    """An update fails admission; ``code`` is one of the REJECT_* constants."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def update_norm(delta: np.ndarray) -> float:
    """L2 norm in float64 via numpy's fixed pairwise summation (no BLAS: same on every replica)."""
    d = delta.astype(np.float64)
    return math.sqrt(float(np.sum(d * d)))


def check_update(params: np.ndarray, expected_size: int, max_norm: float) -> None:
    """Admission check of an update vector: 1-D float32 of the right size, finite, bounded norm."""
    if not isinstance(params, np.ndarray) or params.dtype != np.float32 or params.ndim != 1:
        raise UpdateRejected(REJECT_SHAPE, "update must be a 1-D float32 vector")
    if params.size != expected_size:
        raise UpdateRejected(
            REJECT_SHAPE, f"update has {params.size} values, the model has {expected_size}"
        )
    if not np.isfinite(params).all():
        bad = int(np.count_nonzero(~np.isfinite(params)))
        raise UpdateRejected(REJECT_NON_FINITE, f"{bad} values are NaN or infinite")
    norm = update_norm(params)
    if norm > max_norm:
        raise UpdateRejected(REJECT_NORM, f"L2 norm {norm:.6g} exceeds the bound {max_norm:.6g}")


def _delta_digest(u: Update) -> bytes:
    return hashlib.sha256(u.delta.astype("<f4", copy=False).tobytes()).digest()


def _sorted_updates(updates: Sequence[Update], size: int) -> list[Update]:
    """Updates checked and in canonical order: client id, base version, SHA-256 of the delta."""
    for u in updates:
        if (
            not isinstance(u.delta, np.ndarray)
            or u.delta.dtype != np.float32
            or u.delta.shape != (size,)
        ):
            raise ValueError(f"update of client {u.client_id.hex()} is not float32 of size {size}")
        if u.samples < 1:
            raise ValueError(f"update of client {u.client_id.hex()} has {u.samples} samples")
    keyed = sorted(
        (((u.client_id, u.base_version, _delta_digest(u)), u) for u in updates),
        key=lambda pair: pair[0],
    )
    for (prev, _), (cur, u) in itertools.pairwise(keyed):
        if prev == cur:
            raise ValueError(f"the same update of client {u.client_id.hex()} appears twice")
    return [u for _, u in keyed]


def canonical_order(updates: Sequence[Update], size: int) -> list[Update]:
    """The updates checked (float32 of ``size``, samples >= 1, no duplicate) in the order every
    rule uses: client id, base version, SHA-256 of the delta. For detectors and robust rules."""
    return _sorted_updates(updates, size)


def check_global(global_params: np.ndarray) -> None:
    if (
        not isinstance(global_params, np.ndarray)
        or global_params.dtype != np.float32
        or global_params.ndim != 1
    ):
        raise ValueError("global parameters must be a 1-D float32 vector")


def apply_coefficients(
    global_params: np.ndarray, kept: list[Update], coefficients: list[float]
) -> tuple[np.ndarray, tuple[tuple[bytes, float], ...]]:
    """``global + sum_i c_i delta_i``: each c_i rounded once to float32, accumulated element-wise
    in float32 in the given (canonical) order; returns the model and (client id, c_i) pairs."""
    acc = global_params.copy()
    tmp = np.empty_like(acc)
    weights = []
    for u, c in zip(kept, coefficients, strict=True):
        c32 = np.float32(c)
        np.multiply(u.delta, c32, out=tmp)
        np.add(acc, tmp, out=acc)
        weights.append((u.client_id, float(c32)))
    return acc, tuple(weights)


def aggregate_async(
    global_params: np.ndarray,
    updates: Sequence[Update],
    current_version: int,
    rule: StalenessRule,
    mixing: float = 1.0,
) -> AggregateResult:
    """Seed 000 eq. 2 (see the module docstring); with nothing kept the global is unchanged."""
    check_global(global_params)
    if not (mixing > 0 and math.isfinite(mixing)):
        raise ValueError(f"mixing must be positive and finite, got {mixing}")
    kept: list[Update] = []
    dropped: list[bytes] = []
    for u in _sorted_updates(updates, global_params.size):
        if rule.admits(current_version - u.base_version):
            kept.append(u)
        else:
            dropped.append(u.client_id)
    coefficients = [
        mixing * rule.weight(current_version - u.base_version) / len(kept) for u in kept
    ]
    params, weights = apply_coefficients(global_params, kept, coefficients)
    return AggregateResult(params=params, weights=weights, dropped=tuple(dropped))


SAMPLES_CAP = 4  # an update's declared samples weigh up to this times the pool's low median


def counted_samples(updates: Sequence[Update]) -> list[int]:
    """Each update's samples as a weight: what it declares, at most ``SAMPLES_CAP`` times the
    low median of ``updates`` (a client signs its own count; a claim of a billion samples must
    not make its update the whole model). The low median (the smaller middle value) so that in
    a pool of two the liar is capped by the other. Counts within the cap are unchanged."""
    if not updates:
        return []
    counts = sorted(u.samples for u in updates)
    cap = SAMPLES_CAP * counts[(len(counts) - 1) // 2]
    return [min(u.samples, cap) for u in updates]


def fedavg(
    global_params: np.ndarray, updates: Sequence[Update], current_version: int
) -> AggregateResult:
    """Synchronous FedAvg: ``global + sum_i n_i * delta_i / sum_i n_i``, n_i capped at
    ``SAMPLES_CAP`` times the round's low median (``counted_samples``).

    Only updates trained on ``current_version`` take part; any other is dropped (a synchronous
    round has no stale updates). With equal sample counts this is the plain average of the
    clients' models.
    """
    check_global(global_params)
    kept: list[Update] = []
    dropped: list[bytes] = []
    for u in _sorted_updates(updates, global_params.size):
        check_staleness(current_version - u.base_version)
        if u.base_version == current_version:
            kept.append(u)
        else:
            dropped.append(u.client_id)
    counted = counted_samples(kept)
    total = sum(counted)
    params, weights = apply_coefficients(global_params, kept, [n / total for n in counted])
    return AggregateResult(params=params, weights=weights, dropped=tuple(dropped))


def plugin_aggregate(
    spec: str,
    rule: Callable[..., Any],
    global_params: np.ndarray,
    updates: Sequence[Update],
    current_version: int,
) -> AggregateResult:
    """A user's aggregation rule (``spec``, docs/plugins.md) over the updates in canonical order.

    ``rule(global_params, updates, current_version)`` returns the new global model (an array of
    the global's size; made float32 here) or an ``AggregateResult``. Every committee member runs
    it and compares the SHA-256 of the result, so it must be a pure function of its inputs. The
    weights recorded with a bare array are the updates' sample shares (informational).
    """
    check_global(global_params)
    ordered = tuple(_sorted_updates(updates, global_params.size))
    out = call(spec, "aggregator", rule, global_params.copy(), ordered, current_version)
    if isinstance(out, AggregateResult):
        raw, weights, dropped = out.params, out.weights, out.dropped
    else:
        total = sum(u.samples for u in ordered) or 1
        raw, weights, dropped = out, tuple((u.client_id, u.samples / total) for u in ordered), ()
    try:
        params = np.asarray(raw)
    except Exception:
        params = None
    if (params is None or params.shape != global_params.shape
            or not np.issubdtype(params.dtype, np.number)):
        shape = getattr(params, "shape", type(raw).__name__)
        raise PluginError(f"aggregator {spec!r} returned {shape}, expected an array of shape "
                          f"{global_params.shape}")
    params = params.astype(np.float32)
    if not np.isfinite(params).all():
        raise PluginError(f"aggregator {spec!r} returned NaN or infinite parameters")
    return AggregateResult(params=params, weights=tuple(weights), dropped=tuple(dropped))


def load_aggregator(spec: str) -> Callable[..., Any]:
    """The rule ``spec`` names, tried once on a two-update example so that a rule that cannot
    work fails at start-up with its reason (``PluginError``), not at the first commit."""
    rule = load_object(spec, "aggregator")
    probe = np.zeros(4, dtype=np.float32)
    examples = [Update(bytes([i]) * 32, 0, 1 + i, np.full(4, 0.5 * (i + 1), np.float32))
                for i in range(2)]
    plugin_aggregate(spec, rule, probe, examples, 1)
    return rule
