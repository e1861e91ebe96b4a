"""The SQLite block store: a block tree with side branches, the canonical chain and its indexes.

Every block ever accepted stays in the tree (``blocks``), so a fork choice can switch to a side
branch later without fetching it again. The canonical chain is a separate index (height -> hash)
with two derived indexes over its transactions: where each transaction sits, and the next nonce of
each sender. A change of head rewrites all of them in one SQLite transaction, so a crash leaves
either the old chain or the new one, never a mix.

The store only records; it does not check signatures, nonces or proofs of work. Callers validate
blocks before they hand them over.

Durability: WAL journal with ``synchronous=FULL``, so a method that returned has fsynced its commit.

Threads: one ``BlockStore`` is used from one thread at a time. The connection is opened with
``check_same_thread=False`` only so that an executor thread may own it; callers must serialise.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from dualchain.chain.errors import DecodeError, NotFoundError, StoreError
from dualchain.chain.merkle import merkle_root
from dualchain.chain.store_audit import audit
from dualchain.chain.store_schema import (
    MAX_WORK,
    SCHEMA,
    SCHEMA_VERSION,
    WORK_BYTES,
    HeadChange,
    TxLocation,
)
from dualchain.chain.types import HASH_BYTES, ZERO_HASH, Block, BlockHeader, Transaction


def _check_hash(h: bytes) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_BYTES:
        raise ValueError(f"a block or transaction hash is {HASH_BYTES} bytes")


class BlockStore:
    """Blocks in a SQLite file: the tree of all stored blocks plus the canonical chain."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open block store {self.path}: {exc}") from exc
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> None:
        try:
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"block store {self.path}: cannot use WAL journal (got {mode})")
            # Every column we read is a BLOB or an INTEGER; reading TEXT as bytes keeps a damaged
            # row (say, a TEXT-typed body) reportable instead of failing with a UTF-8 error.
            self._db.text_factory = bytes
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._write():
                exists = self._db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
                ).fetchone()
                if not exists:
                    # Statement by statement: executescript() would COMMIT our transaction.
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    self._set_meta("schema_version", str(SCHEMA_VERSION).encode())
            version = self._get_meta("schema_version")
        except sqlite3.Error as exc:
            raise StoreError(f"block store {self.path} is unusable: {exc}") from exc
        if version != str(SCHEMA_VERSION).encode():
            shown = version.decode(errors="replace") if version is not None else "missing"
            raise StoreError(
                f"block store {self.path} has schema version {shown}; this build needs "
                f"{SCHEMA_VERSION}"
            )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BlockStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One atomic write: BEGIN IMMEDIATE takes the write lock up front, so no upgrade fails."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turns low-level sqlite failures into StoreError naming the operation."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"block store {self.path}: {what} failed: {exc}") from exc
        except OverflowError as exc:  # SQLite integers are signed 64-bit
            raise StoreError(f"block store {self.path}: {what}: value too large: {exc}") from exc

    def _get_meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _set_meta(self, key: str, value: bytes) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    # -- writes ------------------------------------------------------------------------------

    def add_block(self, block: Block, work: int = 0) -> bool:
        """Puts a block into the tree (not the canonical chain); False if it was already there.

        Its parent must be stored (genesis: height 0, all-zero parent), its height one above the
        parent's. Cumulative work is the parent's plus ``work``.
        """
        with self._guard(f"adding block {block.hash.hex()}"), self._write():
            return self._insert(block, work)

    def set_head(self, block_hash: bytes, known: Block | None = None) -> HeadChange:
        """Makes a stored block the canonical tip, rewriting the chain back to the fork point.

        ``known`` is the new tip in hand (the caller just validated it), so it is not read back
        and decoded."""
        _check_hash(block_hash)
        with self._guard(f"setting head to {block_hash.hex()}"), self._write():
            return self._switch_head(block_hash, known)

    def append(self, block: Block, work: int = 0, certificate: bytes | None = None) -> None:
        """Stores a block that extends the head (or genesis on an empty store) and makes it head.

        Both happen in one transaction. A block already in the tree keeps the work it was stored
        with.
        """
        with self._guard(f"appending block {block.hash.hex()}"), self._write():
            head = self._get_meta("head")
            expected_parent = ZERO_HASH if head is None else head
            if block.header.parent_hash != expected_parent:
                raise StoreError(
                    f"block {block.hash.hex()} at height {block.height} does not extend the head "
                    f"{expected_parent.hex() if head else '(empty store)'}"
                )
            # The certificate goes in with the row: setting it afterwards rewrote the whole row,
            # body included (a 4,096-transaction block: 11 MB written twice).
            if not self._insert(block, work, certificate) and certificate is not None:
                self._put_certificate(block.hash, certificate)
            self._switch_head(block.hash, known=block)

    def _insert(self, block: Block, work: int, certificate: bytes | None = None) -> bool:
        if work < 0:
            raise ValueError("block work cannot be negative")
        h = block.hash
        if self._db.execute("SELECT 1 FROM blocks WHERE hash=?", (h,)).fetchone():
            return False
        parent_hash = block.header.parent_hash
        if block.height == 0:
            if parent_hash != ZERO_HASH:
                raise StoreError(f"genesis block {h.hex()} must have an all-zero parent hash")
            other = self._db.execute("SELECT hash FROM blocks WHERE height=0").fetchone()
            if other is not None:
                raise StoreError(
                    f"genesis block {h.hex()} refused: store already has genesis "
                    f"{bytes(other[0]).hex()}"
                )
            parent_work = 0
        else:
            row = self._db.execute(
                "SELECT height, work FROM blocks WHERE hash=?", (parent_hash,)
            ).fetchone()
            if row is None:
                raise StoreError(
                    f"block {h.hex()} at height {block.height}: parent {parent_hash.hex()} "
                    "is not stored"
                )
            if row[0] + 1 != block.height:
                raise StoreError(
                    f"block {h.hex()} has height {block.height} but its parent has height {row[0]}"
                )
            parent_work = int.from_bytes(row[1], "big")
        total = parent_work + work
        if total > MAX_WORK:
            raise StoreError(f"block {h.hex()}: cumulative work overflows 256 bits")
        arrival = self._db.execute("SELECT COALESCE(MAX(arrival), 0) + 1 FROM blocks").fetchone()[0]
        self._db.execute(
            "INSERT INTO blocks(hash, height, parent, header, body, work, arrival, certificate) "
            "VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
            (
                h,
                block.height,
                parent_hash,
                block.header.encoded,
                block.encoded,
                total.to_bytes(WORK_BYTES, "big"),
                arrival,
                certificate,
            ),
        )
        return True

    def _switch_head(self, target: bytes, known: Block | None = None) -> HeadChange:
        """Moves the head; ``known`` is a block in hand that need not be read back and decoded."""
        row = self._db.execute(
            "SELECT height, parent FROM blocks WHERE hash=?", (target,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"block {target.hex()} is not stored; cannot make it head")
        # Walk back from the target until a canonical block (the fork point) or past genesis.
        to_connect: list[bytes] = []
        h, height, parent = target, row[0], bytes(row[1])
        while self._canonical_at(height) != h:
            to_connect.append(h)
            if height == 0:
                height = -1
                break
            h = parent
            prow = self._db.execute(
                "SELECT height, parent FROM blocks WHERE hash=?", (h,)
            ).fetchone()
            if prow is None:
                raise StoreError(f"block {h.hex()} is referenced as a parent but not stored")
            height, parent = prow[0], bytes(prow[1])
        fork_height = height

        disconnected: list[Block] = []
        for (old_hash,) in self._db.execute(
            "SELECT hash FROM canonical WHERE height > ? ORDER BY height DESC", (fork_height,)
        ).fetchall():
            block = self._load(bytes(old_hash))
            # Reverse order, so a sender with several txs ends at its earliest nonce.
            for tx in reversed(block.transactions):
                self._db.execute("DELETE FROM txs WHERE tx_hash=?", (tx.hash,))
                self._put_nonce(tx.sender, tx.nonce)
            self._db.execute("DELETE FROM canonical WHERE height=?", (block.height,))
            disconnected.append(block)

        connected: list[Block] = []
        for new_hash in reversed(to_connect):
            block = known if known is not None and known.hash == new_hash else self._load(new_hash)
            self._db.execute(
                "INSERT INTO canonical(height, hash) VALUES(?, ?)", (block.height, new_hash)
            )
            try:
                self._db.executemany(
                    "INSERT INTO txs(tx_hash, block_hash, height, position) VALUES(?,?,?,?)",
                    [(tx.hash, new_hash, block.height, i)
                     for i, tx in enumerate(block.transactions)],
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(
                    f"a transaction in block {new_hash.hex()} is already on the canonical chain"
                ) from exc
            # One row per sender: its last nonce in the block is what counts.
            self._put_nonces({tx.sender: tx.nonce + 1 for tx in block.transactions})
            connected.append(block)
        self._set_meta("head", target)
        return HeadChange(disconnected=disconnected, connected=connected)

    def _put_nonces(self, next_nonces: dict[bytes, int]) -> None:
        self._db.executemany(
            "INSERT INTO nonces(sender, next_nonce) VALUES(?, ?) "
            "ON CONFLICT(sender) DO UPDATE SET next_nonce=excluded.next_nonce",
            list(next_nonces.items()),
        )

    def _put_nonce(self, sender: bytes, next_nonce: int) -> None:
        if next_nonce == 0:
            self._db.execute("DELETE FROM nonces WHERE sender=?", (sender,))
        else:
            self._db.execute(
                "INSERT INTO nonces(sender, next_nonce) VALUES(?, ?) "
                "ON CONFLICT(sender) DO UPDATE SET next_nonce=excluded.next_nonce",
                (sender, next_nonce),
            )

    def set_certificate(self, block_hash: bytes, certificate: bytes) -> None:
        """Records the consensus proof of a stored block (e.g. its commit quorum certificate)."""
        _check_hash(block_hash)
        with self._guard(f"certifying block {block_hash.hex()}"), self._write():
            self._put_certificate(block_hash, certificate)

    def _put_certificate(self, block_hash: bytes, certificate: bytes) -> None:
        cursor = self._db.execute(
            "UPDATE blocks SET certificate=? WHERE hash=?", (certificate, block_hash)
        )
        if cursor.rowcount != 1:
            raise NotFoundError(f"block {block_hash.hex()} is not stored; cannot certify it")

    def get_certificate(self, block_hash: bytes) -> bytes | None:
        """The recorded consensus proof of a block, or None."""
        _check_hash(block_hash)
        with self._guard(f"reading the certificate of {block_hash.hex()}"):
            row = self._db.execute(
                "SELECT certificate FROM blocks WHERE hash=?", (block_hash,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"block {block_hash.hex()} is not stored")
        return None if row[0] is None else bytes(row[0])

    # -- reads -------------------------------------------------------------------------------

    def _canonical_at(self, height: int) -> bytes | None:
        row = self._db.execute("SELECT hash FROM canonical WHERE height=?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def _load(self, h: bytes) -> Block:
        row = self._db.execute("SELECT body FROM blocks WHERE hash=?", (h,)).fetchone()
        if row is None:
            raise NotFoundError(f"block {h.hex()} is not stored")
        return self._decode_block(h, bytes(row[0]))

    @staticmethod
    def _decode_block(h: bytes, data: bytes) -> Block:
        try:
            block = Block.decode(data)
        except DecodeError as exc:
            raise StoreError(f"stored block {h.hex()} does not decode: {exc.reason}") from exc
        if block.hash != h:
            raise StoreError(
                f"stored block {h.hex()} decodes to a block with hash {block.hash.hex()}"
            )
        # The header hash does not cover the body: the Merkle root is what ties them together.
        if merkle_root([tx.hash for tx in block.transactions]) != block.header.tx_root:
            raise StoreError(f"stored block {h.hex()}: transactions do not match the tx root")
        return block

    def head_hash(self) -> bytes | None:
        """The canonical tip's hash, or None on an empty store."""
        with self._guard("reading the head"):
            return self._get_meta("head")

    def head(self) -> BlockHeader | None:
        """The canonical tip's header, or None on an empty store."""
        h = self.head_hash()
        return None if h is None else self.get_header(h)

    def height(self) -> int:
        """The canonical tip's height; -1 on an empty store."""
        with self._guard("reading the height"):
            row = self._db.execute(
                "SELECT b.height FROM meta m JOIN blocks b ON b.hash = m.value WHERE m.key='head'"
            ).fetchone()
        return -1 if row is None else int(row[0])

    def has_block(self, h: bytes) -> bool:
        """Whether the block is stored (canonical or on a side branch)."""
        _check_hash(h)
        with self._guard("looking up a block"):
            return (
                self._db.execute("SELECT 1 FROM blocks WHERE hash=?", (h,)).fetchone() is not None
            )

    def get_block(self, h: bytes) -> Block:
        """A stored block (NotFoundError if absent, StoreError if its bytes are damaged)."""
        _check_hash(h)
        with self._guard(f"reading block {h.hex()}"):
            return self._load(h)

    def get_header(self, h: bytes) -> BlockHeader:
        """A stored block's header, without decoding its transactions."""
        _check_hash(h)
        with self._guard(f"reading header {h.hex()}"):
            row = self._db.execute("SELECT header FROM blocks WHERE hash=?", (h,)).fetchone()
        if row is None:
            raise NotFoundError(f"block {h.hex()} is not stored")
        try:
            header = BlockHeader.decode(bytes(row[0]))
        except DecodeError as exc:
            raise StoreError(
                f"stored header of block {h.hex()} does not decode: {exc.reason}"
            ) from exc
        if header.hash != h:
            raise StoreError(f"stored header of block {h.hex()} hashes to {header.hash.hex()}")
        return header

    def headers(self) -> list[tuple[BlockHeader, int]]:
        """Every stored header with its cumulative work, in arrival order (a fork choice
        rebuilds its in-memory tree from this on start)."""
        with self._guard("listing headers"):
            rows = self._db.execute(
                "SELECT hash, header, work FROM blocks ORDER BY arrival").fetchall()
        out = []
        for h, raw, work in rows:
            try:
                header = BlockHeader.decode(bytes(raw))
            except DecodeError as exc:
                raise StoreError(f"stored header of block {bytes(h).hex()} does not decode: "
                                 f"{exc.reason}") from exc
            out.append((header, int.from_bytes(work, "big")))
        return out

    def canonical_hash(self, height: int) -> bytes | None:
        """The canonical block's hash at a height, or None above the head."""
        with self._guard("reading the canonical index"):
            return self._canonical_at(height)

    def canonical_block_bytes(self, height: int) -> bytes:
        """The canonical block at a height as stored (its canonical encoding), not decoded: for
        serving peers, who check what they receive anyway."""
        with self._guard("reading the canonical chain"):
            row = self._db.execute(
                "SELECT b.body FROM canonical c JOIN blocks b ON b.hash = c.hash "
                "WHERE c.height=?", (height,)).fetchone()
        if row is None:
            raise NotFoundError(f"no canonical block at height {height}")
        return bytes(row[0])

    def canonical_block(self, height: int) -> Block:
        """The canonical block at a height (NotFoundError above the head)."""
        h = self.canonical_hash(height)
        if h is None:
            raise NotFoundError(f"no canonical block at height {height}")
        return self.get_block(h)

    def find_tx(self, tx_hash: bytes) -> TxLocation | None:
        """Where a transaction sits on the canonical chain (side branches are not indexed)."""
        _check_hash(tx_hash)
        with self._guard("reading the transaction index"):
            row = self._db.execute(
                "SELECT block_hash, height, position FROM txs WHERE tx_hash=?", (tx_hash,)
            ).fetchone()
        return None if row is None else TxLocation(bytes(row[0]), int(row[1]), int(row[2]))

    def get_tx(self, tx_hash: bytes) -> Transaction:
        """A canonical transaction by hash (NotFoundError if not on the canonical chain)."""
        loc = self.find_tx(tx_hash)
        if loc is None:
            raise NotFoundError(f"transaction {tx_hash.hex()} is not on the canonical chain")
        block = self.get_block(loc.block_hash)
        if loc.index >= len(block.transactions) or block.transactions[loc.index].hash != tx_hash:
            raise StoreError(f"transaction index for {tx_hash.hex()} points at the wrong place")
        return block.transactions[loc.index]

    def next_nonce(self, sender: bytes) -> int:
        """The nonce the sender's next canonical transaction must carry (0 if never seen)."""
        with self._guard("reading nonces"):
            row = self._db.execute(
                "SELECT next_nonce FROM nonces WHERE sender=?", (sender,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def cumulative_work(self, h: bytes) -> int:
        """Total work from genesis up to and including the block."""
        _check_hash(h)
        with self._guard("reading work"):
            row = self._db.execute("SELECT work FROM blocks WHERE hash=?", (h,)).fetchone()
        if row is None:
            raise NotFoundError(f"block {h.hex()} is not stored")
        return int.from_bytes(row[0], "big")

    def tips(self) -> list[bytes]:
        """Stored blocks without children (the ends of all branches), in arrival order."""
        with self._guard("listing tips"):
            rows = self._db.execute(
                "SELECT hash FROM blocks b WHERE NOT EXISTS "
                "(SELECT 1 FROM blocks c WHERE c.parent = b.hash) ORDER BY arrival"
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    # -- audit -------------------------------------------------------------------------------

    def check_consistency(self) -> list[str]:
        """Cross-checks every table against the stored blocks; returns problems (empty if none).

        Reads in one transaction so a concurrent writer (another process) cannot skew the view.
        """
        with self._guard("checking consistency"):
            self._db.execute("BEGIN")
            try:
                return audit(self._db, self._get_meta("head"), self._load, self._decode_block)
            finally:
                self._db.execute("COMMIT")
