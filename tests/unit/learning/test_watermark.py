"""PN watermark (seed 004 Algorithm 2): sequences, embedding at an SNR, copy detection rates."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from dualchain.learning.watermark import (
    WatermarkParams,
    amplitude,
    carries_own_mark,
    client_seed,
    copy_scores,
    correlate,
    detect_copies,
    detection_table,
    embed,
    pn_sequence,
    score,
)
from tests.digits_deltas import client_deltas

SEED_A = client_seed(1)
SEED_B = client_seed(2)


def _gauss(size: int, seed: int, std: float = 0.01) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, std, size).astype(np.float32)


def test_sequence_is_pinned_to_shake256() -> None:
    """Bit-identical on every replica: the signs are the SHAKE-256 bits, MSB first."""
    indices, signs = pn_sequence(SEED_A, 3, 100, 100)
    prefix = b"dualchain/pn-watermark/v1/sign" + (32).to_bytes(2, "big") + SEED_A
    raw = hashlib.shake_256(prefix + (3).to_bytes(8, "big")).digest(13)
    bits = [(raw[k // 8] >> (7 - k % 8)) & 1 for k in range(100)]
    assert indices.tolist() == list(range(100))
    assert signs.tolist() == [1.0 - 2.0 * b for b in bits]
    assert not signs.flags.writeable


def test_sequence_cache_is_bounded_and_returns_equal_sequences() -> None:
    from dualchain.learning import watermark

    first = pn_sequence(SEED_B, 11, 300_000, 200_000)
    for version in range(40):  # 40 x 3.2 MB: more than the 64 MiB budget
        pn_sequence(SEED_B, 100 + version, 300_000, 200_000)
    used = sum(i.nbytes + s.nbytes for i, s in watermark._cache.values())
    assert used <= watermark._CACHE_BYTES
    assert (SEED_B, 11, 300_000, 200_000) not in watermark._cache
    again = pn_sequence(SEED_B, 11, 300_000, 200_000)  # evicted, then made again: same values
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])


def test_keyed_index_set_is_spread_distinct_and_differs_per_client_and_version() -> None:
    idx_a, signs = pn_sequence(SEED_A, 0, 38_282, 4096)
    assert idx_a.size == signs.size == 4096 == np.unique(idx_a).size
    assert idx_a[0] < 1000 and idx_a[-1] > 37_000  # spread over the whole model, not a prefix
    idx_b, _ = pn_sequence(SEED_B, 0, 38_282, 4096)
    idx_a1, _ = pn_sequence(SEED_A, 1, 38_282, 4096)
    assert not np.array_equal(idx_a, idx_b) and not np.array_equal(idx_a, idx_a1)
    # About half the signs are +1 (a balanced sequence).
    assert abs(float(signs.sum())) < 4 * math.sqrt(4096)


def test_amplitude_matches_the_snr() -> None:
    u = _gauss(20_000, 0)
    for snr in (9.0, 6.0, 3.0):
        p = WatermarkParams(length=20_000, snr_db=snr)
        marked = embed(u, SEED_A, 0, p).astype(np.float64)
        mark_power = float(np.mean((marked - u) ** 2))
        assert 10 * math.log10(float(np.mean(u.astype(np.float64) ** 2)) / mark_power) == (
            pytest.approx(snr, abs=0.01)
        )
    assert amplitude(np.zeros(10, np.float32), 6.0) == 0.0


def test_embed_touches_only_the_sequence_positions() -> None:
    u = _gauss(10_000, 1)
    p = WatermarkParams(length=500)
    marked = embed(u, SEED_A, 7, p)
    assert marked.dtype == np.float32 and marked.shape == u.shape
    idx, _ = pn_sequence(SEED_A, 7, 10_000, 500)
    changed = np.flatnonzero(marked != u)
    assert set(changed.tolist()) <= set(idx.tolist()) and changed.size > 490


def test_scores_of_marked_and_unmarked_updates() -> None:
    p = WatermarkParams(length=4096, snr_db=6.0)
    u = _gauss(38_282, 2)
    marked = embed(u, SEED_A, 5, p)
    assert score(marked, SEED_A, 5, p.length) > 20  # theory: sqrt(4096) * 0.5 / 1.12 = 28.6
    assert abs(score(u, SEED_A, 5, p.length)) < p.threshold
    assert abs(score(marked, SEED_B, 5, p.length)) < p.threshold  # other clients' sequences
    assert abs(score(marked, SEED_A, 6, p.length)) < p.threshold  # another version's sequence
    assert correlate(marked, SEED_A, 5, p.length) == pytest.approx(
        score(marked, SEED_A, 5, p.length) / 64.0
    )
    assert score(np.zeros(100, np.float32), SEED_A, 0, 64) == 0.0
    assert carries_own_mark(marked, SEED_A, 5, p) and not carries_own_mark(u, SEED_A, 5, p)


def test_a_noisy_copy_is_caught_and_an_honest_update_is_not() -> None:
    p = WatermarkParams()
    seeds = {client_seed(c): client_seed(c) for c in range(6)}
    ids = list(seeds)
    updates = [embed(_gauss(38_282, 10 + c), ids[c], 4, p) for c in range(6)]
    # Client 5 is lazy: it copies client 2's upload, hides it under noise as strong, marks it.
    rng = np.random.default_rng(0)
    noisy = updates[2] + rng.normal(0, float(np.std(updates[2])), 38_282).astype(np.float32)
    copy = embed(noisy, ids[5], 4, p)
    others = {k: v for k, v in seeds.items() if k != ids[5]}
    assert detect_copies(copy, ids[5], others, 4, p) == (ids[2],)
    scores = copy_scores(copy, ids[5], others, 4, p)
    assert scores[ids[2]] > 10 and all(
        abs(z) < p.threshold for k, z in scores.items() if k != ids[2]
    )
    for c in range(5):
        others = {k: v for k, v in seeds.items() if k != ids[c]}
        assert detect_copies(updates[c], ids[c], others, 4, p) == ()
    # The sender's own seed among "others" is skipped, not reported as a copy of itself.
    assert detect_copies(updates[0], ids[0], seeds, 4, p) == ()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"length": 10},
        {"length": 4096.0},
        {"snr_db": float("nan")},
        {"snr_db": 100.0},
        {"threshold": 0.0},
        {"threshold": float("inf")},
    ],
)
def test_params_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="watermark"):
        WatermarkParams(**kwargs)  # type: ignore[arg-type]


def test_bad_inputs_are_refused() -> None:
    p = WatermarkParams()
    with pytest.raises(ValueError, match="seed"):
        embed(_gauss(100, 0), b"short", 0, p)
    with pytest.raises(ValueError, match="1-D"):
        embed(np.zeros((2, 2), np.float32), SEED_A, 0, p)
    with pytest.raises(ValueError, match="float32 or float64"):
        score(np.zeros(10, np.int32), SEED_A, 0, 64)
    with pytest.raises(ValueError, match="finite"):
        score(np.array([1.0, np.nan]), SEED_A, 0, 64)
    with pytest.raises(ValueError, match="negative"):
        pn_sequence(SEED_A, -1, 100, 64)
    with pytest.raises(ValueError, match="3 clients"):
        detection_table([_gauss(100, 0)] * 2, [6.0], p)


def test_detection_table_on_real_digits_deltas_meets_seed_004_table_1() -> None:
    """Seed 004 Table I (0.931 / 0.989 / 0.999 at 9 / 6 / 3 dB) with FPR <= 0.01, on real deltas.

    10 IID digits clients, 5 SGD steps each; the copier hides the copy under noise as strong as
    the update itself. 60 copies and 600 honest updates per SNR.
    """
    deltas = client_deltas(clients=10, batches=5)
    table = detection_table(deltas, [9.0, 6.0, 3.0], WatermarkParams(), trials=60)
    rates = {pt.snr_db: (pt.detection_rate, pt.false_positive_rate) for pt in table}
    assert rates[9.0][0] >= 0.93 and rates[6.0][0] >= 0.98 and rates[3.0][0] >= 0.99
    assert all(fpr <= 0.01 for _, fpr in rates.values())
    assert all(pt.copies == 60 and pt.honest == 600 for pt in table)


def test_a_short_sequence_shows_the_snr_trade_off() -> None:
    """At L = 256 detection falls with the SNR as theory says (the length buys detection)."""
    deltas = client_deltas(clients=10, batches=5)
    table = detection_table(deltas, [9.0, 3.0], WatermarkParams(length=256), trials=60)
    assert table[0].detection_rate < 0.7 < 0.9 < table[1].detection_rate
