"""Merkle trees over transaction hashes, with inclusion proofs.

The tree follows RFC 6962 (Certificate Transparency): leaves are hashed as SHA-256(0x00 || leaf),
inner nodes as SHA-256(0x01 || left || right), and a list of n leaves splits at the largest power
of two below n. The distinct prefixes keep a leaf from passing as an inner node, and the split rule
never duplicates a node, so the Bitcoin trick of repeating the last transaction (CVE-2012-2459)
gives a different root. The root of no leaves is SHA-256 of the empty string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

_LEAF = b"\x00"
_NODE = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(_LEAF + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(hashed: Sequence[bytes]) -> bytes:
    # Bottom-up: pair neighbours level by level; an odd node is carried up unchanged. This gives the
    # same tree as RFC 6962's recursive split, without recursion.
    level = list(hashed)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    return _root([leaf_hash(leaf) for leaf in leaves])


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    path: tuple[bytes, ...]  # sibling hashes, leaf level first


def _path(hashed: Sequence[bytes], index: int) -> list[bytes]:
    if len(hashed) <= 1:
        return []
    k = _split(len(hashed))
    if index < k:
        return [*_path(hashed[:k], index), _root(hashed[k:])]
    return [*_path(hashed[k:], index - k), _root(hashed[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> InclusionProof:
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} out of range for {len(leaves)} leaves")
    hashed = [leaf_hash(leaf) for leaf in leaves]
    return InclusionProof(index, len(leaves), tuple(_path(hashed, index)))


def verify_inclusion(leaf: bytes, proof: InclusionProof, root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: recompute the root from the leaf and its audit path."""
    if not 0 <= proof.index < proof.size:
        return False
    fn, sn = proof.index, proof.size - 1
    current = leaf_hash(leaf)
    for sibling in proof.path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            current = node_hash(sibling, current)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            current = node_hash(current, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and current == root
