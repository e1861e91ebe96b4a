"""Blob uploads (``chain.uploads``): who may put a blob, the quotas, and that a refused upload
leaves nothing on disk; with a real blob store, real signatures and the SQLite accounting."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from dualchain.chain.blobs import BlobStore
from dualchain.chain.errors import DecodeError, QuotaError, SignatureError, ValidationError
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.uploads import (
    BlobIntake,
    BlobUpload,
    QuotaLimits,
    UploadQuota,
    sign_upload,
)
from dualchain.chain.validation import LedgerParams
from dualchain.chain.verifier import SignatureVerifier

CHAIN = "ctbc-test"
NODE = Signer.generate()
OTHER_NODE = Signer.generate()
STRANGER = Signer.generate()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def in_thread(fn, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def intake(tmp_path: Path, verifier: SignatureVerifier) -> BlobIntake:
    keys = {NODE.id: NODE.public_key, OTHER_NODE.id: OTHER_NODE.public_key}
    quota = UploadQuota(tmp_path / "uploads.sqlite", QuotaLimits(100, 150))
    return BlobIntake(BlobStore(tmp_path / "blobs"), quota, LedgerParams(chain_id=CHAIN), CHAIN,
                      verifier, keys.get, in_thread, max_blob_bytes=1000)


async def put(intake: BlobIntake, data: bytes, signer: Signer = NODE,
              upload: BlobUpload | None = None, claimed: bytes | None = None) -> bytes:
    """The servicer's sequence: admit, store, close."""
    digest = hashlib.sha256(data).digest() if claimed is None else claimed
    upload = upload or sign_upload(signer, CHAIN, digest, len(data), now_ms())
    admitted = await intake.admit(digest, upload, now_ms())
    stored = False
    try:
        h = await intake.store(admitted, [data[:3], data[3:]])
        stored = True
        return h
    finally:
        intake.close(admitted, stored)


async def test_a_validator_stores_a_blob_and_pays_for_it_once(intake: BlobIntake) -> None:
    data = b"model" * 10
    h = await put(intake, data)
    assert intake.blobs.get(h) == data
    assert intake.quota.used(NODE.id) == 50
    await put(intake, data)  # again, or by another node: already stored, nothing charged
    await put(intake, data, OTHER_NODE)
    assert (intake.quota.used(NODE.id), intake.quota.used(OTHER_NODE.id)) == (50, 0)


@pytest.mark.parametrize("case", ["unsigned", "stranger", "forged", "other_chain", "stale",
                                  "short_hash"])
async def test_uploads_from_nobody_known_are_refused_and_leave_nothing(
        intake: BlobIntake, case: str) -> None:
    data = b"garbage" * 5
    digest = hashlib.sha256(data).digest()
    good = sign_upload(NODE, CHAIN, digest, len(data), now_ms())
    upload, claimed, error = {
        "unsigned": (BlobUpload(CHAIN, NODE.id, digest, len(data), now_ms()), None,
                     SignatureError),
        "stranger": (sign_upload(STRANGER, CHAIN, digest, len(data), now_ms()), None,
                     SignatureError),
        "forged": (BlobUpload(CHAIN, NODE.id, digest, len(data), good.timestamp_ms,
                              STRANGER.sign(*_blob_domain(good))), None, SignatureError),
        "other_chain": (sign_upload(NODE, "elsewhere", digest, len(data), now_ms()), None,
                        SignatureError),
        "stale": (sign_upload(NODE, CHAIN, digest, len(data), now_ms() - 10**9), None,
                  ValidationError),
        "short_hash": (good, digest[:16], DecodeError),
    }[case]
    with pytest.raises(error):
        await put(intake, data, upload=upload, claimed=claimed)
    assert files_under(intake.blobs.root) == []
    assert intake.quota.used(NODE.id) == 0 and intake.quota.total_used == 0
    with pytest.raises(SignatureError, match="needs an upload signed"):
        await intake.admit(digest, None, now_ms())


def _blob_domain(upload: BlobUpload) -> tuple[Domain, bytes]:
    return Domain.BLOB_UPLOAD, upload.signing_bytes


async def test_a_wrong_expected_hash_is_a_bad_argument_and_leaves_nothing(
        intake: BlobIntake) -> None:
    data = b"abcdef" * 4
    claimed = hashlib.sha256(b"something else").digest()
    upload = sign_upload(NODE, CHAIN, claimed, len(data), now_ms())
    with pytest.raises(ValidationError) as info:
        await put(intake, data, upload=upload, claimed=claimed)
    assert info.value.code == "hash_mismatch"
    assert files_under(intake.blobs.root) == []
    assert intake.quota.used(NODE.id) == 0 and intake.quota._reserved == {}


async def test_a_size_other_than_signed_is_refused(intake: BlobIntake) -> None:
    data = b"x" * 30
    upload = sign_upload(NODE, CHAIN, hashlib.sha256(data).digest(), 20, now_ms())
    with pytest.raises(ValidationError) as info:
        await put(intake, data, upload=upload)
    assert info.value.code == "size_mismatch"
    assert files_under(intake.blobs.root) == []


async def test_quotas_per_uploader_and_in_total(intake: BlobIntake) -> None:
    await put(intake, b"a" * 90)
    with pytest.raises(QuotaError, match="this uploader's blobs to 101 bytes"):
        await put(intake, b"b" * 11)
    await put(intake, b"c" * 10)  # exactly the uploader's 100
    await put(intake, b"d" * 50, OTHER_NODE)  # the store's 150
    with pytest.raises(QuotaError, match="blob store to 151 bytes"):
        await put(intake, b"e", OTHER_NODE)
    with pytest.raises(QuotaError) as info:
        await put(intake, b"f" * 1001, OTHER_NODE)  # over the size of one blob
    assert info.value.code == "oversized"
    assert len(files_under(intake.blobs.root)) == 3
    assert intake.quota._reserved == {}


async def test_a_reservation_holds_the_quota_while_bytes_arrive(intake: BlobIntake) -> None:
    first = b"1" * 60
    admitted = await intake.admit(hashlib.sha256(first).digest(), sign_upload(
        NODE, CHAIN, hashlib.sha256(first).digest(), 60, now_ms()), now_ms())
    with pytest.raises(QuotaError):  # 60 reserved + 50 > 100
        await put(intake, b"2" * 50)
    intake.close(admitted, stored=False)
    await put(intake, b"2" * 50)


async def test_the_accounting_survives_a_restart(tmp_path: Path, intake: BlobIntake) -> None:
    await put(intake, b"z" * 70)
    intake.quota.close()
    reopened = UploadQuota(tmp_path / "uploads.sqlite", QuotaLimits(100, 150))
    assert reopened.used(NODE.id) == 70 and reopened.total_used == 70
    with pytest.raises(QuotaError):
        reopened.reserve(NODE.id, 31)
