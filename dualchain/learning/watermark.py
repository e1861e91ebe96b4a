"""Pseudo-noise (PN) watermarks on updates, to catch lazy clients (seed 004 §III-C, Algorithm 2).

A lazy client skips training and uploads a copy of an update it has seen, perhaps with noise added
to hide it. Every client therefore adds its own ±1 pseudo-noise sequence ``S_i`` of amplitude
``alpha`` to its update before signing (Algorithm 2 line 4, ``w_hat_i = w_i + alpha S_i``), and
registers the seed of ``S_i`` on chain. A verifier correlates a received update with the other
clients' sequences (line 5, ``C_ij = S_i * w_hat_j``); a peak above the threshold ``lambda`` says
the update carries client i's watermark, i.e. it is a copy of i's work (lines 7-9).

**The sequence.** ``S = 1 - 2 b`` for the bits ``b`` of SHAKE-256 (FIPS 202) over a domain tag,
the registered seed and the update's base version: an extendable-output hash, so a replica in any
language obtains the same bits with one call, and numpy's generator streams (which numpy may change
between versions) play no part. The base version is hashed in so a client's sequence changes every
version: with one fixed ``S_i`` the watermark would add up coherently in the global model, version
after version (Algorithm 2 also writes ``S_i^t``, one per round).

**Where it goes.** ``length`` coordinates chosen by a keyed index set (the positions of the
``length`` smallest 32-bit keys from a second SHAKE-256 stream, ties to the lower position), or
every coordinate when ``length`` covers the model. Seed 004 writes the first 25,400 values of a 2^15
sequence onto its parameters; a keyed set spreads the mark over every layer (the first coordinates
are the first convolution alone), a copier cannot know which positions to scrub, and each marked
coordinate sees the update's average power, so an SNR stated against the whole update holds on
the marked positions too.

**Amplitude from an SNR.** Seed 004 §IV-D states the watermark's strength as the SNR, power of the
update over power of the sequence: ``alpha = sqrt(P / 10^(snr_db / 10))`` with ``P`` the mean
square of the update (an all-zero update gets no mark). 9 dB puts a mark of a third of the update's
RMS on each marked coordinate, 3 dB one of seven tenths.

**The test.** For one candidate sequence ``S`` (indices ``I``, ``L = |I|``) and received ``w``:
``ncc = <S, w_I> / (||S|| ||w_I||)`` (normalised cross-correlation, ``||S|| = sqrt(L)``) and the
score ``z = sqrt(L) ncc = <S, w_I> / ||w_I||``. If ``w`` does not depend on ``S`` (random signs,
any ``w``), ``<S, w_I>`` is a Rademacher sum of variance ``||w_I||^2``: ``z`` has variance 1 and
Hoeffding bounds ``P(z >= lambda) <= exp(-lambda^2 / 2)`` whatever the update's distribution.
A copy carries ``alpha S`` on top: ``E[z] ~ sqrt(L) a / sqrt(1 + a^2 + h + a_own^2)`` with
``a^2 = 10^(-snr/10)``, ``h`` the copier's hiding-noise power relative to the update, and ``a_own``
the copier's own mark where it overlaps. So the threshold fixes the false-positive rate and the
length buys detection. Before the other sequences are tested the sender's own mark is projected
out (it is known), and each client's sequence is tested on its own ("peak detection"): Algorithm 2
line 6 sums ``C_ij`` over all i, which adds N - 2 noise terms to the one peak and lowers its score
by sqrt(N - 1).

**Chosen defaults (``WatermarkParams``).** ``threshold = 4.5``: the Hoeffding bound gives a
per-pair false-positive rate of 4.0e-5, so an update tested against 19 other clients over 5
versions of a staleness window is wrongly flagged with probability at most 0.4% (target: at most
1%). ``length = 4096``: at 9 dB with hiding noise as strong as the update itself (h = 1) the
expected score is about 15 (detection Phi(15 - 4.5) ~ 1); the length that gives seed 004's 0.931
at 9 dB is about 600-650, and 4096 still detects at 0.93 under noise up to about 13 times the
update's power (a copy that is mostly noise). A short mark also hurts the model less: at a given
SNR the injected power scales with L / n (11% of the digits model's 38,282 coordinates, 0.25% of
the MNIST CNN's). ``snr_db = 6``: seed 004 Fig. 4.

Measured with ``detection_table`` on 10 IID digits clients (5 SGD steps each from a model
pre-trained 30 steps), copies hidden under noise of h times the update's power, 9 / 6 / 3 dB:

- L = 4096, h = 1: detection 1.000 / 1.000 / 1.000 (500 copies each), false positives 0 / 5000;
- L = 4096, h = 4 and h = 8: 1.000 / 1.000 / 1.000 (300 copies), false positives 0 / 3000;
- L = 660, h = 1: 0.960 / 1.000 / 1.000, 0 / 3000 (seed 004 Table I: 0.931 / 0.989 / 0.999);
- L = 512, h = 1: 0.837 / 1.000 / 1.000 (the formula above: 0.84 at 9 dB); L = 256: 0.347 /
  0.813 / 0.983.

**Determinism.** Sequences are bit-identical everywhere (SHAKE-256). Scores are float64 sums in
numpy's fixed pairwise order (no BLAS), as in ``aggregation``, and one correctly rounded sqrt, so
every replica makes the same decision on the same update.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_SIGN_TAG = b"dualchain/pn-watermark/v1/sign"
_INDEX_TAG = b"dualchain/pn-watermark/v1/index"
MIN_LENGTH = 64
MIN_SEED_BYTES = 16


@dataclass(frozen=True)
class WatermarkParams:
    """Length of the PN sequence, its strength as an SNR in dB, and the detection threshold.

    ``threshold`` is lambda on the score ``z = sqrt(L) * ncc`` (standard deviations of the
    correlation of an unmarked update); see the module docstring for the chosen values.
    """

    length: int = 4096
    snr_db: float = 6.0
    threshold: float = 4.5

    def __post_init__(self) -> None:
        if isinstance(self.length, bool) or not isinstance(self.length, int):
            raise ValueError(f"watermark length must be an integer, got {self.length!r}")
        if self.length < MIN_LENGTH:
            raise ValueError(f"watermark length must be at least {MIN_LENGTH}, got {self.length}")
        if not math.isfinite(self.snr_db) or not -20.0 <= self.snr_db <= 60.0:
            raise ValueError(f"watermark snr_db must be within [-20, 60], got {self.snr_db}")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"watermark threshold must be positive, got {self.threshold}")


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, bytes) or len(seed) < MIN_SEED_BYTES:
        raise ValueError(f"a watermark seed must be at least {MIN_SEED_BYTES} bytes")


def _check_vector(update: np.ndarray) -> None:
    if not isinstance(update, np.ndarray) or update.ndim != 1 or update.size == 0:
        raise ValueError("an update must be a non-empty 1-D vector")
    if update.dtype not in (np.float32, np.float64):
        raise ValueError(f"an update must be float32 or float64, got {update.dtype}")
    if not np.isfinite(update).all():
        raise ValueError("an update must be finite (no NaN or infinity)")


def _stream(tag: bytes, seed: bytes, version: int, nbytes: int) -> bytes:
    if version < 0:
        raise ValueError(f"version must not be negative, got {version}")
    prefix = tag + len(seed).to_bytes(2, "big") + seed + version.to_bytes(8, "big")
    return hashlib.shake_256(prefix).digest(nbytes)


# Sequences are cached: a verifier tests every other client's sequence on every upload. The
# budget bounds memory whatever the length (16 bytes per marked coordinate).
_CACHE_BYTES = 64 << 20
_cache: OrderedDict[tuple[bytes, int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
_cache_lock = threading.Lock()


def pn_sequence(seed: bytes, version: int, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, signs) of a client's sequence for ``version`` on a model of ``size`` values.

    ``indices``: int64, ascending, ``min(length, size)`` distinct positions; ``signs``: float64
    ±1 of the same length. Both read-only (shared from a cache).
    """
    _check_seed(seed)
    if size < 1 or length < 1:
        raise ValueError(f"size and length must be positive, got {size}, {length}")
    key = (seed, version, size, length)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    value = _make_sequence(seed, version, size, min(length, size))
    with _cache_lock:
        _cache[key] = value
        used = sum(i.nbytes + s.nbytes for i, s in _cache.values())
        while used > _CACHE_BYTES and len(_cache) > 1:
            _, (i, s) = _cache.popitem(last=False)
            used -= i.nbytes + s.nbytes
    return value


