"""Proof-of-work rules: targets and work, retargeting with its clamp, median time past, the seal
check and the nonce search."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualchain.chain.consensus.pow import (
    MAX_TARGET,
    NONCE_BYTES,
    PowParams,
    block_work,
    check_seal,
    difficulty_of,
    median_time_past,
    meets_target,
    next_target,
    seal_prefix,
    search_nonce,
    target_for_difficulty,
    target_from_bytes,
    target_to_bytes,
)
from dualchain.chain.errors import ValidationError
from dualchain.chain.types import BlockHeader

PARAMS = PowParams(initial_difficulty=16, block_interval_ms=1000, retarget_interval=5,
                   max_adjust=4, finality_depth=6, median_window=11)
NOW = 1_700_000_000_000
DRIFT = 30_000


def header(**fields) -> BlockHeader:
    base = dict(chain_id="cmbc-test", height=7, parent_hash=b"\x01" * 32, tx_root=b"\x02" * 32,
                timestamp_ms=NOW, proposer=b"\x03" * 32,
                pow_target=target_to_bytes(target_for_difficulty(16)))
    base.update(fields)
    return BlockHeader(**base)


def sealed(h: BlockHeader) -> BlockHeader:
    """``h`` with the first nonce that meets its target."""
    nonce = search_nonce(seal_prefix(h), h.pow_target, 0, 1_000_000)
    assert nonce is not None
    return replace(h, pow_nonce=nonce)


def unsealed(h: BlockHeader) -> BlockHeader:
    """``h`` with a nonce whose hash is above its target."""
    for nonce in range(1000):
        candidate = replace(h, pow_nonce=nonce)
        if not meets_target(candidate):
            return candidate
    raise AssertionError("every nonce meets the target")


# -- targets and work ------------------------------------------------------------------------------


def test_target_and_difficulty_are_inverse() -> None:
    assert target_for_difficulty(1) == MAX_TARGET
    assert target_for_difficulty(2) == MAX_TARGET // 2
    for d in (1, 7, 1_000_000, 2**200):
        assert difficulty_of(target_for_difficulty(d)) == pytest.approx(d, rel=1e-9)
    assert PARAMS.initial_target == target_for_difficulty(16)
    with pytest.raises(ValueError):
        target_for_difficulty(0)


def test_target_bytes_round_trip_and_bounds() -> None:
    for t in (1, 255, 2**128 + 5, MAX_TARGET):
        raw = target_to_bytes(t)
        assert len(raw) == 32 and target_from_bytes(raw) == t
    for bad in (0, -1, MAX_TARGET + 1):
        with pytest.raises(ValueError):
            target_to_bytes(bad)


def test_work_is_expected_hashes() -> None:
    assert block_work(MAX_TARGET) == 1  # every hash meets it
    assert block_work(MAX_TARGET // 2) == 2
    assert block_work(target_for_difficulty(1000)) in (999, 1000)  # integer division
    assert block_work(2**200 - 1) == 2**56
    assert block_work(0) == 1 << 256


@given(st.integers(1, MAX_TARGET - 1))
def test_a_lower_target_is_at_least_as_much_work(target: int) -> None:
    assert block_work(target) >= block_work(target + 1)


def test_meets_target_compares_the_hash_as_a_number() -> None:
    target = target_for_difficulty(4)
    seen = set()
    for nonce in range(64):
        h = header(pow_target=target_to_bytes(target), pow_nonce=nonce)
        assert h.hash == hashlib.sha256(h.signing_bytes).digest()
        expected = int.from_bytes(h.hash, "big") <= target
        assert meets_target(h) == expected
        seen.add(expected)
    assert seen == {True, False}
    assert meets_target(header(pow_target=target_to_bytes(MAX_TARGET)))


# -- retargeting -----------------------------------------------------------------------------------


def timestamps(interval_ms: int, count: int = 40) -> dict[int, int]:
    return {h: NOW + h * interval_ms for h in range(count)}


def test_target_stays_between_retarget_heights() -> None:
    ts = timestamps(10)  # far too fast: would raise difficulty at a boundary
    for height in (1, 2, 3, 4, 6, 9, 11, 14):
        assert next_target(PARAMS, height, 12345, ts.__getitem__) == 12345


def test_first_window_is_skipped() -> None:
    # Height R would measure from genesis, whose timestamp is the testnet's creation time.
    assert next_target(PARAMS, PARAMS.retarget_interval, 12345, timestamps(10).__getitem__) == \
        12345


@pytest.mark.parametrize(
    ("interval_ms", "factor"),
    # R = 5: a window of 4 intervals is measured against 3 block intervals.
    [(750, Fraction(1)), (1500, Fraction(2)), (375, Fraction(1, 2)), (1200, Fraction(8, 5)),
     (300, Fraction(2, 5))],
)
def test_retarget_scales_by_actual_over_expected_time(interval_ms: int, factor: Fraction) -> None:
    parent_target = 10**30
    got = next_target(PARAMS, 10, parent_target, timestamps(interval_ms).__getitem__)
    assert got == parent_target * factor


@pytest.mark.parametrize("retarget_interval", [3, 5, 10])
def test_retargeting_keeps_the_mean_interval_on_target(retarget_interval: int) -> None:
    """Mined with exponential block times at a constant hash rate, the chain's mean interval
    over many windows is the configured one (a rule scaling by the window's own interval count
    runs R - 1 / R - 2 times slow: 33% with R = 5)."""
    import random

    params = replace(PARAMS, retarget_interval=retarget_interval, max_adjust=1000)
    rng = random.Random(7)
    hashes_per_ms = 1.0
    target, stamps = MAX_TARGET // params.block_interval_ms, [NOW]
    for height in range(1, 40_000):
        target = next_target(params, height, target, stamps.__getitem__)
        mean_ms = MAX_TARGET / target / hashes_per_ms  # expected hashes over the hash rate
        stamps.append(stamps[-1] + max(1, round(rng.expovariate(1 / mean_ms))))
    settled = stamps[2 * retarget_interval:]
    mean = (settled[-1] - settled[0]) / (len(settled) - 1)
    assert mean == pytest.approx(params.block_interval_ms, rel=0.05)


def test_retarget_looks_at_the_last_window_only() -> None:
    ts = timestamps(750)  # 4 intervals of 750 ms: the 3 s that 3 block intervals take
    for h in range(5):  # the window of height 10 is heights 5..9
        ts[h] = NOW - 10**9
    assert next_target(PARAMS, 10, 10**30, ts.__getitem__) == 10**30
    ts[9] = ts[5] + 2 * 3 * 1000  # twice the R - 2 = 3 intervals a window is measured by
    assert next_target(PARAMS, 10, 10**30, ts.__getitem__) == 2 * 10**30


@pytest.mark.parametrize(
    ("interval_ms", "factor"),
    [(100_000, Fraction(4)), (5_000, Fraction(4)), (10, Fraction(1, 4)), (0, Fraction(1, 4))],
)
def test_retarget_is_clamped(interval_ms: int, factor: Fraction) -> None:
    parent_target = 10**30
    got = next_target(PARAMS, 15, parent_target, timestamps(interval_ms).__getitem__)
    assert got == parent_target * factor


def test_retarget_survives_timestamps_going_backwards() -> None:
    ts = timestamps(1000)
    ts[14] = ts[10] - 50_000  # a negative window: the clamp takes the largest step up
    assert next_target(PARAMS, 15, 10**30, ts.__getitem__) == 10**30 // 4


def test_retarget_stays_within_the_target_range() -> None:
    slow = timestamps(100_000).__getitem__
    assert next_target(PARAMS, 10, MAX_TARGET, slow) == MAX_TARGET
    assert next_target(PARAMS, 10, MAX_TARGET // 2, slow) == MAX_TARGET
    fast = timestamps(1).__getitem__
    assert next_target(PARAMS, 10, 1, fast) == 1
    assert next_target(PARAMS, 10, 3, fast) == 1


# -- timestamps ------------------------------------------------------------------------------------


def test_median_time_past() -> None:
    assert median_time_past([]) == 0
    assert median_time_past([5]) == 5
    assert median_time_past([9, 1, 5]) == 5
    assert median_time_past([4, 1, 3, 2]) == 2  # the lower middle of an even count
    assert median_time_past(list(range(11, 0, -1))) == 6


# -- the seal --------------------------------------------------------------------------------------


def ancestors(last: int) -> list[int]:
    """Eleven ancestor timestamps, newest first, whose median is ``last - 5000``."""
    return [last - 1000 * i for i in range(11)]


def test_a_sealed_header_passes() -> None:
    h = sealed(header())
    check_seal(h, target_for_difficulty(16), ancestors(NOW - 1000), NOW, DRIFT)


def test_check_seal_refuses_a_target_the_rule_does_not_give() -> None:
    h = sealed(header())
    with pytest.raises(ValidationError) as info:
        check_seal(h, target_for_difficulty(32), ancestors(NOW - 1000), NOW, DRIFT)
    assert info.value.code == "bad_target"
    # Claiming an easier target than the rule gives is the same fault.
    easy = sealed(header(pow_target=target_to_bytes(MAX_TARGET)))
    with pytest.raises(ValidationError) as info:
        check_seal(easy, target_for_difficulty(16), ancestors(NOW - 1000), NOW, DRIFT)
    assert info.value.code == "bad_target"


def test_check_seal_refuses_a_hash_above_the_target() -> None:
    h = unsealed(header())
    with pytest.raises(ValidationError) as info:
        check_seal(h, target_for_difficulty(16), ancestors(NOW - 1000), NOW, DRIFT)
    assert info.value.code == "bad_pow"


@pytest.mark.parametrize("offset", [0, -1, -5000])
def test_check_seal_refuses_a_timestamp_not_above_the_median(offset: int) -> None:
    parents = ancestors(NOW + 4000)
    mtp = median_time_past(parents)
    assert mtp == NOW - 1000
    h = sealed(header(timestamp_ms=mtp + offset))
    with pytest.raises(ValidationError) as info:
        check_seal(h, target_for_difficulty(16), parents, NOW, DRIFT)
    assert info.value.code == "bad_timestamp"
    # One millisecond above the median is enough (even below the parent's own timestamp:
    # the linkage rules, not the seal, order a block after its parent).
    check_seal(sealed(header(timestamp_ms=mtp + 1)), target_for_difficulty(16), parents, NOW,
               DRIFT)


def test_check_seal_refuses_a_timestamp_too_far_ahead() -> None:
    ok = sealed(header(timestamp_ms=NOW + DRIFT))
    check_seal(ok, target_for_difficulty(16), ancestors(NOW), NOW, DRIFT)
    ahead = sealed(header(timestamp_ms=NOW + DRIFT + 1))
    with pytest.raises(ValidationError) as info:
        check_seal(ahead, target_for_difficulty(16), ancestors(NOW), NOW, DRIFT)
    assert info.value.code == "future_timestamp"


def test_genesis_needs_no_median() -> None:
    g = sealed(header(height=0, timestamp_ms=0))
    check_seal(g, target_for_difficulty(16), [], NOW, DRIFT)


def test_seal_checks_the_target_before_the_hash() -> None:
    # A header with a wrong target and a hash above it names the target: a replica never
    # hashes against a target a miner picked itself.
    h = unsealed(header())
    with pytest.raises(ValidationError) as info:
        check_seal(h, target_for_difficulty(8), ancestors(NOW - 1000), NOW, DRIFT)
    assert info.value.code == "bad_target"


# -- nonce search ----------------------------------------------------------------------------------


def test_seal_prefix_is_the_header_without_its_nonce() -> None:
    h = header(pow_nonce=0x0102030405060708)
    prefix = seal_prefix(h)
    assert prefix + (0x0102030405060708).to_bytes(NONCE_BYTES, "big") == h.signing_bytes
    assert seal_prefix(replace(h, pow_nonce=99)) == prefix  # the nonce is all that varies


def test_search_nonce_finds_a_nonce_for_an_easy_target() -> None:
    h = header()
    nonce = search_nonce(seal_prefix(h), h.pow_target, 1000, 100_000)
    assert nonce is not None and 1000 <= nonce < 101_000
    solved = replace(h, pow_nonce=nonce)
    assert meets_target(solved)
    # It is the first one in the range.
    assert all(not meets_target(replace(h, pow_nonce=n)) for n in range(1000, nonce))


def test_search_nonce_takes_everything_at_the_largest_target() -> None:
    h = header(pow_target=target_to_bytes(MAX_TARGET))
    assert search_nonce(seal_prefix(h), h.pow_target, 42, 10) == 42


def test_search_nonce_gives_up_after_count() -> None:
    h = header(pow_target=target_to_bytes(1))
    assert search_nonce(seal_prefix(h), h.pow_target, 0, 2000) is None
    assert search_nonce(seal_prefix(h), h.pow_target, 5, 0) is None
