"""Transactions that block templates keep refusing, dropped from the mempool with a reason.

A CMBC template leaves out a transaction the chain state refuses (a conflicting anchor, a plan
that no longer reproduces, a timestamp grown too old for the block) and every later one of its
sender, whose nonces would skip. Left in the mempool it would stay first in line for good and
block all that sender's records. So once templates on ``EVICT_AFTER_HEADS`` different parents
refused it (the chain moved on and it is still refused: not a passing state), it is dropped with
every later pending transaction of its sender, and each dropped hash keeps its code and reason
for ``GetTxStatus``. The sender reads them there and signs its later records again from the
nonce ``GetNonce`` now gives (``dualchain.chain.outbox``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

from dualchain.chain.errors import ValidationError
from dualchain.chain.mempool import Mempool
from dualchain.chain.types import Transaction
from dualchain.chain.validation import LedgerParams, check_timestamp

log = logging.getLogger(__name__)

EVICT_AFTER_HEADS = 3
DROPPED_KEPT = 4096  # reasons kept for GetTxStatus, oldest forgotten first
FOLLOWS_CODE = "earlier_dropped"


class StuckTxs:
    def __init__(self, mempool: Mempool, evict_after_heads: int = EVICT_AFTER_HEADS,
                 on_drop: Callable[[str, int], None] | None = None) -> None:
        self.mempool = mempool
        self.evict_after_heads = evict_after_heads
        self.on_drop = on_drop  # (code, how many) for the metrics
        # tx -> (last parent, parents seen, why)
        self._refused: dict[bytes, tuple[bytes, int, ValidationError]] = {}
        self._dropped: OrderedDict[bytes, tuple[str, str]] = OrderedDict()

    def dropped(self, tx_hash: bytes) -> tuple[str, str] | None:
        """(code, reason) of a transaction dropped here, if it was (and is still remembered)."""
        return self._dropped.get(tx_hash)

    def observe(self, parent: bytes, taken: Sequence[Transaction],
                refused: Sequence[tuple[Transaction, ValidationError]]) -> list[Transaction]:
        """Takes note of a template on ``parent``: ``taken`` went in, ``refused`` (each sender's
        first refused transaction) did not. Returns the transactions dropped now."""
        for tx in taken:
            self._refused.pop(tx.hash, None)
        dropped: list[Transaction] = []
        for tx, exc in refused:
            last, seen, _ = self._refused.get(tx.hash, (b"", 0, exc))
            if last != parent:
                seen += 1
            if seen < self.evict_after_heads:
                self._refused[tx.hash] = (parent, seen, exc)
                continue
            del self._refused[tx.hash]
            dropped += self._drop(tx, exc, seen)
        if len(self._refused) > len(self.mempool):  # some were committed or evicted since
            self._refused = {h: v for h, v in self._refused.items() if h in self.mempool}
        return dropped

    def replace(self, pending: Transaction | None, new: Transaction) -> list[Transaction]:
        """Makes room for ``new`` when ``pending``, the sender's transaction at its nonce, is
        one templates refuse: drops it (and its sender's later ones) as if its count were
        full. Its sender signed ``new`` over that nonce (another daemon dropped the old one
        first and told the sender so); turning it away as ``nonce_taken`` would leave this
        daemon without it for good, as transactions are gossiped once."""
        if pending is None or pending.hash == new.hash or pending.hash not in self._refused:
            return []
        _, seen, exc = self._refused.pop(pending.hash)
        return self._drop(pending, exc, seen)

    def _drop(self, tx: Transaction, exc: ValidationError, heads: int) -> list[Transaction]:
        if tx.hash not in self.mempool:
            return []
        txs = self.mempool.drop_from(tx.sender, tx.nonce)  # tx itself first
        self._remember(tx.hash, exc.code,
                       f"refused in block templates on {heads} heads: {exc.reason}")
        for later in txs[1:]:
            self._remember(later.hash, FOLLOWS_CODE,
                           f"nonce {tx.nonce} of its sender ({tx.hash.hex()[:16]}) was dropped "
                           f"({exc.code}); sign it again from the sender's next nonce")
        log.warning("dropped transaction %s of %s (nonce %d) and %d later ones of its sender: "
                    "%s", tx.hash.hex()[:16], tx.sender.hex()[:16], tx.nonce, len(txs) - 1,
                    exc.reason)
        if self.on_drop is not None:
            self.on_drop(exc.code, 1)
            if len(txs) > 1:
                self.on_drop(FOLLOWS_CODE, len(txs) - 1)
        return txs

    def _remember(self, tx_hash: bytes, code: str, reason: str) -> None:
        self._dropped[tx_hash] = (code, reason)
        self._dropped.move_to_end(tx_hash)
        while len(self._dropped) > DROPPED_KEPT:
            self._dropped.popitem(last=False)


def timely_txs(txs: Sequence[Transaction], timestamp_ms: int, params: LedgerParams,
               refused: list[tuple[Transaction, ValidationError]]) -> list[Transaction]:
    """``txs`` whose timestamps a block stamped ``timestamp_ms`` accepts; a refused one is left
    out with every later one of its sender (their nonces would skip), and a stale one (time
    only moves on) is appended to ``refused``."""
    kept: list[Transaction] = []
    late: set[bytes] = set()
    for tx in txs:
        if tx.sender in late:
            continue
        try:
            check_timestamp(tx.timestamp_ms, timestamp_ms, params, "transaction")
        except ValidationError as exc:
            late.add(tx.sender)
            if exc.code == "stale_timestamp":
                refused.append((tx, exc))
            continue
        kept.append(tx)
    return kept
