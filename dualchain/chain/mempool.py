"""The mempool: admitted transactions waiting to be included in a block.

A pure in-memory structure. Signatures, chain id and timestamps are checked by admission
validation before ``add``; the mempool only enforces nonce ordering, per-sender and global bounds,
and expiry. Time is always passed in (``now_ms``), never read from a clock, so behaviour is
deterministic.

Layout:

- ``_by_hash``: every pending entry by transaction hash, in arrival order (admission times are
  clamped to be non-decreasing, so arrival order is also admission order and ``expire`` can stop
  at the first live entry).
- ``_by_sender``: per sender, a dict nonce -> entry in arrival order plus a sorted list of nonces,
  so the sender's first/newest arrival and lowest/highest nonce are O(1) to read.
- ``_bytes``: the total encoded size, maintained incrementally.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dualchain.chain.errors import MempoolError
from dualchain.chain.types import Transaction

NextNonce = Callable[[bytes], int]


@dataclass(frozen=True)
class MempoolConfig:
    max_txs: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    max_per_sender: int = 256
    # A transaction may be at most this far above its sender's next executable nonce.
    max_nonce_gap: int = 64
    ttl_ms: int = 600_000

    def __post_init__(self) -> None:
        for name in ("max_txs", "max_bytes", "max_per_sender", "ttl_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"MempoolConfig.{name} must be positive")
        if self.max_nonce_gap < 0:
            raise ValueError("MempoolConfig.max_nonce_gap must not be negative")


@dataclass(frozen=True, slots=True)
class _Entry:
    tx: Transaction
    admitted_ms: int
    seq: int  # global arrival counter: orders arrivals even within one millisecond


class _SenderQueue:
    """One sender's pending transactions."""

    __slots__ = ("by_nonce", "nonces")

    def __init__(self) -> None:
        self.by_nonce: dict[int, _Entry] = {}  # insertion order = arrival order
        self.nonces: list[int] = []  # sorted ascending

    def first_seq(self) -> int:
        return next(iter(self.by_nonce.values())).seq

    def newest_seq(self) -> int:
        return next(reversed(self.by_nonce.values())).seq


