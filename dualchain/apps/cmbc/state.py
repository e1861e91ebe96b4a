"""A key-value state with an undo journal per block and an incrementally kept digest.

The CMBC application keeps its records (clients, their latest state reports, anchors) here.
Applying a block opens a journal that remembers the previous value of every key it writes; a
reorg takes blocks back by replaying their journals in reverse. Journals are kept for the last
``max_undo`` blocks only: deeper reorgs are refused by the engine anyway (finality).

The digest is a sum modulo 2^256 of SHA-256 over each (key, value) entry, updated on every write,
so it costs O(1) per write instead of O(state) per block. It is a consistency check between
replicas (a header names the state after its parent), not a commitment one could prove
membership against.
"""

from __future__ import annotations

import hashlib
from collections import deque

_MOD = 1 << 256
_ABSENT = None


def _entry_hash(key: bytes, value: bytes) -> int:
    h = hashlib.sha256(len(key).to_bytes(4, "big") + key + value).digest()
    return int.from_bytes(h, "big")


class JournaledState:
    def __init__(self, max_undo: int = 64) -> None:
        self._data: dict[bytes, bytes] = {}
        self._digest = 0
        self._journals: deque[list[tuple[bytes, bytes | None]]] = deque(maxlen=max_undo)
        self._open: list[tuple[bytes, bytes | None]] | None = None

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``prefix`` (a scan: for queries, not for
        the rules of a block)."""
        return [(k, v) for k, v in self._data.items() if k.startswith(prefix)]

    def digest(self) -> bytes:
        return self._digest.to_bytes(32, "big")

    def put(self, key: bytes, value: bytes) -> None:
        old = self._data.get(key)
        if self._open is not None:
            self._open.append((key, old))
        self._write(key, old, value)

    def _write(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        if old is not None:
            self._digest = (self._digest - _entry_hash(key, old)) % _MOD
        if new is None:
            self._data.pop(key, None)
        else:
            self._data[key] = new
            self._digest = (self._digest + _entry_hash(key, new)) % _MOD

    # -- blocks ----------------------------------------------------------------------------------

    def begin(self) -> None:
        if self._open is not None:
            raise RuntimeError("a block is already being applied")
        self._open = []

    def commit(self) -> None:
        """Closes the open journal; it becomes the newest undo record."""
        assert self._open is not None
        self._journals.append(self._open)
        self._open = None

    def abort(self) -> None:
        """Takes back the writes of the open journal (a block that failed half way)."""
        assert self._open is not None
        journal, self._open = self._open, None
        self._undo(journal)

    def undo_last(self) -> None:
        if not self._journals:
            raise RuntimeError("no applied block left to take back (deeper than the undo depth)")
        self._undo(self._journals.pop())

    def _undo(self, journal: list[tuple[bytes, bytes | None]]) -> None:
        for key, old in reversed(journal):
            self._write(key, self._data.get(key), old)
