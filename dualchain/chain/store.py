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
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from dualchain.chain.errors import DecodeError, NotFoundError, StoreError
from dualchain.chain.merkle import merkle_root
from dualchain.chain.types import HASH_BYTES, ZERO_HASH, Block, BlockHeader, Transaction

SCHEMA_VERSION = 1
WORK_BYTES = 32  # cumulative work as 256-bit big-endian, so BLOB comparison orders it
MAX_WORK = (1 << (8 * WORK_BYTES)) - 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE blocks (
    hash    BLOB PRIMARY KEY,
    height  INTEGER NOT NULL,
    parent  BLOB NOT NULL,             -- 32 zero bytes for genesis, hence no foreign key
    header  BLOB NOT NULL,             -- BlockHeader.encoded
    body    BLOB NOT NULL,             -- Block.encoded (header included)
    work    BLOB NOT NULL,             -- cumulative work up to and including this block
    arrival INTEGER NOT NULL UNIQUE,   -- insertion order: first-seen tie-break for fork choice
    certificate BLOB                   -- consensus proof of the block (committee: commit QC)
);
CREATE INDEX blocks_parent ON blocks(parent);
CREATE INDEX blocks_work ON blocks(work, arrival);
CREATE TABLE canonical (
    height INTEGER PRIMARY KEY,
    hash   BLOB NOT NULL UNIQUE REFERENCES blocks(hash)
);
CREATE TABLE txs (
    tx_hash    BLOB PRIMARY KEY,
    block_hash BLOB NOT NULL REFERENCES blocks(hash),
    height     INTEGER NOT NULL,
    position   INTEGER NOT NULL
);
CREATE TABLE nonces (sender BLOB PRIMARY KEY, next_nonce INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class HeadChange:
    """What a change of head did: blocks taken off (newest first) and put on (oldest first)."""

    disconnected: list[Block] = field(default_factory=list)
    connected: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class TxLocation:
    """Where a canonical transaction sits."""

    block_hash: bytes
    height: int
    index: int


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
                    for statement in _SCHEMA.split(";"):
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
                return self._audit()
            finally:
                self._db.execute("COMMIT")

    def _audit(self) -> list[str]:
        problems: list[str] = []
        db = self._db

        # Every stored block: decodes, hashes to its key, agrees with its columns and parent.
        info: dict[bytes, tuple[int, bytes, int]] = {}  # hash -> (height, parent, work)
        for h, height, parent, header, body, work in db.execute(
            "SELECT hash, height, parent, header, body, work FROM blocks"
        ):
            h, parent = bytes(h), bytes(parent)
            info[h] = (height, parent, int.from_bytes(work, "big"))
            try:
                block = self._decode_block(h, bytes(body))
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
        head = self._get_meta("head")
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
                block = self._load(h)
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
