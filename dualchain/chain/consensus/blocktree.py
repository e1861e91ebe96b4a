"""The in-memory tree of proof-of-work headers: ancestry, expected targets and fork choice.

The block store holds every block; this index holds their headers and cumulative work so that
the rules that look back along a branch (retarget window, median time past, fork point) cost a
few dictionary lookups instead of store reads. It is rebuilt from the store on start.

Fork choice: the branch with the most cumulative work; on equal work the one seen first stays
(a replica does not switch for a tie, so a split resolves as soon as one side is ahead).
"""

from __future__ import annotations

from dataclasses import dataclass

from dualchain.chain.consensus.pow import (
    PowParams,
    block_work,
    next_target,
    target_from_bytes,
)
from dualchain.chain.types import BlockHeader


@dataclass
class TreeEntry:
    header: BlockHeader
    work: int  # cumulative, genesis included
    arrival: int
    invalid: bool = False


class BlockTree:
    def __init__(self, params: PowParams) -> None:
        self.params = params
        self._entries: dict[bytes, TreeEntry] = {}
        self._arrivals = 0

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, block_hash: bytes) -> TreeEntry | None:
        return self._entries.get(block_hash)

    def add(self, header: BlockHeader, work: int | None = None) -> TreeEntry:
        """Adds a header whose parent is in the tree (or genesis); ``work`` overrides the
        cumulative work (used when loading from the store)."""
        h = header.hash
        if h in self._entries:
            return self._entries[h]
        if work is None:
            parent = self._entries.get(header.parent_hash)
            base = parent.work if parent is not None else 0
            work = base + block_work(target_from_bytes(header.pow_target))
        self._arrivals += 1
        entry = TreeEntry(header, work, self._arrivals)
        self._entries[h] = entry
        return entry

    def mark_invalid(self, block_hash: bytes) -> list[bytes]:
        """Marks a block and every stored descendant invalid; returns their hashes."""
        marked = {block_hash}
        for h, entry in sorted(self._entries.items(), key=lambda kv: kv[1].header.height):
            if h == block_hash or entry.header.parent_hash in marked:
                entry.invalid = True
                marked.add(h)
        return sorted(marked)

    # -- ancestry --------------------------------------------------------------------------------

    def ancestors(self, block_hash: bytes, count: int) -> list[BlockHeader]:
        """Up to ``count`` headers from ``block_hash`` back towards genesis, newest first."""
        out: list[BlockHeader] = []
        entry = self._entries.get(block_hash)
        while entry is not None and len(out) < count:
            out.append(entry.header)
            if entry.header.height == 0:
                break
            entry = self._entries.get(entry.header.parent_hash)
        return out

    def ancestor_at(self, block_hash: bytes, height: int) -> BlockHeader:
        entry = self._entries[block_hash]
        while entry.header.height > height:
            entry = self._entries[entry.header.parent_hash]
        if entry.header.height != height:
            raise KeyError(f"no ancestor at height {height}")
        return entry.header

    def expected_target(self, parent_hash: bytes) -> int:
        """The target a child of ``parent_hash`` must carry."""
        parent = self._entries[parent_hash].header
        height = parent.height + 1
        if parent.height == 0:
            return self.params.initial_target
        return next_target(
            self.params, height, target_from_bytes(parent.pow_target),
            lambda h: self.ancestor_at(parent_hash, h).timestamp_ms,
        )

    def median_window(self, parent_hash: bytes) -> list[int]:
        """Timestamps of the last ``median_window`` blocks up to and including the parent."""
        return [h.timestamp_ms for h in self.ancestors(parent_hash, self.params.median_window)]

    def fork_path(self, head: bytes, tip: bytes) -> tuple[list[bytes], list[bytes]]:
        """What moving the head from ``head`` to ``tip`` takes: blocks to disconnect (newest
        first) and blocks to connect (oldest first), both excluding the fork point."""
        a, b = self._entries[head], self._entries[tip]
        disconnect: list[bytes] = []
        connect: list[bytes] = []
        while a.header.height > b.header.height:
            disconnect.append(a.header.hash)
            a = self._entries[a.header.parent_hash]
        while b.header.height > a.header.height:
            connect.append(b.header.hash)
            b = self._entries[b.header.parent_hash]
        while a.header.hash != b.header.hash:
            disconnect.append(a.header.hash)
            connect.append(b.header.hash)
            a = self._entries[a.header.parent_hash]
            b = self._entries[b.header.parent_hash]
        connect.reverse()
        return disconnect, connect

    def best_tip(self) -> bytes:
        """The valid block with the most work (first seen on a tie)."""
        best = min(
            (e for e in self._entries.values() if not e.invalid),
            key=lambda e: (-e.work, e.arrival),
        )
        return best.header.hash

    def better(self, candidate: bytes, head: bytes) -> bool:
        """Whether fork choice prefers ``candidate`` over the current head."""
        c, h = self._entries[candidate], self._entries[head]
        return not c.invalid and c.work > h.work
