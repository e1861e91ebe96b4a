"""The block store's SQLite schema and the values its methods return."""

from __future__ import annotations

from dataclasses import dataclass, field

from dualchain.chain.types import Block

SCHEMA_VERSION = 1
WORK_BYTES = 32  # cumulative work as 256-bit big-endian, so BLOB comparison orders it
MAX_WORK = (1 << (8 * WORK_BYTES)) - 1

SCHEMA = """
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
