"""The consistency audit of a block store: every table cross-checked against the stored blocks
(``BlockStore.check_consistency``; the crash tests run it after each kill)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from dualchain.chain.errors import StoreError
from dualchain.chain.types import ZERO_HASH, Block


def audit(db: sqlite3.Connection, head: bytes | None, load: Callable[[bytes], Block],
          decode: Callable[[bytes, bytes], Block]) -> list[str]:
    """The problems of a store's tables against its blocks (empty: none), read through ``db``
    in the caller's read transaction; ``head`` is the store's recorded head, ``load`` reads a
    stored block by hash, ``decode`` decodes a block row (hash, body)."""
    problems: list[str] = []

    # Every stored block: decodes, hashes to its key, agrees with its columns and parent.
    info: dict[bytes, tuple[int, bytes, int]] = {}  # hash -> (height, parent, work)
    for h, height, parent, header, body, work in db.execute(
        "SELECT hash, height, parent, header, body, work FROM blocks"
    ):
        h, parent = bytes(h), bytes(parent)
        info[h] = (height, parent, int.from_bytes(work, "big"))
        try:
            block = decode(h, bytes(body))
        except StoreError as exc:
            problems.append(exc.reason)
            continue
        if bytes(header) != block.header.encoded:
            problems.append(f"block {h.hex()}: header column differs from the block's header")
        if height != block.height or parent != block.header.parent_hash:
            problems.append(f"block {h.hex()}: height/parent columns differ from its header")
    for h, (height, parent, work) in info.items():
        if height == 0:
            if parent != ZERO_HASH:
                problems.append(f"genesis {h.hex()} has a non-zero parent")
            continue
        if parent not in info:
            problems.append(f"block {h.hex()}: parent {parent.hex()} is not stored")
        elif info[parent][0] + 1 != height:
            problems.append(f"block {h.hex()}: height is not its parent's height + 1")
        elif info[parent][2] > work:
            problems.append(f"block {h.hex()}: cumulative work below its parent's")

    # Canonical index: contiguous from 0, linked parent to child, ending at the meta head.
    canonical = [
        (int(r[0]), bytes(r[1]))
        for r in db.execute("SELECT height, hash FROM canonical ORDER BY height")
    ]
    for expected, (height, h) in enumerate(canonical):
        if height != expected:
            problems.append(f"canonical index: height {expected} missing (next is {height})")
            break
        if h not in info:
            problems.append(f"canonical block {h.hex()} at height {height} is not stored")
            continue
        if info[h][0] != height:
            problems.append(f"canonical block {h.hex()} is stored at height {info[h][0]}")
        want_parent = ZERO_HASH if height == 0 else canonical[height - 1][1]
        if info[h][1] != want_parent:
            problems.append(f"canonical block at height {height}: parent is not canonical")
    top = canonical[-1][1] if canonical else None
    if head != top:
        problems.append(
            f"meta head {head.hex() if head else None} is not the top of the canonical index "
            f"({top.hex() if top else None})"
        )

    # Transaction and nonce indexes: recomputed from the canonical blocks.
    want_txs: dict[bytes, tuple[bytes, int, int]] = {}
    want_nonces: dict[bytes, int] = {}
    for height, h in canonical:
        if h not in info:
            continue
        try:
            block = load(h)
        except StoreError:
            continue  # already reported above
        for index, tx in enumerate(block.transactions):
            if tx.hash in want_txs:
                problems.append(f"transaction {tx.hash.hex()} is twice on the canonical chain")
            want_txs[tx.hash] = (h, height, index)
            want_nonces[tx.sender] = tx.nonce + 1
    have_txs = {
        bytes(t): (bytes(b), int(ht), int(p))
        for t, b, ht, p in db.execute("SELECT tx_hash, block_hash, height, position FROM txs")
    }
    for t in want_txs.keys() - have_txs.keys():
        problems.append(f"transaction {t.hex()} is canonical but not indexed")
    for t in have_txs.keys() - want_txs.keys():
        problems.append(f"transaction {t.hex()} is indexed but not canonical")
    for t in want_txs.keys() & have_txs.keys():
        if want_txs[t] != have_txs[t]:
            problems.append(f"transaction {t.hex()} is indexed at the wrong place")
    want_nonces = {s: n for s, n in want_nonces.items() if n != 0}
    have_nonces = {
        bytes(s): int(n) for s, n in db.execute("SELECT sender, next_nonce FROM nonces")
    }
    for sender in want_nonces.keys() | have_nonces.keys():
        want, have = want_nonces.get(sender, 0), have_nonces.get(sender)
        if have is None or have != want:
            problems.append(
                f"sender {sender.hex()}: next nonce is {have}, the canonical chain says {want}"
            )
    return problems