def _make_sequence(
    seed: bytes, version: int, size: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    if count == size:
        indices = np.arange(size, dtype=np.int64)
    else:
        keys = np.frombuffer(_stream(_INDEX_TAG, seed, version, 4 * size), dtype=">u4")
        # Key in the high half, position in the low half: distinct values, so the ``count``
        # smallest are one well-defined set, and argpartition (linear time) finds it.
        unique = (keys.astype(np.uint64) << np.uint64(32)) | np.arange(size, dtype=np.uint64)
        indices = np.sort(np.argpartition(unique, count - 1)[:count]).astype(np.int64)
    bits = np.unpackbits(
        np.frombuffer(_stream(_SIGN_TAG, seed, version, (count + 7) // 8), np.uint8)
    )
    signs = 1.0 - 2.0 * bits[:count].astype(np.float64)
    indices.setflags(write=False)
    signs.setflags(write=False)
    return indices, signs


def amplitude(update: np.ndarray, snr_db: float) -> float:
    """alpha with ``mean(update^2) / alpha^2 = 10^(snr_db / 10)`` (seed 004 §IV-D's SNR)."""
    _check_vector(update)
    u = update.astype(np.float64)
    power = float(np.sum(u * u)) / u.size
    return math.sqrt(power / 10.0 ** (snr_db / 10.0))


def embed(update: np.ndarray, seed: bytes, version: int, params: WatermarkParams) -> np.ndarray:
    """``update + alpha S`` on the sequence's positions (Algorithm 2 line 4), as float32."""
    _check_vector(update)
    alpha = amplitude(update, params.snr_db)
    indices, signs = pn_sequence(seed, version, update.size, params.length)
    out = update.astype(np.float64)
    out[indices] += alpha * signs
    return out.astype(np.float32)


def score(update: np.ndarray, seed: bytes, version: int, length: int) -> float:
    """``z = <S, w_I> / ||w_I||``: about N(0, 1) without the mark, ``sqrt(L) * ncc`` always."""
    _check_vector(update)
    indices, signs = pn_sequence(seed, version, update.size, length)
    w = update[indices].astype(np.float64)
    norm = math.sqrt(float(np.sum(w * w)))
    if norm == 0.0:
        return 0.0
    return float(np.sum(w * signs)) / norm


def correlate(update: np.ndarray, seed: bytes, version: int, length: int) -> float:
    """Normalised cross-correlation ``<S, w_I> / (||S|| ||w_I||)``, in [-1, 1] (Alg. 2 line 5)."""
    z = score(update, seed, version, length)
    return z / math.sqrt(min(length, update.size))


def strip(update: np.ndarray, seed: bytes, version: int, length: int) -> np.ndarray:
    """``update`` (float64) less its projection on the sequence: the sender's own mark removed."""
    _check_vector(update)
    indices, signs = pn_sequence(seed, version, update.size, length)
    out = update.astype(np.float64)
    coefficient = float(np.sum(out[indices] * signs)) / len(indices)
    out[indices] -= coefficient * signs
    return out


def carries_own_mark(
    update: np.ndarray, seed: bytes, version: int, params: WatermarkParams
) -> bool:
    """Whether ``update`` carries its sender's own mark (the protocol says every upload does)."""
    return score(update, seed, version, params.length) >= params.threshold


def copy_scores(
    received: np.ndarray,
    sender_seed: bytes,
    others: Mapping[bytes, bytes],
    version: int,
    params: WatermarkParams,
) -> dict[bytes, float]:
    """Score of every other client's sequence on ``received``, the sender's own mark removed.

    ``others`` maps client id to registered seed; the sender itself should not be in it (if its
    seed is, that entry is skipped). Evidence for a copy: the score beside lambda.
    """
    _check_seed(sender_seed)
    cleaned = strip(received, sender_seed, version, params.length)
    return {
        cid: score(cleaned, seed, version, params.length)
        for cid, seed in sorted(others.items())
        if seed != sender_seed
    }


def detect_copies(
    received: np.ndarray,
    sender_seed: bytes,
    others: Mapping[bytes, bytes],
    version: int,
    params: WatermarkParams,
) -> tuple[bytes, ...]:
    """Ids (ascending) of the clients whose watermark ``received`` carries: it copies their work.

    ``version`` is the base version the copied update was made on (a verifier tests the versions
    of its staleness window when a copier may have re-labelled an older update).
    """
    scores = copy_scores(received, sender_seed, others, version, params)
    return tuple(cid for cid, z in scores.items() if z >= params.threshold)


@dataclass(frozen=True)
class DetectionPoint:
    """Measured detection of copies at one SNR (seed 004 Table I)."""

    snr_db: float
    detection_rate: float  # copies flagged as copies of their true source
    false_positive_rate: float  # honest updates flagged as a copy of anyone
    copies: int
    honest: int


def client_seed(index: int, namespace: bytes = b"dualchain-table") -> bytes:
    """A deterministic 32-byte seed for simulated client ``index`` (tables and tests)."""
    return hashlib.sha256(namespace + index.to_bytes(8, "big")).digest()


def detection_table(
    deltas: Sequence[np.ndarray],
    snrs_db: Sequence[float],
    params: WatermarkParams,
    *,
    trials: int = 200,
    hiding_noise: float = 1.0,
    seed: int = 0,
) -> list[DetectionPoint]:
    """Detection and false-positive rates of copies at each SNR (for the ``lazy`` experiment).

    Every client of ``deltas`` (one real update each, N >= 3) marks its update with its own
    sequence. A trial, at version ``t``, picks a lazy client j and a source i != j: the copy is
    i's marked update plus Gaussian noise of ``hiding_noise`` times its power, then marked with j's
    sequence; it is detected when ``detect_copies`` over everyone but j names i. Every honest
    marked update of version ``t`` is tested too (a false positive: any id named). Fresh sequences
    per version make the trials independent.
    """
    n = len(deltas)
    if n < 3:
        raise ValueError(f"a detection table needs at least 3 clients, got {n}")
    if trials < 1 or not (math.isfinite(hiding_noise) and hiding_noise >= 0):
        raise ValueError(f"need trials >= 1 and hiding_noise >= 0, got {trials}, {hiding_noise}")
    ids = [client_seed(c) for c in range(n)]  # a simulated client's id is its seed
    rng = np.random.default_rng(seed)
    levels = [WatermarkParams(params.length, float(snr), params.threshold) for snr in snrs_db]
    detected = [0] * len(levels)
    false_pos = [0] * len(levels)
    for t in range(trials):  # SNRs inside: one version's sequences serve every level
        for k, p in enumerate(levels):
            marked = [embed(d, ids[c], t, p) for c, d in enumerate(deltas)]
            j, i = (int(v) for v in rng.choice(n, size=2, replace=False))
            src = marked[i].astype(np.float64)
            rms = math.sqrt(float(np.mean(src * src)))
            noisy = src + rng.normal(0.0, math.sqrt(hiding_noise) * rms, src.size)
            copy = embed(noisy.astype(np.float32), ids[j], t, p)
            others = {cid: cid for c, cid in enumerate(ids) if c != j}
            detected[k] += detect_copies(copy, ids[j], others, t, p) == (ids[i],)
            for c in range(n):
                others = {cid: cid for m, cid in enumerate(ids) if m != c}
                false_pos[k] += bool(detect_copies(marked[c], ids[c], others, t, p))
    return [
        DetectionPoint(
            p.snr_db, detected[k] / trials, false_pos[k] / (trials * n), trials, trials * n
        )
        for k, p in enumerate(levels)
    ]
