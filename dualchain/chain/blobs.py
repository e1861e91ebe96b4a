"""The content-addressed blob store: model weights and other large payloads, named by SHA-256.

A blob lives at ``root/ab/abcd...`` (hex SHA-256, sharded by its first byte so no directory grows
huge). Writes go to a temporary file in the same directory, are fsynced, renamed onto the final
name and the directory is fsynced: a crash leaves either no blob or the whole blob, never a partial
file under a hash name. Leftover temporary files are never read and are removed on open.

Every read checks the content against its name, so a flipped bit on disk is reported instead of
passed on. One process owns a root at a time (open removes temporary files it finds).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from dualchain.chain.durable import fsync_dir
from dualchain.chain.errors import BlobCorruptedError, NotFoundError, OversizedError, StoreError

HASH_BYTES = 32
TMP_PREFIX = ".tmp-"


def _check(h: bytes) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_BYTES:
        raise ValueError(f"a blob hash is {HASH_BYTES} bytes")


class BlobStore:
    """Immutable blobs in files named by their SHA-256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._clean_temporaries()
        except OSError as exc:
            raise StoreError(f"cannot open blob store {self.root}: {exc}") from exc

    def _clean_temporaries(self) -> None:
        # Streams are staged in the root, single writes in their shard: sweep both.
        dirs = [self.root, *(d for d in self.root.iterdir() if d.is_dir() and len(d.name) == 2)]
        for directory in dirs:
            for leftover in directory.glob(TMP_PREFIX + "*"):
                leftover.unlink(missing_ok=True)

    def path(self, h: bytes) -> Path:
        """Where the blob with this hash lives (whether or not it exists)."""
        _check(h)
        name = h.hex()
        return self.root / name[:2] / name

    def _shard(self, h: bytes) -> Path:
        shard = self.path(h).parent
        if not shard.is_dir():
            shard.mkdir(exist_ok=True)
            fsync_dir(self.root)  # make the new directory entry itself durable
        return shard

    # -- writes ------------------------------------------------------------------------------

    def put(self, data: bytes) -> bytes:
        """Stores bytes and returns their hash; storing the same bytes again is a no-op."""
        h = hashlib.sha256(data).digest()
        if not self.has(h):
            self._commit(h, [data])
        return h

    def put_stream(
        self,
        chunks: Iterable[bytes],
        expected_hash: bytes | None = None,
        max_bytes: int | None = None,
    ) -> bytes:
        """Stores a stream of chunks, hashing as it goes; returns the hash.

        Raises OversizedError as soon as the stream passes ``max_bytes`` and BlobCorruptedError if
        the content does not hash to ``expected_hash``; either way nothing is left on disk.
        """
        if expected_hash is not None:
            _check(expected_hash)
        # Stage under the root until the hash (hence the shard) is known.
        fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.root)
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            total = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    total += len(chunk)
                    if max_bytes is not None and total > max_bytes:
                        raise OversizedError(f"blob stream exceeds {max_bytes} bytes")
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            h = hasher.digest()
            if expected_hash is not None and h != expected_hash:
                raise BlobCorruptedError(
                    f"received blob hashes to {h.hex()}, expected {expected_hash.hex()}"
                )
            if self.has(h):
                tmp.unlink()
            else:
                final = self.path(h)
                shard = self._shard(h)
                os.replace(tmp, final)
                fsync_dir(shard)
            return h
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _commit(self, h: bytes, parts: Iterable[bytes]) -> None:
        shard = self._shard(h)
        fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=shard)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    out.write(part)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp_name, self.path(h))
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        fsync_dir(shard)

    def delete(self, h: bytes) -> bool:
        """Removes a blob; False if it was not there."""
        path = self.path(h)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(path.parent)
        return True

    # -- reads -------------------------------------------------------------------------------

    def has(self, h: bytes) -> bool:
        return self.path(h).is_file()

    def size(self, h: bytes) -> int:
        try:
            return self.path(h).stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {h.hex()} is not stored") from exc

    def get(self, h: bytes) -> bytes:
        """The blob's bytes, checked against its hash (BlobCorruptedError if they differ)."""
        try:
            data = self.path(h).read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {h.hex()} is not stored") from exc
        if hashlib.sha256(data).digest() != h:
            raise BlobCorruptedError(
                f"blob {h.hex()} is corrupted: content does not match its hash"
            )
        return data

    def iter_chunks(self, h: bytes, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Streams the blob in chunks, hashing as it goes.

        The check can only finish after the last chunk: a corrupted blob raises
        BlobCorruptedError at the end, after its chunks were yielded. Receivers must therefore hash
        what they get too (``put_stream(..., expected_hash=h)`` does) and never act on a stream
        that did not end cleanly. NotFoundError is raised here, before any chunk.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        try:
            handle = self.path(h).open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {h.hex()} is not stored") from exc
        return self._stream(h, handle, chunk_size)

    @staticmethod
    def _stream(h: bytes, handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        with handle:
            while chunk := handle.read(chunk_size):
                hasher.update(chunk)
                yield chunk
        if hasher.digest() != h:
            raise BlobCorruptedError(
                f"blob {h.hex()} is corrupted: content does not match its hash"
            )
