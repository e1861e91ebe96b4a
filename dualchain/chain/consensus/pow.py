"""Proof of work for CMBC: targets, work, retargeting, timestamp rules and the nonce search.

A block is sealed when SHA-256 of its canonical unsigned header, read as a 256-bit big-endian
number, does not exceed the target written in the header (seed 002, eq. II.3). The nonce is the
last field of that encoding, so a miner hashes a fixed prefix plus eight nonce bytes and never
re-encodes the header.

Every rule here is a pure function of a header and its ancestors, so each replica reaches the
same verdict on the same branch:

- the target of block h equals its parent's, except at heights that are multiples of the
  retarget interval R, where it is scaled by the time the last R blocks took over R - 2 block
  intervals (the unbiased correction for R - 1 exponential intervals, see ``next_target``), the
  change clamped to ``max_adjust`` either way;
- a block's timestamp must be above the median of its last ``median_window`` ancestors (so a
  miner cannot drag time backwards) and at most ``max_future_drift_ms`` ahead of the local clock;
- the work of a block is 2^256 / (target + 1), the expected number of hashes to find it; fork
  choice follows the most cumulative work.
"""

from __future__ import annotations

import hashlib
import statistics
import struct
from collections.abc import Callable
from dataclasses import dataclass

from dualchain.chain.errors import ValidationError
from dualchain.chain.types import BlockHeader

MAX_TARGET = (1 << 256) - 1
NONCE_BYTES = 8
_NONCE = struct.Struct(">Q")


@dataclass(frozen=True)
class PowParams:
    """The proof-of-work rules of a CMBC chain, fixed by its genesis (section ``pow``)."""

    initial_difficulty: int = 1_000_000  # expected hashes per block at genesis
    block_interval_ms: int = 2000  # the interval retargeting aims for
    retarget_interval: int = 10  # R: blocks between target changes
    max_adjust: int = 4  # a retarget changes the target at most this factor either way
    finality_depth: int = 6  # k: a block with k - 1 blocks on top of it is final
    median_window: int = 11  # timestamps must rise above the median of this many ancestors
    # Micro-units each block's REWARD record credits to its reward account (0: none minted).
    block_reward: int = 1_000_000

    @property
    def initial_target(self) -> int:
        return target_for_difficulty(self.initial_difficulty)


def target_for_difficulty(difficulty: int) -> int:
    if difficulty < 1:
        raise ValueError("difficulty must be at least 1")
    return MAX_TARGET // difficulty


def difficulty_of(target: int) -> float:
    """Expected hashes per block at this target (the inverse of ``target_for_difficulty``)."""
    return MAX_TARGET / max(target, 1)


def target_to_bytes(target: int) -> bytes:
    if not 1 <= target <= MAX_TARGET:
        raise ValueError("a target is in [1, 2^256)")
    return target.to_bytes(32, "big")


def target_from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")


def block_work(target: int) -> int:
    """Expected hashes to meet ``target``: 2^256 / (target + 1)."""
    return (1 << 256) // (target + 1)


def meets_target(header: BlockHeader) -> bool:
    return header.hash <= header.pow_target  # both 32 bytes big-endian: byte order is numeric


def next_target(
    params: PowParams, height: int, parent_target: int, timestamp_at: Callable[[int], int]
) -> int:
    """The target block ``height`` must carry, given its parent's target and the timestamps of
    its ancestors on its own branch (``timestamp_at(h)`` for h < height)."""
    R = params.retarget_interval
    if height % R != 0 or height <= R:  # the first window would start at genesis time
        return parent_target
    # Heights height-R .. height-1 are R blocks and n = R - 1 intervals. Block times are
    # exponential, so their sum S is a Gamma(n) draw; scaling the target by S / (n x interval)
    # makes the next mean interval n / (n - 1) x interval on average (E[1/S] is
    # 1 / ((n - 1) x mean)): 33% too slow with R = 5. Dividing by (n - 1) x interval instead
    # gives the interval itself on average (docs/cmbc.md).
    actual = timestamp_at(height - 1) - timestamp_at(height - R)
    expected = (R - 2) * params.block_interval_ms
    actual = min(max(actual, expected // params.max_adjust), expected * params.max_adjust)
    target = parent_target * max(actual, 1) // expected
    return min(max(target, 1), MAX_TARGET)


def median_time_past(timestamps: list[int]) -> int:
    """Median of the given ancestor timestamps (the last ``median_window`` of them)."""
    return int(statistics.median_low(timestamps)) if timestamps else 0


def check_seal(
    header: BlockHeader,
    expected_target: int,
    ancestor_timestamps: list[int],
    now_ms: int,
    max_future_drift_ms: int,
) -> None:
    """The proof-of-work rules of one header; raises ValidationError with a reason."""
    if target_from_bytes(header.pow_target) != expected_target:
        raise ValidationError(
            f"block {header.height} carries target {header.pow_target.hex()[:16]}..., the "
            f"retarget rule gives {target_to_bytes(expected_target).hex()[:16]}...",
            code="bad_target",
        )
    if not meets_target(header):
        raise ValidationError(
            f"block {header.height} hash {header.hash.hex()[:16]} is above its target",
            code="bad_pow",
        )
    mtp = median_time_past(ancestor_timestamps)
    if header.height > 0 and header.timestamp_ms <= mtp:
        raise ValidationError(
            f"block {header.height} timestamp {header.timestamp_ms} is not above the median "
            f"{mtp} of its last {len(ancestor_timestamps)} ancestors",
            code="bad_timestamp",
        )
    if header.timestamp_ms > now_ms + max_future_drift_ms:
        raise ValidationError(
            f"block {header.height} timestamp {header.timestamp_ms} is more than "
            f"{max_future_drift_ms} ms ahead of this replica's clock",
            code="future_timestamp",
        )


def seal_prefix(header: BlockHeader) -> bytes:
    """The header's hashed bytes without the trailing nonce."""
    data = header.signing_bytes
    if data[-NONCE_BYTES:] != _NONCE.pack(header.pow_nonce):
        raise AssertionError("the proof-of-work nonce must be the last field of a header")
    return data[:-NONCE_BYTES]


def search_nonce(prefix: bytes, target: bytes, start: int, count: int) -> int | None:
    """The first nonce in [start, start + count) whose header hash meets ``target``."""
    base = hashlib.sha256(prefix)
    pack = _NONCE.pack
    for nonce in range(start, start + count):
        h = base.copy()
        h.update(pack(nonce))
        if h.digest() <= target:
            return nonce
    return None
