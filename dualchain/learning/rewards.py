"""Reward lists of seed 002 Algorithm 4, their checks, and the balance ledger the chains hold.

**Reward list.** For each global version, Algorithm 4 appends ``<C_i, theta_i / sum_k theta_k *
base>`` for every high-contribution client C_i (theta from ``dualchain.learning.contribution``).
Amounts are integers in **micro-units** (``MICRO`` per reward unit): chain state must be exact and
identical on every replica, which floats are not once summed in different orders.

**Rounding: largest remainder.** Each exact share ``theta_i * base / sum theta`` (computed with
``fractions.Fraction`` from the float64 thetas, so no rounding happens before the floor) is
floored; the micro-units left over (fewer than the number of clients) go one each to the largest
fractional remainders, ties to the smaller client id. So a version's rewards sum exactly to its
base, no amount is off its exact share by a micro-unit or more, and the result does not depend on
the order of the inputs.

Clients with theta <= 0 get nothing (a weight that opposes the global update earns no share).
Entries of zero micro-units are left out. A version whose list is empty (no high-contribution
client) pays nothing: its base is not minted.

**Checks.** ``check_conservation`` refuses a list that pays other than its base, pays a client
twice, or pays a negative or zero amount; ``verify_reward_list`` is what a committee replica runs
against its own recomputation and refuses any difference with a one-line reason.

**Balances.** ``Balances`` is the pure ledger that the CTBC and CMBC applications hold: credits
(a version's rewards, a miner's block reward) applied as named entries, undone in reverse order
(a CMBC reorganisation pops blocks from the tip), and a digest that replicas compare.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

MICRO = 1_000_000  # micro-units per reward unit
MAX_AMOUNT = 2**63 - 1  # an amount or a balance must fit a signed 64-bit field on the wire

RewardList = tuple[tuple[bytes, int], ...]  # (client id, micro-units), sorted by client id


class RewardError(ValueError):
    """A reward list or a ledger entry is refused; the message is a one-line reason."""


def _check_base(base: int) -> None:
    if not isinstance(base, int) or isinstance(base, bool) or not 0 < base <= MAX_AMOUNT:
        raise RewardError(f"base must be a positive integer of micro-units, got {base!r}")


def reward_list(
    theta: Mapping[bytes, float] | Iterable[tuple[bytes, float]], base: int
) -> RewardList:
    """Algorithm 4's ``<C_i, theta_i / sum theta * base>`` in micro-units (module docstring).

    ``theta`` maps client ids to weights, or lists (client id, weight) per update: a client with
    several high-contribution updates in the window is paid for the (exact) sum of their weights.
    """
    _check_base(base)
    shares: dict[bytes, Fraction] = {}
    pairs = theta.items() if isinstance(theta, Mapping) else theta
    for cid, t in pairs:
        if not isinstance(cid, bytes) or not cid:
            raise RewardError("a client id must be non-empty bytes")
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise RewardError(f"contribution of client {cid.hex()} is not a number") from None
        if not math.isfinite(t):
            raise RewardError(f"contribution of client {cid.hex()} is not finite")
        if t > 0:
            shares[cid] = shares.get(cid, Fraction(0)) + Fraction(t)  # exact, order-free
    if not shares:
        return ()
    total = sum(shares.values(), Fraction(0))
    floors: dict[bytes, int] = {}
    remainders: list[tuple[Fraction, bytes]] = []
    for cid, t in shares.items():
        exact = t * base / total
        floors[cid] = math.floor(exact)
        remainders.append((exact - floors[cid], cid))
    left = base - sum(floors.values())
    # Largest remainder first; on a tie the smaller client id wins.
    remainders.sort(key=lambda rc: (-rc[0], rc[1]))
    for _, cid in remainders[:left]:
        floors[cid] += 1
    return tuple(sorted((cid, amount) for cid, amount in floors.items() if amount > 0))


def check_conservation(rewards: Sequence[tuple[bytes, int]], base: int) -> None:
    """Refuse a list that does not pay exactly ``base`` (or nothing) in positive unique amounts."""
    _check_base(base)
    seen: set[bytes] = set()
    total = 0
    for cid, amount in rewards:
        if not isinstance(cid, bytes) or not cid:
            raise RewardError("a reward names an empty or non-bytes client id")
        if cid in seen:
            raise RewardError(f"client {cid.hex()} is paid twice")
        seen.add(cid)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise RewardError(f"reward of client {cid.hex()} is not a positive integer")
        total += amount
    if rewards and total != base:
        raise RewardError(f"rewards sum to {total} micro-units, the base is {base}")


def verify_reward_list(
    claimed: Sequence[tuple[bytes, int]], recomputed: Sequence[tuple[bytes, int]]
) -> None:
    """A replica's check of a proposed list against its own recomputation; order-insensitive."""
    got = dict(claimed)
    want = dict(recomputed)
    if len(got) != len(claimed):
        raise RewardError("reward list pays a client twice")
    for cid in sorted(set(got) | set(want)):
        if cid not in want:
            raise RewardError(f"reward list pays client {cid.hex()}, who earned nothing")
        if cid not in got:
            raise RewardError(f"reward list leaves out client {cid.hex()}")
        if got[cid] != want[cid]:
            raise RewardError(
                f"reward list pays client {cid.hex()} {got[cid]}, recomputed {want[cid]}"
            )


