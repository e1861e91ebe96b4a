"""One canonical byte encoding for everything that is hashed or signed.

Protobuf is the wire format, but its serialisation is not canonical (field order, map order and
unknown fields may vary between implementations), so hashes and signatures are taken over this
encoding instead. The rules are few and strict:

- every top-level value starts with a 4-byte type tag (``b"DCT1"`` ...) so that bytes of one type
  can never be read as another;
- unsigned integers are fixed-width big-endian (u8, u32, u64);
- variable-length bytes and strings carry a u32 length; strings are UTF-8;
- fixed-length bytes (hashes, ids) are written raw;
- optional values carry a u8 presence flag (0 or 1, nothing else);
- sequences carry a u32 count;
- the reader rejects short input, out-of-range lengths, bad flags and trailing bytes.

Decoding then re-encoding gives the same bytes, so one value has exactly one encoding.
"""

from __future__ import annotations

import struct

from dualchain.chain.errors import DecodeError

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

U64_MAX = (1 << 64) - 1


class Writer:
    """Appends canonical fields to a growing buffer."""

    __slots__ = ("_parts",)

    def __init__(self, tag: bytes) -> None:
        if len(tag) != 4:
            raise ValueError("type tags are 4 bytes")
        self._parts: list[bytes] = [tag]

    def u8(self, value: int) -> Writer:
        if not 0 <= value <= 0xFF:
            raise ValueError(f"u8 out of range: {value}")
        self._parts.append(bytes((value,)))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(_U64.pack(value))
        return self

    def fixed(self, value: bytes, length: int) -> Writer:
        if len(value) != length:
            raise ValueError(f"expected {length} bytes, got {len(value)}")
        self._parts.append(value)
        return self

    def var(self, value: bytes) -> Writer:
        self._parts.append(_U32.pack(len(value)))
        self._parts.append(value)
        return self

    def text(self, value: str) -> Writer:
        return self.var(value.encode("utf-8"))

    def flag(self, present: bool) -> Writer:
        return self.u8(1 if present else 0)

    def count(self, n: int) -> Writer:
        return self.u32(n)

    def raw(self, value: bytes) -> Writer:
        """Embeds an already canonical encoding (length-prefixed, like any bytes)."""
        return self.var(value)

    def bytes(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads canonical fields back, raising DecodeError on anything malformed."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, tag: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
        self._data = bytes(data)
        self._pos = 0
        self._what = what
        got = self._take(4, "type tag")
        if got != tag:
            raise DecodeError(f"{what}: wrong type tag {got!r}, expected {tag!r}")

    def _take(self, n: int, field: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise DecodeError(
                f"{self._what}: truncated at {field} (need {n} bytes at offset {self._pos}, "
                f"have {len(self._data) - self._pos})"
            )
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self, field: str) -> int:
        return self._take(1, field)[0]

    def u32(self, field: str) -> int:
        return _U32.unpack(self._take(4, field))[0]

    def u64(self, field: str) -> int:
        return _U64.unpack(self._take(8, field))[0]

    def fixed(self, length: int, field: str) -> bytes:
        return self._take(length, field)

    def var(self, field: str, max_len: int) -> bytes:
        n = self.u32(field)
        if n > max_len:
            raise DecodeError(f"{self._what}: {field} is {n} bytes, above the limit of {max_len}")
        return self._take(n, field)

    def text(self, field: str, max_len: int) -> str:
        raw = self.var(field, max_len)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{self._what}: {field} is not valid UTF-8") from exc

    def flag(self, field: str) -> bool:
        value = self.u8(field)
        if value > 1:
            raise DecodeError(f"{self._what}: {field} presence flag is {value}, expected 0 or 1")
        return value == 1

    def count(self, field: str, max_count: int) -> int:
        n = self.u32(field)
        if n > max_count:
            raise DecodeError(f"{self._what}: {n} {field}, above the limit of {max_count}")
        return n

    def raw(self, field: str, max_len: int) -> bytes:
        return self.var(field, max_len)

    def at_end(self) -> bool:
        """True when every byte was read (an optional trailing field is absent)."""
        return self._pos == len(self._data)

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError(
                f"{self._what}: {len(self._data) - self._pos} trailing bytes after the value"
            )
