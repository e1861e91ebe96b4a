"""Who may put blobs into a CTBC replica's blob store, and how much.

A blob upload (``PutBlob``) is signed by its uploader: a current validator of the chain, that
is a server node, whose key is its CTBC replica's. The signature (domain ``BLOB_UPLOAD``) covers
the chain id, the blob's SHA-256 and size and a timestamp, so it names exactly one blob on one
chain, and a copy replayed later than the chain's transaction age bound is refused. A replay
within that time stores the same bytes again: a no-op.

Quotas bound the disk an uploader can fill: bytes per uploader and bytes in total, counted once
per blob (the first uploader of a blob pays for it; a blob already stored costs nothing). The
accounting is kept in a small SQLite file beside the chain store, so a restart does not reset
it. A request is charged (reserved) before its bytes are received and the reservation is
released when the upload fails, so concurrent uploads cannot overrun a quota either.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dualchain.chain.blobs import BlobStore
from dualchain.chain.canonical import Writer
from dualchain.chain.errors import (
    BlobCorruptedError,
    DecodeError,
    QuotaError,
    SignatureError,
    StoreError,
    ValidationError,
)
from dualchain.chain.identity import ID_BYTES, Domain, Signer
from dualchain.chain.validation import LedgerParams, check_timestamp
from dualchain.chain.verifier import SignatureVerifier, VerifyRequest

T = TypeVar("T")

UPLOAD_TAG = b"DCBU"
HASH_BYTES = 32
DEFAULT_PER_UPLOADER_BYTES = 4 * 1024**3
DEFAULT_TOTAL_BYTES = 16 * 1024**3
MAX_BLOB_BYTES = 256 * 1024 * 1024  # one blob, whatever the quotas


@dataclass(frozen=True)
class BlobUpload:
    """The signed claim that ``uploader`` puts the blob ``blob_hash`` of ``size`` bytes."""

    chain_id: str
    uploader: bytes
    blob_hash: bytes
    size: int
    timestamp_ms: int
    signature: bytes = b""

    @property
    def signing_bytes(self) -> bytes:
        w = Writer(UPLOAD_TAG).text(self.chain_id).fixed(self.uploader, ID_BYTES)
        return w.fixed(self.blob_hash, HASH_BYTES).u64(self.size).u64(self.timestamp_ms).bytes()


def sign_upload(signer: Signer, chain_id: str, blob_hash: bytes, size: int,
                timestamp_ms: int) -> BlobUpload:
    unsigned = BlobUpload(chain_id, signer.id, blob_hash, size, timestamp_ms)
    return BlobUpload(chain_id, signer.id, blob_hash, size, timestamp_ms,
                      signer.sign(Domain.BLOB_UPLOAD, unsigned.signing_bytes))


@dataclass(frozen=True)
class QuotaLimits:
    per_uploader_bytes: int = DEFAULT_PER_UPLOADER_BYTES
    total_bytes: int = DEFAULT_TOTAL_BYTES


class UploadQuota:
    """Bytes stored per uploader and in total, persisted; reservations held in memory.

    ``reserve`` and ``release`` run on the event loop (no I/O); ``charge`` writes one row and
    runs on the store thread, like every other SQLite call of the daemon.
    """

    def __init__(self, path: Path, limits: QuotaLimits) -> None:
        self.limits = limits
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("CREATE TABLE IF NOT EXISTS uploads (uploader BLOB NOT NULL, "
                             "hash BLOB PRIMARY KEY, size INTEGER NOT NULL)")
            rows = self._db.execute(
                "SELECT uploader, SUM(size) FROM uploads GROUP BY uploader").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the upload accounting {path}: {exc}") from exc
        self._used = {bytes(uploader): int(total) for uploader, total in rows}
        self._reserved: dict[bytes, int] = {}

    def used(self, uploader: bytes) -> int:
        return self._used.get(uploader, 0)

    @property
    def total_used(self) -> int:
        return sum(self._used.values())

    def reserve(self, uploader: bytes, size: int) -> None:
        """Holds ``size`` bytes of both quotas for an upload about to be received."""
        mine = self.used(uploader) + self._reserved.get(uploader, 0) + size
        if mine > self.limits.per_uploader_bytes:
            raise QuotaError(f"the upload would take this uploader's blobs to {mine} bytes, "
                             f"above its quota of {self.limits.per_uploader_bytes}")
        total = self.total_used + sum(self._reserved.values()) + size
        if total > self.limits.total_bytes:
            raise QuotaError(f"the upload would take the blob store to {total} bytes, above "
                             f"its quota of {self.limits.total_bytes}")
        self._reserved[uploader] = self._reserved.get(uploader, 0) + size

    def release(self, uploader: bytes, size: int) -> None:
        left = self._reserved.get(uploader, 0) - size
        if left > 0:
            self._reserved[uploader] = left
        else:
            self._reserved.pop(uploader, None)

    def charge(self, uploader: bytes, blob_hash: bytes, size: int) -> bool:
        """Records a stored blob against its uploader; False (no charge) when some uploader
        already paid for it. Store thread."""
        try:
            cursor = self._db.execute("INSERT OR IGNORE INTO uploads VALUES (?, ?, ?)",
                                      (uploader, blob_hash, size))
        except sqlite3.Error as exc:
            raise StoreError(f"upload accounting failed: {exc}") from exc
        return cursor.rowcount == 1

    def settle(self, uploader: bytes, size: int, charged: bool) -> None:
        """After ``charge``: the reservation becomes usage (or is dropped). Event loop."""
        self.release(uploader, size)
        if charged:
            self._used[uploader] = self.used(uploader) + size

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class Admitted:
    """An upload whose signature and quota were checked: its bytes may now be received."""

    upload: BlobUpload
    stored: bool  # the blob is already in the store: nothing reserved, nothing charged


class BlobIntake:
    """The rules of ``PutBlob``, apart from gRPC: ``admit`` the signed upload named by the
    first chunk (before any byte is kept), then ``store`` the received chunks, then ``close``.

    ``key_of`` gives the public key of a current validator (None for anyone else); ``in_store``
    runs a call on the daemon's store thread.
    """

    def __init__(self, blobs: BlobStore, quota: UploadQuota, params: LedgerParams,
                 chain_id: str, verifier: SignatureVerifier,
                 key_of: Callable[[bytes], bytes | None],
                 in_store: Callable[..., Awaitable[Any]],
                 max_blob_bytes: int = MAX_BLOB_BYTES) -> None:
        self.blobs = blobs
        self.quota = quota
        self.params = params
        self.chain_id = chain_id
        self.verifier = verifier
        self.key_of = key_of
        self.in_store = in_store
        self.max_blob_bytes = max_blob_bytes

    async def admit(self, expected_hash: bytes, upload: BlobUpload | None,
                    now_ms: int) -> Admitted:
        if upload is None or not upload.signature:
            raise SignatureError("PutBlob needs an upload signed by a validator of this chain",
                                 code="unsigned")
        if len(expected_hash) != HASH_BYTES or len(upload.uploader) != ID_BYTES:
            raise DecodeError("expected_hash and uploader must be 32 bytes")
        if upload.size > self.max_blob_bytes:
            raise QuotaError(f"a blob is at most {self.max_blob_bytes} bytes, not {upload.size}",
                             code="oversized")
        key = self.key_of(upload.uploader)
        if key is None:
            raise SignatureError(f"uploader {upload.uploader.hex()[:16]} is not a validator of "
                                 "this chain", code="unknown_uploader")
        check_timestamp(upload.timestamp_ms, now_ms, self.params, "upload")
        signed = BlobUpload(self.chain_id, upload.uploader, expected_hash, upload.size,
                            upload.timestamp_ms, upload.signature)
        ok, = await self.verifier.verify_batch_async([VerifyRequest(
            self.params.algorithm, key, Domain.BLOB_UPLOAD, signed.signing_bytes,
            signed.signature)])
        if not ok:
            raise SignatureError("the upload signature does not verify")
        stored = await self.in_store(self.blobs.has, expected_hash)
        if not stored:
            self.quota.reserve(signed.uploader, signed.size)
        return Admitted(signed, stored)

    async def store(self, admitted: Admitted, chunks: Sequence[bytes]) -> bytes:
        """Writes the blob (all or nothing) and charges it; the caller received at most
        ``size`` bytes. Its hash."""
        upload = admitted.upload
        received = sum(len(c) for c in chunks)
        if received != upload.size:
            raise ValidationError(f"received {received} bytes, the upload signed {upload.size}",
                                  code="size_mismatch")
        try:
            h = await self.in_store(self.blobs.put_stream, chunks, upload.blob_hash,
                                    upload.size)
        except BlobCorruptedError as exc:
            raise ValidationError(f"the blob does not hash to expected_hash: {exc.reason}",
                                  code="hash_mismatch") from None
        if not admitted.stored:
            charged = await self.in_store(self.quota.charge, upload.uploader, h, upload.size)
            self.quota.settle(upload.uploader, upload.size, charged)
        return h

    def close(self, admitted: Admitted, stored: bool) -> None:
        """Drops the reservation of an upload that did not get stored."""
        if not stored and not admitted.stored:
            self.quota.release(admitted.upload.uploader, admitted.upload.size)
