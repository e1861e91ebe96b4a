"""Merkle trees follow RFC 6962: known roots, proofs for every leaf, and forged proofs fail."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualchain.chain.merkle import (
    EMPTY_ROOT,
    InclusionProof,
    inclusion_proof,
    merkle_root,
    verify_inclusion,
)

# The leaves and roots of the Certificate Transparency reference test suite (RFC 6962 trees).
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


@pytest.mark.parametrize("size", sorted(CT_ROOTS))
def test_roots_match_the_rfc6962_reference(size: int) -> None:
    assert merkle_root(CT_LEAVES[:size]).hex() == CT_ROOTS[size]


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert merkle_root([]) == EMPTY_ROOT


def test_duplicating_the_last_leaf_changes_the_root() -> None:
    # The Bitcoin construction gives the same root for [a, b, c] and [a, b, c, c] (CVE-2012-2459).
    leaves = [b"a", b"b", b"c"]
    assert merkle_root(leaves) != merkle_root([*leaves, b"c"])


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=40), st.data())
def test_every_leaf_has_a_proof_that_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, index)
    assert verify_inclusion(leaves[index], proof, root)


@given(st.lists(st.binary(min_size=1, max_size=8), min_size=2, max_size=40, unique=True),
       st.data())
def test_proofs_do_not_verify_another_leaf_or_position(
    leaves: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    other = data.draw(st.integers(0, len(leaves) - 1).filter(lambda i: i != index))
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, index)
    assert not verify_inclusion(leaves[other], proof, root)
    moved = InclusionProof(other, proof.size, proof.path)
    assert not verify_inclusion(leaves[index], moved, root)


def test_tampered_paths_and_bad_indexes_fail() -> None:
    leaves = [bytes([i]) for i in range(13)]
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, 6)
    assert verify_inclusion(leaves[6], proof, root)
    flipped = (bytes([proof.path[0][0] ^ 1]) + proof.path[0][1:], *proof.path[1:])
    assert not verify_inclusion(leaves[6], InclusionProof(6, 13, flipped), root)
    assert not verify_inclusion(leaves[6], InclusionProof(6, 13, proof.path[:-1]), root)
    assert not verify_inclusion(leaves[6], InclusionProof(6, 13, (*proof.path, root)), root)
    assert not verify_inclusion(leaves[6], InclusionProof(13, 13, proof.path), root)
    with pytest.raises(IndexError):
        inclusion_proof(leaves, 13)
