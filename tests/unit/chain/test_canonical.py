"""The canonical reader refuses every malformed input with DecodeError."""

from __future__ import annotations

import pytest

from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.errors import DecodeError

TAG = b"TST1"


def test_round_trip_of_every_field_kind() -> None:
    data = (
        Writer(TAG).u8(7).u32(70000).u64(2**63).fixed(b"ab", 2).var(b"xyz").text("héllo")
        .flag(True).count(3).bytes()
    )
    r = Reader(data, TAG, "test")
    assert r.u8("a") == 7
    assert r.u32("b") == 70000
    assert r.u64("c") == 2**63
    assert r.fixed(2, "d") == b"ab"
    assert r.var("e", 10) == b"xyz"
    assert r.text("f", 10) == "héllo"
    assert r.flag("g") is True
    assert r.count("h", 3) == 3
    r.finish()


@pytest.mark.parametrize(
    ("data", "read", "message"),
    [
        (b"XXX1", lambda r: None, "wrong type tag"),
        (b"TS", lambda r: None, "truncated"),
        (TAG + b"\x00\x00\x00\x05ab", lambda r: r.var("v", 100), "truncated"),
        (TAG + b"\x00\x00\x00\x0bhello world", lambda r: r.var("v", 10), "above the limit"),
        (TAG + b"\x00\x00\x00\x02\xff\xfe", lambda r: r.text("t", 10), "not valid UTF-8"),
        (TAG + b"\x02", lambda r: r.flag("f"), "presence flag"),
        (TAG + b"\x00\x00", lambda r: r.u64("n"), "truncated"),
    ],
)
def test_malformed_input_is_refused(data: bytes, read, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        read(Reader(data, TAG, "test"))


def test_trailing_bytes_are_refused() -> None:
    r = Reader(Writer(TAG).u8(1).bytes() + b"\x00", TAG, "test")
    r.u8("a")
    with pytest.raises(DecodeError, match="trailing"):
        r.finish()


def test_counts_above_the_limit_are_refused_before_allocation() -> None:
    r = Reader(TAG + b"\xff\xff\xff\xff", TAG, "test")
    with pytest.raises(DecodeError, match="above the limit"):
        r.count("items", 1000)
