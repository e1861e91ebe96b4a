"""How a server node finds the commit a CTBC block applied (server.commit_for_version)."""

from __future__ import annotations

from dualchain.apps.ctbc.fl import ModelCommit
from dualchain.chain.identity import Signer
from dualchain.chain.types import TxKind
from dualchain.chain.validation import build_block, sign_transaction
from dualchain.node.server import commit_for_version, commits_in

CHAIN = "ctbc-follow"
NOW = 1_800_000_000_000


def block_with(*commits: ModelCommit):
    signer = Signer.generate()
    txs = [sign_transaction(signer, CHAIN, TxKind.MODEL_VERSION, c.encode(), n, NOW)
           for n, c in enumerate(commits)]
    memo = sign_transaction(signer, CHAIN, TxKind.MEMO, b"m", len(txs), NOW)
    return build_block(signer, None, (*txs, memo), CHAIN, NOW)


def test_the_first_commit_of_the_version_is_found() -> None:
    first = ModelCommit(17, 16, b"\x01" * 32, ((b"\xaa" * 32, 1.0),))
    again = ModelCommit(17, 16, b"\x02" * 32, ())  # a later, refused commit of the same version
    block = block_with(first, again)
    tx, commit = commit_for_version(block, 17)
    assert commit == first and tx.kind == TxKind.MODEL_VERSION
    assert [c for _, c in commits_in(block)] == [first, again]


def test_a_block_without_the_version_gives_none_instead_of_raising() -> None:
    """The replica may already be past the block the node is looking at: its status then names
    a later block's version. The node used to raise StopIteration here, which ended its
    following of CTBC for good."""
    block = block_with(ModelCommit(17, 16, b"\x01" * 32, ()))
    assert commit_for_version(block, 34) is None
    assert commit_for_version(block_with(), 1) is None