class Balances:
    """Integer balances per account, credited by named entries that undo in reverse order.

    An entry is one version's reward list (key e.g. ``b"version:" + version``) or one block's
    miner reward; applying the same key twice is refused, and only the latest entry can be rolled
    back, as a chain only ever pops its tip. Replicas compare ``digest()``.
    """

    def __init__(self, balances: Mapping[bytes, int] | None = None) -> None:
        self._balances: dict[bytes, int] = {}
        self._journal: list[tuple[bytes, RewardList]] = []
        self._keys: set[bytes] = set()
        for account, amount in (balances or {}).items():
            self._check_credit(account, amount)
            if amount:
                self._balances[account] = amount

    @staticmethod
    def _check_credit(account: bytes, amount: int) -> None:
        if not isinstance(account, bytes) or not 0 < len(account) <= 0xFFFF:
            raise RewardError("an account must be non-empty bytes of at most 65535")
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise RewardError(f"amount for account {account.hex()} is not a non-negative integer")

    def apply(self, key: bytes, credits: Iterable[tuple[bytes, int]]) -> None:
        """Credit every (account, micro-units) of one entry, all or nothing."""
        if key in self._keys:
            raise RewardError(f"entry {key.hex()} was already applied")
        entry = tuple(sorted(credits))
        merged: dict[bytes, int] = {}
        for account, amount in entry:
            self._check_credit(account, amount)
            merged[account] = merged.get(account, 0) + amount
        for account, amount in merged.items():
            if self._balances.get(account, 0) + amount > MAX_AMOUNT:
                raise RewardError(f"balance of account {account.hex()} would overflow")
        for account, amount in merged.items():
            if amount:
                self._balances[account] = self._balances.get(account, 0) + amount
        self._journal.append((key, entry))
        self._keys.add(key)

    def apply_rewards(self, key: bytes, rewards: RewardList, base: int) -> None:
        """A version's reward list, checked for conservation first."""
        check_conservation(rewards, base)
        self.apply(key, rewards)

    def apply_block_reward(self, key: bytes, miner: bytes, amount: int, expected: int) -> None:
        """A CMBC miner's block reward, which must be the configured amount."""
        if amount != expected:
            raise RewardError(f"block reward is {amount} micro-units, the chain pays {expected}")
        self.apply(key, ((miner, amount),))

    def rollback(self, key: bytes) -> None:
        """Undo the latest entry, which must be ``key``."""
        if not self._journal or self._journal[-1][0] != key:
            raise RewardError(f"entry {key.hex()} is not the latest applied")
        _, entry = self._journal.pop()
        self._keys.discard(key)
        for account, amount in entry:
            left = self._balances.get(account, 0) - amount
            if left:
                self._balances[account] = left
            else:
                self._balances.pop(account, None)

    def balance(self, account: bytes) -> int:
        return self._balances.get(account, 0)

    def total(self) -> int:
        return sum(self._balances.values())

    def snapshot(self) -> dict[bytes, int]:
        """Non-zero balances, in account order."""
        return dict(sorted(self._balances.items()))

    def digest(self) -> bytes:
        """SHA-256 over (u16 length, account, u64 amount) for every non-zero balance in order."""
        h = hashlib.sha256(b"dualchain-balances-v1")
        for account, amount in sorted(self._balances.items()):
            h.update(struct.pack(">H", len(account)) + account + struct.pack(">Q", amount))
        return h.digest()
