"""BlobStore: content addressing, atomic writes, streaming limits and corruption on read."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dualchain.chain.blobs import TMP_PREFIX, BlobStore
from dualchain.chain.errors import BlobCorruptedError, NotFoundError, OversizedError, StoreError


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_roundtrip_and_layout(blobs: BlobStore) -> None:
    data = os.urandom(5000)
    h = blobs.put(data)
    assert h == hashlib.sha256(data).digest()
    assert blobs.get(h) == data
    assert blobs.has(h)
    assert blobs.size(h) == 5000
    assert files_under(blobs.root) == [blobs.root / h.hex()[:2] / h.hex()]


def test_empty_blob(blobs: BlobStore) -> None:
    h = blobs.put(b"")
    assert blobs.get(h) == b""
    assert list(blobs.iter_chunks(h)) == []


def test_put_is_idempotent(blobs: BlobStore) -> None:
    h1 = blobs.put(b"same bytes")
    h2 = blobs.put(b"same bytes")
    assert h1 == h2
    assert len(files_under(blobs.root)) == 1


def test_stream_with_expected_hash(blobs: BlobStore) -> None:
    chunks = [os.urandom(1000) for _ in range(7)]
    data = b"".join(chunks)
    h = blobs.put_stream(iter(chunks), expected_hash=hashlib.sha256(data).digest())
    assert blobs.get(h) == data
    assert b"".join(blobs.iter_chunks(h, chunk_size=333)) == data
    assert [len(c) for c in blobs.iter_chunks(h, chunk_size=4096)] == [4096, 7000 - 4096]
    # The same content streamed again is accepted and still stored once.
    assert blobs.put_stream(chunks) == h
    assert len(files_under(blobs.root)) == 1


def test_stream_with_wrong_hash_leaves_nothing(blobs: BlobStore) -> None:
    with pytest.raises(BlobCorruptedError, match="expected"):
        blobs.put_stream([b"abc", b"def"], expected_hash=hashlib.sha256(b"abcdeX").digest())
    assert files_under(blobs.root) == []
    assert not blobs.has(hashlib.sha256(b"abcdef").digest())


def test_stream_over_max_bytes_stops_and_leaves_nothing(blobs: BlobStore) -> None:
    pulled = 0

    def chunks() -> Iterator[bytes]:
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"x" * 100

    with pytest.raises(OversizedError):
        blobs.put_stream(chunks(), max_bytes=250)
    assert pulled == 3  # stopped at the first chunk over the limit, not after the whole stream
    assert files_under(blobs.root) == []
    assert blobs.put_stream([b"x" * 250], max_bytes=250) == hashlib.sha256(b"x" * 250).digest()


def test_stream_source_failure_leaves_nothing(blobs: BlobStore) -> None:
    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        blobs.put_stream(broken())
    assert files_under(blobs.root) == []


def test_corruption_detected_on_get(blobs: BlobStore) -> None:
    h = blobs.put(b"model weights" * 100)
    flip_byte(blobs.path(h), 17)
    with pytest.raises(BlobCorruptedError, match=h.hex()):
        blobs.get(h)
    assert isinstance(BlobCorruptedError("x"), StoreError)


def test_corruption_detected_by_iter_chunks_at_the_end(blobs: BlobStore) -> None:
    data = os.urandom(10_000)
    h = blobs.put(data)
    flip_byte(blobs.path(h), 9_999)
    chunks = blobs.iter_chunks(h, chunk_size=4096)
    received = [next(chunks), next(chunks), next(chunks)]  # the damage is in the last chunk
    assert b"".join(received)[:8192] == data[:8192]
    assert b"".join(received) != data  # the damaged chunk was yielded: only the end can tell
    with pytest.raises(BlobCorruptedError, match=h.hex()):
        next(chunks)


def test_not_found(blobs: BlobStore) -> None:
    h = hashlib.sha256(b"never stored").digest()
    assert not blobs.has(h)
    with pytest.raises(NotFoundError):
        blobs.get(h)
    with pytest.raises(NotFoundError):
        blobs.iter_chunks(h)  # raised at the call, before any chunk
    with pytest.raises(NotFoundError):
        blobs.size(h)
    assert blobs.delete(h) is False


def test_delete(blobs: BlobStore) -> None:
    h = blobs.put(b"short lived")
    assert blobs.delete(h) is True
    assert not blobs.has(h)
    with pytest.raises(NotFoundError):
        blobs.get(h)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_bad_hash_length(blobs: BlobStore, bad: bytes) -> None:
    with pytest.raises(ValueError):
        blobs.get(bad)
    with pytest.raises(ValueError):
        blobs.has(bad)
    with pytest.raises(ValueError):
        blobs.iter_chunks(bad)
    with pytest.raises(ValueError):
        blobs.delete(bad)
    with pytest.raises(ValueError):
        blobs.put_stream([b"x"], expected_hash=bad)


def test_leftover_temporaries_ignored_and_cleaned(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = BlobStore(root)
    h = store.put(b"kept")
    # What a crash mid-write leaves: temp files in the root (streams) and in a shard (puts).
    stray_root = root / f"{TMP_PREFIX}crash1"
    stray_shard = root / h.hex()[:2] / f"{TMP_PREFIX}crash2"
    stray_root.write_bytes(b"half a stream")
    stray_shard.write_bytes(b"half a put")
    assert store.get(h) == b"kept"
    assert not store.has(hashlib.sha256(b"half a put").digest())

    reopened = BlobStore(root)
    assert not stray_root.exists() and not stray_shard.exists()
    assert reopened.get(h) == b"kept"
    assert files_under(root) == [reopened.path(h)]