class Mempool:
    """Pending transactions, bounded in count and bytes, with per-sender nonce ordering."""

    def __init__(self, config: MempoolConfig | None = None) -> None:
        self.config = config if config is not None else MempoolConfig()
        self._by_hash: dict[bytes, _Entry] = {}
        self._by_sender: dict[bytes, _SenderQueue] = {}
        self._bytes = 0
        self._seq = 0
        self._last_admitted_ms = 0

    # -- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> Transaction | None:
        entry = self._by_hash.get(tx_hash)
        return entry.tx if entry is not None else None

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def pending(self, sender: bytes) -> list[Transaction]:
        """The sender's pending transactions in nonce order."""
        queue = self._by_sender.get(sender)
        if queue is None:
            return []
        return [queue.by_nonce[n].tx for n in queue.nonces]

    def admission_window(self, sender: bytes, next_nonce: int) -> tuple[int, int]:
        """The nonce the sender's next transaction should carry, and how many transactions
        from that nonce on ``add`` would take now by the nonce rules (gap, per-sender bound).

        The nonce is the first one past the unbroken run of pending nonces from ``next_nonce``
        (its committed next nonce): a transaction there executes after the pending ones, where
        ``next_nonce + pending`` pointed past a gap, or past the gap bound. A pool full of
        other senders' transactions may still refuse it (code full); that is not counted.
        """
        queue = self._by_sender.get(sender)
        nonce = next_nonce
        pending = 0
        if queue is not None:
            pending = len(queue.nonces)
            while nonce in queue.by_nonce:
                nonce += 1
        cfg = self.config
        by_gap = next_nonce + cfg.max_nonce_gap - nonce + 1
        by_count = cfg.max_per_sender - pending
        return nonce, max(0, min(by_gap, by_count))

    def senders(self) -> int:
        """How many senders have at least one pending transaction."""
        return len(self._by_sender)

    # -- admission ----------------------------------------------------------------------------

    def add(self, tx: Transaction, next_nonce: int, now_ms: int) -> None:
        """Admits ``tx``; ``next_nonce`` is its sender's next nonce on the chain.

        Raises MempoolError (code duplicate, stale_nonce, nonce_gap, nonce_taken, sender_full,
        oversized or full) and changes nothing when the transaction is refused.
        """
        cfg = self.config
        tx_hash = tx.hash
        if tx_hash in self._by_hash:
            raise MempoolError(f"transaction {tx_hash.hex()} is already pending", code="duplicate")
        if tx.nonce < next_nonce:
            raise MempoolError(
                f"nonce {tx.nonce} is below the sender's next nonce {next_nonce}",
                code="stale_nonce",
            )
        if tx.nonce > next_nonce + cfg.max_nonce_gap:
            raise MempoolError(
                f"nonce {tx.nonce} is more than {cfg.max_nonce_gap} above the sender's next "
                f"nonce {next_nonce}",
                code="nonce_gap",
            )
        queue = self._by_sender.get(tx.sender)
        if queue is not None:
            if tx.nonce in queue.by_nonce:
                # No replace-by-fee: the first transaction seen for a nonce keeps its slot.
                raise MempoolError(
                    f"the sender already has a pending transaction with nonce {tx.nonce}",
                    code="nonce_taken",
                )
            if len(queue.nonces) >= cfg.max_per_sender:
                raise MempoolError(
                    f"the sender already has {cfg.max_per_sender} pending transactions",
                    code="sender_full",
                )
        size = tx.size
        if size > cfg.max_bytes:
            raise MempoolError(
                f"transaction of {size} bytes exceeds the mempool bound of {cfg.max_bytes} bytes",
                code="oversized",
            )
        # Plan first, evict after: a refusal (code full) must leave the pool unchanged.
        for victim in self._plan_evictions(tx):
            self._remove(victim)
        self._insert(tx, now_ms)

    def _plan_evictions(self, tx: Transaction) -> list[_Entry]:
        """The entries to evict so that ``tx`` fits, or MempoolError(full) if ``tx`` itself would
        be evicted.

        Rule: evict the highest-nonce pending transaction of the sender with the most pending
        transactions (ties: the sender whose newest transaction arrived last), and repeat.
        Evicting from the top of a sender's queue never creates a nonce gap for anyone else (only
        that sender's own later nonces are lost), and always hitting the biggest sender stops one
        sender from crowding out the others. The incoming transaction counts as pending and as
        the newest arrival, so a sender tied for the most pending loses the tie.

        Each step scans all senders: O(#senders) per evicted transaction. Fine at the default
        bounds; a heap keyed by (count, newest arrival) would be needed for far larger pools.
        """
        cfg = self.config
        excess_txs = len(self._by_hash) + 1 - cfg.max_txs
        excess_bytes = self._bytes + tx.size - cfg.max_bytes
        if excess_txs <= 0 and excess_bytes <= 0:
            return []
        # Evictions always take a sender's highest nonces, so per sender we only need how many
        # of its top entries are already planned for eviction.
        taken: dict[bytes, int] = {}
        victims: list[_Entry] = []
        while excess_txs > 0 or excess_bytes > 0:
            sender = self._biggest_sender(tx, taken)
            queue = self._by_sender.get(sender)
            remaining = len(queue.nonces) - taken.get(sender, 0) if queue is not None else 0
            top = queue.nonces[remaining - 1] if queue is not None and remaining > 0 else None
            if sender == tx.sender and (top is None or top < tx.nonce):
                raise MempoolError(
                    "mempool is full and the incoming transaction is the one that would be "
                    "evicted (its sender has the most pending transactions and it has the "
                    "highest nonce)",
                    code="full",
                )
            assert queue is not None and top is not None
            victim = queue.by_nonce[top]
            victims.append(victim)
            taken[sender] = taken.get(sender, 0) + 1
            excess_txs -= 1
            excess_bytes -= victim.tx.size
        return victims

    def _biggest_sender(self, tx: Transaction, taken: dict[bytes, int]) -> bytes:
        """The eviction target: most pending (incoming ``tx`` included, planned evictions
        excluded), ties to the sender whose newest remaining transaction arrived last."""
        best: bytes = tx.sender
        own = self._by_sender.get(tx.sender)
        own_count = 1 + (len(own.nonces) - taken.get(tx.sender, 0) if own is not None else 0)
        # The incoming transaction is the newest arrival of all, so its sender wins every tie.
        best_key = (own_count, self._seq + 1)
        for sender, queue in self._by_sender.items():
            if sender == tx.sender:
                continue
            count = len(queue.nonces) - taken.get(sender, 0)
            if count <= 0 or count < best_key[0]:
                continue
            key = (count, self._newest_remaining_seq(queue, taken.get(sender, 0)))
            if key > best_key:
                best, best_key = sender, key
        return best

    @staticmethod
    def _newest_remaining_seq(queue: _SenderQueue, taken: int) -> int:
        if taken == 0:
            return queue.newest_seq()
        gone = set(queue.nonces[len(queue.nonces) - taken :])
        return max(e.seq for n, e in queue.by_nonce.items() if n not in gone)

    def _insert(self, tx: Transaction, now_ms: int) -> None:
        self._seq += 1
        # Non-decreasing admission times keep _by_hash sorted by admission time (see expire).
        admitted = max(now_ms, self._last_admitted_ms)
        self._last_admitted_ms = admitted
        entry = _Entry(tx, admitted, self._seq)
        self._by_hash[tx.hash] = entry
        queue = self._by_sender.get(tx.sender)
        if queue is None:
            queue = self._by_sender[tx.sender] = _SenderQueue()
        queue.by_nonce[tx.nonce] = entry
        bisect.insort(queue.nonces, tx.nonce)
        self._bytes += tx.size

    def _remove(self, entry: _Entry) -> None:
        tx = entry.tx
        del self._by_hash[tx.hash]
        queue = self._by_sender[tx.sender]
        del queue.by_nonce[tx.nonce]
        del queue.nonces[bisect.bisect_left(queue.nonces, tx.nonce)]
        if not queue.nonces:
            del self._by_sender[tx.sender]
        self._bytes -= tx.size

    def has_executable(self, next_nonce: NextNonce) -> bool:
        """Whether some pending transaction could go into the next block (O(senders) at most)."""
        return any(next_nonce(sender) in queue.by_nonce
                   for sender, queue in self._by_sender.items())

    def oldest_executable_ms(self, next_nonce: NextNonce) -> int | None:
        """When the longest-waiting executable transaction was admitted (None: there is none).

        Executable: its nonce is its sender's next, so the next block could take it. A sender
        whose pending nonces start above its next nonce waits on itself, and does not count.
        O(senders).
        """
        oldest: int | None = None
        for sender, queue in self._by_sender.items():
            entry = queue.by_nonce.get(next_nonce(sender))
            if entry is not None and (oldest is None or entry.admitted_ms < oldest):
                oldest = entry.admitted_ms
        return oldest

    # -- block building -----------------------------------------------------------------------

    def select(self, next_nonce: NextNonce, max_txs: int, max_bytes: int,
               admitted_by_ms: int | None = None) -> list[Transaction]:
        """Executable transactions for a block, without removing them.

        Per sender only the contiguous run of nonces from ``next_nonce(sender)``; across senders
        round-robin, senders ordered by the arrival of their earliest pending transaction. A
        transaction that does not fit the remaining bytes is skipped and ends its sender's run
        (the sender's later nonces would not be executable without it). With
        ``admitted_by_ms``, a transaction admitted later than that ends its sender's run too.
        """
        if max_txs <= 0 or max_bytes <= 0:
            return []
        runs: deque[tuple[_SenderQueue, int]] = deque()
        for sender, queue in sorted(self._by_sender.items(), key=lambda kv: kv[1].first_seq()):
            nonce = next_nonce(sender)
            if nonce in queue.by_nonce:
                runs.append((queue, nonce))
        selected: list[Transaction] = []
        budget = max_bytes
        while runs and len(selected) < max_txs:
            queue, nonce = runs.popleft()
            entry = queue.by_nonce[nonce]
            tx = entry.tx
            if tx.size > budget or (admitted_by_ms is not None
                                    and entry.admitted_ms > admitted_by_ms):
                continue
            selected.append(tx)
            budget -= tx.size
            if nonce + 1 in queue.by_nonce:
                runs.append((queue, nonce + 1))
        return selected

    def remove_committed(self, txs: Iterable[Transaction], next_nonce: NextNonce) -> None:
        """Drops transactions included in a committed block, and every pending transaction whose
        nonce is now below its sender's next nonce.

        Only the senders of ``txs`` are re-checked: a sender's nonce advances only when one of
        its transactions is committed.
        """
        senders: set[bytes] = set()
        for tx in txs:
            senders.add(tx.sender)
            entry = self._by_hash.get(tx.hash)
            if entry is not None:
                self._remove(entry)
        for sender in senders:
            queue = self._by_sender.get(sender)
            if queue is None:
                continue
            floor = next_nonce(sender)
            stale = queue.nonces[: bisect.bisect_left(queue.nonces, floor)]
            for nonce in stale:
                self._remove(queue.by_nonce[nonce])

    def at_nonce(self, sender: bytes, nonce: int) -> Transaction | None:
        """The sender's pending transaction with ``nonce``, if any."""
        queue = self._by_sender.get(sender)
        entry = queue.by_nonce.get(nonce) if queue is not None else None
        return entry.tx if entry is not None else None

    def drop_from(self, sender: bytes, nonce: int) -> list[Transaction]:
        """Drops and returns the sender's pending transactions from ``nonce`` on, in nonce
        order (the later ones cannot be mined without the one at ``nonce``)."""
        queue = self._by_sender.get(sender)
        if queue is None:
            return []
        dropped = [queue.by_nonce[n] for n in queue.nonces[bisect.bisect_left(queue.nonces,
                                                                              nonce):]]
        for entry in dropped:
            self._remove(entry)
        return [entry.tx for entry in dropped]

    def reinject(self, txs: Iterable[Transaction], next_nonce: NextNonce, now_ms: int) -> int:
        """Puts back the transactions of blocks disconnected by a reorg; returns how many.

        They go through the same checks as ``add`` (nonce gap and eviction included); those
        refused (duplicates, nonces already used on the new branch, ...) are dropped silently.
        They are re-admitted at ``now_ms``, so their time to live starts again.
        """
        added = 0
        # Nonce order per sender, whatever order the blocks were disconnected in.
        for tx in sorted(txs, key=lambda t: t.nonce):
            try:
                self.add(tx, next_nonce(tx.sender), now_ms)
            except MempoolError:
                continue
            added += 1
        return added

    def expire(self, now_ms: int) -> list[Transaction]:
        """Drops and returns the transactions admitted more than ``ttl_ms`` before ``now_ms``."""
        deadline = now_ms - self.config.ttl_ms
        expired: list[_Entry] = []
        # _by_hash is in admission-time order (times are clamped non-decreasing in _insert).
        for entry in self._by_hash.values():
            if entry.admitted_ms >= deadline:
                break
            expired.append(entry)
        for entry in expired:
            self._remove(entry)
        return [entry.tx for entry in expired]
