"""Byte encoding of flat float32 parameter vectors, and chunked transfer with a hash check.

Numpy only (no torch): chain daemons and validators decode blobs without a learning stack.

Format, all integers little-endian::

    magic      4 bytes  b"DCPM"
    version    u16      1
    dtype      u8       1 = float32 little-endian (the only one)
    reserved   u8       0
    count      u32      number of tensors
    count times:
        name_len u16, name (UTF-8, non-empty, unique), ndim u8 (<= 8), ndim x u32 dims
    data       4 * sum(prod(dims)) bytes

Decoding is strict: any deviation (wrong magic or version, unknown dtype, truncation, trailing
bytes) is a ``CodecError`` saying what is wrong, so one blob has exactly one meaning.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

MAGIC = b"DCPM"
FORMAT_VERSION = 1
DTYPE_FLOAT32_LE = 1
MAX_NDIM = 8
_HEAD = struct.Struct("<4sHBBI")
_NAME_LEN = struct.Struct("<H")
_F32 = np.dtype("<f4")

Shapes = tuple[tuple[str, tuple[int, ...]], ...]


class CodecError(ValueError):
    """A parameter blob or chunk stream is malformed, oversized or does not match its hash."""


@dataclass(frozen=True, eq=False)
class DecodedParams:
    flat: np.ndarray  # float32, 1-D, writable copy
    shapes: Shapes


def params_hash(data: bytes) -> bytes:
    """SHA-256 of an encoded blob: its address in the blob store and on chain."""
    return hashlib.sha256(data).digest()


def encode_params(flat: np.ndarray, shapes: Sequence[tuple[str, tuple[int, ...]]]) -> bytes:
    """Encode ``flat`` (float32, 1-D) laid out as ``shapes``."""
    if not isinstance(flat, np.ndarray) or flat.ndim != 1 or flat.dtype != np.float32:
        raise CodecError("parameters must be a 1-D float32 numpy array")
    header = [_HEAD.pack(MAGIC, FORMAT_VERSION, DTYPE_FLOAT32_LE, 0, len(shapes))]
    seen: set[str] = set()
    total = 0
    for name, shape in shapes:
        raw = name.encode("utf-8")
        if not raw or len(raw) > 0xFFFF:
            raise CodecError(f"tensor name {name!r} must be 1..65535 UTF-8 bytes")
        if name in seen:
            raise CodecError(f"duplicate tensor name {name!r}")
        seen.add(name)
        if len(shape) > MAX_NDIM or any(not 0 <= d <= 0xFFFFFFFF for d in shape):
            raise CodecError(f"tensor {name!r} has an unsupported shape {shape}")
        header.append(_NAME_LEN.pack(len(raw)) + raw)
        header.append(struct.pack(f"<B{len(shape)}I", len(shape), *shape))
        total += math.prod(shape)
    if total != flat.size:
        raise CodecError(f"shapes hold {total} values, the vector has {flat.size}")
    return b"".join(header) + flat.astype(_F32, copy=False).tobytes()


def decode_params(data: bytes, max_bytes: int | None = None) -> DecodedParams:
    """Decode a blob made by ``encode_params``; refuse it if longer than ``max_bytes``."""
    if max_bytes is not None and len(data) > max_bytes:
        raise CodecError(f"blob is {len(data)} bytes, over the limit of {max_bytes}")
    if len(data) < _HEAD.size:
        raise CodecError(f"truncated header: {len(data)} bytes")
    magic, version, dtype, reserved, count = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise CodecError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported format version {version}, expected {FORMAT_VERSION}")
    if dtype != DTYPE_FLOAT32_LE:
        raise CodecError(f"unsupported dtype code {dtype}: only float32 little-endian (1)")
    if reserved != 0:
        raise CodecError(f"reserved header byte is {reserved}, must be 0")
    pos = _HEAD.size
    shapes: list[tuple[str, tuple[int, ...]]] = []
    seen: set[str] = set()
    total = 0
    for i in range(count):
        # Each entry takes at least 4 bytes, so a huge count fails here, not by looping forever.
        if pos + _NAME_LEN.size > len(data):
            raise CodecError(f"truncated in the entry of tensor {i}")
        (name_len,) = _NAME_LEN.unpack_from(data, pos)
        pos += _NAME_LEN.size
        if name_len == 0 or pos + name_len + 1 > len(data):
            raise CodecError(f"tensor {i}: empty or truncated name")
        try:
            name = data[pos : pos + name_len].decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError(f"tensor {i}: name is not valid UTF-8") from None
        pos += name_len
        if name in seen:
            raise CodecError(f"duplicate tensor name {name!r}")
        seen.add(name)
        ndim = data[pos]
        pos += 1
        if ndim > MAX_NDIM:
            raise CodecError(f"tensor {name!r}: {ndim} dimensions, at most {MAX_NDIM}")
        if pos + 4 * ndim > len(data):
            raise CodecError(f"tensor {name!r}: truncated dimensions")
        shape = struct.unpack_from(f"<{ndim}I", data, pos)
        pos += 4 * ndim
        shapes.append((name, tuple(shape)))
        total += math.prod(shape)
    expected = pos + 4 * total
    if len(data) != expected:
        problem = "truncated data" if len(data) < expected else "trailing bytes"
        raise CodecError(f"{problem}: {len(data)} bytes, shapes need {expected}")
    flat = np.frombuffer(data, dtype=_F32, count=total, offset=pos).astype(np.float32)
    return DecodedParams(flat=flat, shapes=tuple(shapes))


def iter_chunks(data: bytes, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Consecutive slices of at most ``chunk_size`` bytes (none for empty data)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    for start in range(0, len(data), chunk_size):
        yield bytes(data[start : start + chunk_size])


class ChunkAssembler:
    """Collects a chunked blob, bounded by ``max_bytes`` and checked against its SHA-256."""

    def __init__(self, expected_hash: bytes | None, max_bytes: int) -> None:
        if expected_hash is not None and len(expected_hash) != 32:
            raise ValueError("expected_hash must be a 32-byte SHA-256 digest")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
        self._expected = expected_hash
        self._max = max_bytes
        self._buf = bytearray()
        self._sha = hashlib.sha256()
        self._done = False

    @property
    def received(self) -> int:
        return len(self._buf)

    def add(self, chunk: bytes) -> None:
        if self._done:
            raise CodecError("chunk after the stream was finished")
        if len(self._buf) + len(chunk) > self._max:
            raise CodecError(
                f"stream exceeds {self._max} bytes ({len(self._buf)} + {len(chunk)} received)"
            )
        self._buf += chunk
        self._sha.update(chunk)

    def finish(self) -> bytes:
        """The whole blob, once its hash matches ``expected_hash`` (when one was given)."""
        if self._done:
            raise CodecError("stream already finished")
        self._done = True
        digest = self._sha.digest()
        if self._expected is not None and digest != self._expected:
            raise CodecError(
                f"hash mismatch: received {digest.hex()}, expected {self._expected.hex()}"
            )
        return bytes(self._buf)
