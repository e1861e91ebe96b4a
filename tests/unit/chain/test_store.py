"""BlockStore: the block tree, the canonical chain, its indexes, reorgs, reopen and audits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from dualchain.chain.errors import NotFoundError, StoreError
from dualchain.chain.identity import Signer
from dualchain.chain.store import SCHEMA_VERSION, BlockStore, HeadChange, TxLocation
from dualchain.chain.types import Block
from tests.ledger_builders import make_block, make_signer, make_tx


@dataclass(frozen=True)
class Forks:
    """G - A1 - A2 (main) and G - B1 - B2 - B3 (side); ``shared`` is in both A1 and B1."""

    alice: Signer
    bob: Signer
    g: Block
    a1: Block
    a2: Block
    b1: Block
    b2: Block
    b3: Block


@pytest.fixture(scope="module")
def forks() -> Forks:
    alice, bob, miner = make_signer(1), make_signer(2), make_signer(3)
    shared = make_tx(alice, 0, payload=b"shared")
    g = make_block(None, [], miner)
    a1 = make_block(g.header, [shared, make_tx(alice, 1, payload=b"a")], miner)
    a2 = make_block(a1.header, [make_tx(alice, 2, payload=b"a")], miner)
    b1 = make_block(g.header, [make_tx(bob, 0, payload=b"b"), shared], miner, view=1)
    b2 = make_block(b1.header, [make_tx(alice, 1, payload=b"b")], miner)
    b3 = make_block(b2.header, [make_tx(bob, 1, payload=b"b")], miner)
    return Forks(alice, bob, g, a1, a2, b1, b2, b3)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "chain.db"


@pytest.fixture
def store(path: Path) -> Iterator[BlockStore]:
    with BlockStore(path) as s:
        yield s


@pytest.fixture
def main_chain(store: BlockStore, forks: Forks) -> BlockStore:
    for block in (forks.g, forks.a1, forks.a2):
        store.append(block, work=10)
    return store


def raw(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(sql, args)
    db.close()


def test_empty_store(store: BlockStore) -> None:
    assert store.head() is None
    assert store.head_hash() is None
    assert store.height() == -1
    assert store.canonical_hash(0) is None
    assert store.tips() == []
    assert store.next_nonce(b"\x01" * 32) == 0
    assert store.check_consistency() == []
    with pytest.raises(NotFoundError):
        store.canonical_block(0)


def test_append_chain_and_reads(main_chain: BlockStore, forks: Forks) -> None:
    s, f = main_chain, forks
    assert s.height() == 2
    assert s.head_hash() == f.a2.hash
    assert s.head() == f.a2.header
    assert [s.canonical_hash(h) for h in range(4)] == [f.g.hash, f.a1.hash, f.a2.hash, None]
    assert s.canonical_block(1) == f.a1
    assert s.get_block(f.a1.hash) == f.a1
    assert s.get_header(f.a2.hash) == f.a2.header
    assert s.has_block(f.a1.hash) and not s.has_block(f.b1.hash)
    assert s.cumulative_work(f.g.hash) == 10
    assert s.cumulative_work(f.a2.hash) == 30
    assert s.tips() == [f.a2.hash]

    second = f.a1.transactions[1]
    assert s.find_tx(second.hash) == TxLocation(f.a1.hash, 1, 1)
    assert s.get_tx(second.hash) == second
    assert s.find_tx(f.b2.transactions[0].hash) is None
    with pytest.raises(NotFoundError):
        s.get_tx(f.b2.transactions[0].hash)
    assert s.next_nonce(f.alice.id) == 3
    assert s.next_nonce(f.bob.id) == 0
    assert s.check_consistency() == []


def test_missing_block_reads(store: BlockStore, forks: Forks) -> None:
    with pytest.raises(NotFoundError):
        store.get_block(forks.g.hash)
    with pytest.raises(NotFoundError):
        store.get_header(forks.g.hash)
    with pytest.raises(NotFoundError):
        store.cumulative_work(forks.g.hash)
    with pytest.raises(NotFoundError):
        store.set_head(forks.g.hash)
    with pytest.raises(ValueError):
        store.get_block(b"short")


def test_add_block_is_idempotent_and_leaves_head(store: BlockStore, forks: Forks) -> None:
    assert store.add_block(forks.g) is True
    assert store.add_block(forks.g) is False
    assert store.head_hash() is None  # add_block never moves the head
    assert store.tips() == [forks.g.hash]


def test_side_branch_kept_and_reorg_back_and_forth(main_chain: BlockStore, forks: Forks) -> None:
    s, f = main_chain, forks
    for block in (f.b1, f.b2, f.b3):
        assert s.add_block(block, work=10)
    assert s.head_hash() == f.a2.hash
    assert s.tips() == [f.a2.hash, f.b3.hash]
    assert s.cumulative_work(f.b3.hash) == 40

    change = s.set_head(f.b3.hash)
    assert change == HeadChange(disconnected=[f.a2, f.a1], connected=[f.b1, f.b2, f.b3])
    assert s.height() == 3 and s.head_hash() == f.b3.hash
    assert [s.canonical_hash(h) for h in range(4)] == [f.g.hash, f.b1.hash, f.b2.hash, f.b3.hash]
    shared = f.a1.transactions[0]
    assert s.find_tx(shared.hash) == TxLocation(f.b1.hash, 1, 1)  # moved with the branch
    assert s.find_tx(f.a1.transactions[1].hash) is None
    assert s.find_tx(f.a2.transactions[0].hash) is None
    assert s.find_tx(f.b2.transactions[0].hash) == TxLocation(f.b2.hash, 2, 0)
    assert s.next_nonce(f.alice.id) == 2
    assert s.next_nonce(f.bob.id) == 2
    assert s.check_consistency() == []

    back = s.set_head(f.a2.hash)
    assert back == HeadChange(disconnected=[f.b3, f.b2, f.b1], connected=[f.a1, f.a2])
    assert s.height() == 2
    assert s.find_tx(shared.hash) == TxLocation(f.a1.hash, 1, 0)
    assert s.find_tx(f.b3.transactions[0].hash) is None
    assert s.next_nonce(f.alice.id) == 3
    assert s.next_nonce(f.bob.id) == 0
    assert s.check_consistency() == []
    # Bob's nonce rolled back to 0: his row is gone rather than stored as 0.
    db = sqlite3.connect(s.path)
    assert db.execute("SELECT COUNT(*) FROM nonces WHERE sender=?", (f.bob.id,)).fetchone() == (0,)
    db.close()


def test_set_head_to_head_and_to_ancestor(main_chain: BlockStore, forks: Forks) -> None:
    s, f = main_chain, forks
    assert s.set_head(f.a2.hash) == HeadChange([], [])
    assert s.set_head(f.a1.hash) == HeadChange(disconnected=[f.a2], connected=[])
    assert s.height() == 1
    assert s.next_nonce(f.alice.id) == 2
    assert s.find_tx(f.a2.transactions[0].hash) is None
    assert s.check_consistency() == []
    s.append(f.a2)  # the stored block extends the head again
    assert s.head_hash() == f.a2.hash and s.next_nonce(f.alice.id) == 3


def test_append_refuses_non_head_parent(main_chain: BlockStore, forks: Forks) -> None:
    with pytest.raises(StoreError, match="does not extend the head"):
        main_chain.append(forks.b1)
    assert not main_chain.has_block(forks.b1.hash)  # refused whole, nothing stored
    with pytest.raises(StoreError, match="does not extend the head"):
        main_chain.append(forks.g)


def test_append_refuses_non_genesis_on_empty_store(store: BlockStore, forks: Forks) -> None:
    with pytest.raises(StoreError, match="empty store"):
        store.append(forks.a1)
    assert store.height() == -1


def test_unknown_parent_and_bad_height(store: BlockStore, forks: Forks) -> None:
    with pytest.raises(StoreError, match="is not stored"):
        store.add_block(forks.a1)
    store.add_block(forks.g)
    wrong_height = Block(replace(forks.a2.header, parent_hash=forks.g.hash), ())
    with pytest.raises(StoreError, match="height"):
        store.add_block(wrong_height)
    other_genesis = make_block(None, [], make_signer(9), timestamp_ms=5)
    with pytest.raises(StoreError, match="already has genesis"):
        store.add_block(other_genesis)
    assert store.tips() == [forks.g.hash]


def test_failed_set_head_rolls_back_everything(main_chain: BlockStore, forks: Forks) -> None:
    # A block repeating a canonical transaction cannot be indexed: the whole switch must undo.
    dup = make_block(forks.a2.header, [forks.a1.transactions[0]], make_signer(3))
    main_chain.add_block(dup)
    with pytest.raises(StoreError, match="already on the canonical chain"):
        main_chain.set_head(dup.hash)
    assert main_chain.head_hash() == forks.a2.hash
    assert main_chain.canonical_hash(3) is None
    assert main_chain.next_nonce(forks.alice.id) == 3
    assert main_chain.check_consistency() == []


def test_reopen_finds_same_state(path: Path, forks: Forks) -> None:
    f = forks
    with BlockStore(path) as s:
        for block in (f.g, f.a1, f.a2):
            s.append(block, work=7)
        for block in (f.b1, f.b2, f.b3):
            s.add_block(block, work=7)
        s.set_head(f.b3.hash)
    with BlockStore(path) as s:
        assert s.head_hash() == f.b3.hash
        assert s.height() == 3
        assert s.get_block(f.a2.hash) == f.a2  # side branch survived too
        assert s.tips() == [f.a2.hash, f.b3.hash]
        assert s.find_tx(f.b3.transactions[0].hash) == TxLocation(f.b3.hash, 3, 0)
        assert s.next_nonce(f.bob.id) == 2
        assert s.cumulative_work(f.b3.hash) == 28
        assert s.check_consistency() == []


def test_work_is_big_and_orders_as_blob(store: BlockStore, forks: Forks) -> None:
    big = 1 << 200
    store.append(forks.g, work=big)
    store.append(forks.a1, work=1)
    assert store.cumulative_work(forks.a1.hash) == big + 1
    db = sqlite3.connect(store.path)
    order = [bytes(r[0]) for r in db.execute("SELECT hash FROM blocks ORDER BY work")]
    db.close()
    assert order == [forks.g.hash, forks.a1.hash]
    with pytest.raises(StoreError, match="overflows"):
        store.append(forks.a2, work=1 << 256)


# name -> (raw SQL, its arguments, a phrase the audit must report)
CORRUPTIONS: dict[str, tuple[str, tuple[object, ...], str]] = {
    "tx index row deleted": ("DELETE FROM txs WHERE position=1", (), "canonical but not indexed"),
    "tx index wrong position": (
        "UPDATE txs SET position=position+5 WHERE height=2",
        (),
        "indexed at the wrong place",
    ),
    "tx index extra row": (
        "INSERT INTO txs SELECT ?, block_hash, height, 9 FROM txs LIMIT 1",
        (b"\x05" * 32,),
        "indexed but not canonical",
    ),
    "nonce changed": ("UPDATE nonces SET next_nonce=next_nonce+1", (), "next nonce is 4"),
    "nonce row deleted": ("DELETE FROM nonces", (), "next nonce is None"),
    "extra nonce row": ("INSERT INTO nonces VALUES(?, 4)", (b"\x07" * 32,), "07070707"),
    "canonical top deleted": ("DELETE FROM canonical WHERE height=2", (), "meta head"),
    "canonical gap": ("DELETE FROM canonical WHERE height=1", (), "height 1 missing"),
    "canonical wrong parent": (
        "UPDATE canonical SET hash=(SELECT hash FROM blocks WHERE height=1 AND hash NOT IN "
        "(SELECT hash FROM canonical)) WHERE height=1",
        (),
        "parent is not canonical",
    ),
    "meta head moved": (
        "UPDATE meta SET value=(SELECT hash FROM canonical WHERE height=1) WHERE key='head'",
        (),
        "is not the top of the canonical index",
    ),
    "block body damaged": (
        "UPDATE blocks SET body=CAST(substr(body, 1, length(body)-3) || x'000000' AS BLOB) "
        "WHERE hash=(SELECT hash FROM canonical WHERE height=1)",
        (),
        "do not match the tx root",
    ),
    "block body truncated": (
        "UPDATE blocks SET body=substr(body, 1, 40) WHERE height=2",
        (),
        "does not decode",
    ),
    "block height column": ("UPDATE blocks SET height=height+10 WHERE height=2", (), "columns"),
    "parent missing": (
        "DELETE FROM blocks WHERE hash=(SELECT hash FROM canonical WHERE height=1)",
        (),
        "is not stored",
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_check_consistency_reports_corruption(path: Path, forks: Forks, name: str) -> None:
    with BlockStore(path) as s:
        for block in (forks.g, forks.a1, forks.a2):
            s.append(block)
        s.add_block(forks.b1)  # a side branch
        assert s.check_consistency() == []
    sql, args, phrase = CORRUPTIONS[name]
    # Raw edits with foreign keys off, as a disk bug or a careless tool would make them.
    db = sqlite3.connect(path)
    with db:
        assert db.execute(sql, args).rowcount >= 1
    db.close()
    with BlockStore(path) as s:
        problems = s.check_consistency()
    assert any(phrase in p for p in problems), problems


def test_damaged_block_bytes_raise_store_error(main_chain: BlockStore, forks: Forks) -> None:
    raw(main_chain.path, "UPDATE blocks SET body=x'00' WHERE hash=?", forks.a1.hash)
    with pytest.raises(StoreError, match=forks.a1.hash.hex()):
        main_chain.get_block(forks.a1.hash)
    other = make_block(forks.g.header, [], make_signer(4))
    raw(main_chain.path, "UPDATE blocks SET body=? WHERE hash=?", other.encoded, forks.a2.hash)
    with pytest.raises(StoreError, match="decodes to a block with hash"):
        main_chain.get_block(forks.a2.hash)
    swapped = Block(forks.g.header, forks.a1.transactions)  # same header, foreign body
    raw(main_chain.path, "UPDATE blocks SET body=? WHERE hash=?", swapped.encoded, forks.g.hash)
    with pytest.raises(StoreError, match="tx root"):
        main_chain.get_block(forks.g.hash)


def test_schema_version_mismatch_is_refused(path: Path) -> None:
    BlockStore(path).close()
    raw(
        path, "UPDATE meta SET value=? WHERE key='schema_version'", str(SCHEMA_VERSION + 1).encode()
    )
    with pytest.raises(StoreError, match="schema version"):
        BlockStore(path)


def test_not_a_database_is_refused(path: Path) -> None:
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        BlockStore(path)


def test_durability_settings(store: BlockStore) -> None:
    # A SIGKILL cannot tell synchronous=FULL from OFF (the OS keeps the pages), so check it here.
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] in ("wal", b"wal")
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync on every commit
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_certificates_are_stored_with_the_block_and_read_back(tmp_path: Path) -> None:
    proposer = make_signer(40)
    genesis = make_block(None, [], proposer)
    block = make_block(genesis.header, [make_tx(proposer, 0)], proposer)
    with BlockStore(tmp_path / "chain.sqlite") as store:
        store.append(genesis)
        store.append(block, certificate=b"commit-qc")
        assert store.get_certificate(genesis.hash) is None
        store.set_certificate(genesis.hash, b"genesis-proof")
    with BlockStore(tmp_path / "chain.sqlite") as store:
        assert store.get_certificate(block.hash) == b"commit-qc"
        assert store.get_certificate(genesis.hash) == b"genesis-proof"
        with pytest.raises(NotFoundError):
            store.set_certificate(b"\x07" * 32, b"x")
