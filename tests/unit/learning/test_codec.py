"""Parameter codec: exact round trips, strict decoding, chunked transfer with hash and limits."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys

import numpy as np
import pytest

from dualchain.learning.codec import (
    MAGIC,
    ChunkAssembler,
    CodecError,
    decode_params,
    encode_params,
    iter_chunks,
    params_hash,
)

SHAPES = [("conv.weight", (2, 1, 3, 3)), ("conv.bias", (2,)), ("scale", ())]
SIZE = 18 + 2 + 1


def sample() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(SIZE).astype(np.float32)


def test_round_trip_is_exact() -> None:
    flat = sample()
    flat[0] = -0.0
    flat[1] = np.float32(1e-45)  # a subnormal survives too
    blob = encode_params(flat, SHAPES)
    assert blob.startswith(MAGIC)
    decoded = decode_params(blob)
    assert decoded.flat.tobytes() == flat.tobytes() and decoded.flat.dtype == np.float32
    assert decoded.shapes == tuple((n, tuple(s)) for n, s in SHAPES)
    decoded.flat[0] = 1.0  # the result is a writable copy
    assert encode_params(flat, SHAPES) == blob  # encoding is a pure function
    assert params_hash(blob) == hashlib.sha256(blob).digest()


def test_data_is_little_endian_float32_after_the_header() -> None:
    flat = np.arange(SIZE, dtype=np.float32)
    blob = encode_params(flat, SHAPES)
    assert blob[-4 * SIZE :] == struct.pack(f"<{SIZE}f", *range(SIZE))


def test_empty_model() -> None:
    decoded = decode_params(encode_params(np.empty(0, np.float32), []))
    assert decoded.flat.size == 0 and decoded.shapes == ()


@pytest.mark.parametrize(
    ("flat", "shapes", "message"),
    [
        (sample().astype(np.float64), SHAPES, "float32"),
        (sample().reshape(3, 7), SHAPES, "1-D"),
        (sample(), SHAPES[:2], "shapes hold 20 values, the vector has 21"),
        (sample(), [*SHAPES[:2], ("conv.bias", ())], "duplicate tensor name"),
        (sample(), [("", (21,))], "1..65535"),
        (sample(), [("x", (1,) * 9)], "unsupported shape"),
    ],
)
def test_encode_rejects(flat: np.ndarray, shapes: list, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        encode_params(flat, shapes)


BLOB = encode_params(sample(), SHAPES)


def patch(offset: int, value: bytes) -> bytes:
    return BLOB[:offset] + value + BLOB[offset + len(value) :]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "truncated header"),
        (BLOB[:10], "truncated header"),
        (patch(0, b"XXXX"), "bad magic"),
        (patch(4, struct.pack("<H", 2)), "unsupported format version 2"),
        (patch(6, b"\x02"), "unsupported dtype code 2: only float32"),
        (patch(7, b"\x01"), "reserved header byte"),
        (patch(8, struct.pack("<I", 4)), "tensor 3: empty or truncated name"),
        (patch(8, struct.pack("<I", 0xFFFFFFFF)), "tensor 3: empty or truncated name"),
        (patch(8, struct.pack("<I", 2)), "trailing bytes"),
        (BLOB[:-1], "truncated data"),
        (BLOB + b"\x00", "trailing bytes"),
        (patch(12, struct.pack("<H", 0)), "empty or truncated name"),
        (patch(14, b"\xff"), "not valid UTF-8"),
        (patch(14 + 11, b"\x09"), "9 dimensions"),
        (BLOB[:20], "truncated"),
    ],
)
def test_decode_is_strict(blob: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_params(blob)


def test_decode_refuses_duplicate_names_and_oversize() -> None:
    dup = encode_params(np.zeros(2, np.float32), [("a", (1,)), ("b", (1,))])
    dup = dup.replace(b"\x01\x00b", b"\x01\x00a")
    with pytest.raises(CodecError, match="duplicate tensor name 'a'"):
        decode_params(dup)
    with pytest.raises(CodecError, match="over the limit"):
        decode_params(BLOB, max_bytes=len(BLOB) - 1)
    assert decode_params(BLOB, max_bytes=len(BLOB)).flat.size == SIZE


def test_chunks_reassemble_with_hash_check() -> None:
    chunks = list(iter_chunks(BLOB, chunk_size=16))
    assert all(len(c) == 16 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 16
    assert list(iter_chunks(b"", 4)) == []
    assembler = ChunkAssembler(params_hash(BLOB), max_bytes=len(BLOB))
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.received == len(BLOB)
    assert assembler.finish() == BLOB
    with pytest.raises(CodecError, match="finished"):
        assembler.add(b"x")
    with pytest.raises(ValueError):
        list(iter_chunks(BLOB, 0))


def test_assembler_refuses_oversize_and_wrong_hash() -> None:
    over = ChunkAssembler(None, max_bytes=10)
    over.add(b"0123456789")
    with pytest.raises(CodecError, match="exceeds 10 bytes"):
        over.add(b"a")
    wrong = ChunkAssembler(hashlib.sha256(b"other").digest(), max_bytes=1 << 20)
    for chunk in iter_chunks(BLOB, 7):
        wrong.add(chunk)
    with pytest.raises(CodecError, match="hash mismatch"):
        wrong.finish()
    assert ChunkAssembler(None, max_bytes=100).finish() == b""
    with pytest.raises(ValueError, match="32-byte"):
        ChunkAssembler(b"short", 10)


@pytest.mark.parametrize("module", ["codec", "aggregation", "watermark", "contribution", "robust"])
def test_numpy_only_modules_do_not_import_torch(module: str) -> None:
    code = f"import sys, dualchain.learning.{module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
