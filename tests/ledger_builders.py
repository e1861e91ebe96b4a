"""Small builders of real, signed ledger values for tests, over the library's own signing helpers
(``sign_transaction``, ``build_block``) with test defaults. Signing costs about a millisecond, so
keep counts modest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dualchain.chain.identity import Signer
from dualchain.chain.types import Block, BlockHeader, Transaction, TxKind
from dualchain.chain.validation import build_block, sign_transaction

BASE_TIMESTAMP_MS = 1_700_000_000_000


def make_signer(index: int) -> Signer:
    """A deterministic identity, distinct per index: the same keys in every run."""
    return Signer(index.to_bytes(32, "big"))


def make_tx(
    signer: Signer,
    nonce: int,
    chain_id: str = "test",
    payload: bytes = b"memo",
    kind: TxKind = TxKind.MEMO,
    timestamp_ms: int | None = None,
) -> Transaction:
    """A signed transaction from ``signer`` with the given nonce."""
    timestamp = BASE_TIMESTAMP_MS + nonce if timestamp_ms is None else timestamp_ms
    return sign_transaction(signer, chain_id, kind, payload, nonce, timestamp)


def make_block(
    parent: BlockHeader | None,
    txs: Sequence[Transaction],
    proposer: Signer,
    chain_id: str = "test",
    timestamp_ms: int | None = None,
    **header_fields: Any,
) -> Block:
    """A signed block on top of ``parent`` (genesis when None) holding ``txs``.

    Extra keyword arguments set other header fields (``view``, ``app_hash``, ...); vary one of
    them, or the timestamp, to make two different siblings with the same transactions.
    """
    if timestamp_ms is None:
        timestamp_ms = BASE_TIMESTAMP_MS if parent is None else parent.timestamp_ms + 1000
    return build_block(proposer, parent, txs, chain_id, timestamp_ms, **header_fields)
