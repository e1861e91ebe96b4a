"""A block store writer for the crash test: appends and reorgs as fast as it can until killed.

Usage: ``python store_writer.py STORE_PATH SEED``

It resumes from whatever head the store has (genesis on an empty one). Each step either appends a
block of a few transactions on the head or, now and then, builds a longer side branch from a few
blocks back and switches the head to it, so a kill can land inside either kind of commit. After
every commit that moves the head it prints ``A|R HEIGHT HASH`` and flushes: a printed line is a
promise that the block is durable. Just before such a commit starts it prints ``> A`` or ``> R``,
so the test can aim its kill into the middle of an append or of a reorg.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TXS_PER_BLOCK = 4
REORG_CHANCE = 0.25
MAX_REORG_DEPTH = 3


def main(argv: list[str]) -> int:
    # Run as a script: make ``tests.ledger_builders`` importable from the repository root.
    sys.path.insert(0, str(ROOT))
    from dualchain.chain.store import BlockStore
    from dualchain.chain.types import Block, BlockHeader, Transaction
    from tests.ledger_builders import make_block, make_signer, make_tx

    store_path, seed = Path(argv[1]), int(argv[2])
    rng = random.Random(seed)
    sender, miner = make_signer(1), make_signer(2)
    signed: dict[tuple[int, str], Transaction] = {}  # signing is the slow part: reuse

    def txs(first_nonce: int, tag: str) -> list[Transaction]:
        out = []
        for nonce in range(first_nonce, first_nonce + TXS_PER_BLOCK):
            key = (nonce, tag)
            if key not in signed:
                signed[key] = make_tx(sender, nonce, payload=tag.encode())
            out.append(signed[key])
        return out

    def announce(kind: str) -> None:
        print(f"> {kind}", flush=True)

    def report(kind: str, block: Block | BlockHeader) -> None:
        print(f"{kind} {block.height} {block.hash.hex()}", flush=True)

    with BlockStore(store_path) as store:
        if store.height() < 0:
            genesis = make_block(None, [], miner)
            store.append(genesis, work=1)
            report("A", genesis)
        branch = 0
        while True:
            head = store.head()
            assert head is not None
            if head.height >= 2 and rng.random() < REORG_CHANCE:
                # A side branch one block longer than what it replaces, from the same sender, so
                # it reuses the replaced nonces with different transactions.
                depth = rng.randint(1, min(MAX_REORG_DEPTH, head.height - 1))
                parent = store.canonical_block(head.height - depth).header
                nonce = store.canonical_block(parent.height + 1).transactions[0].nonce
                branch += 1
                tag = f"side-{seed}-{branch}"
                for _ in range(depth + 1):
                    block = make_block(parent, txs(nonce, tag), miner, view=branch)
                    store.add_block(block, work=1)
                    parent, nonce = block.header, nonce + TXS_PER_BLOCK
                announce("R")
                store.set_head(parent.hash)
                report("R", parent)
            else:
                block = make_block(head, txs(store.next_nonce(sender.id), "main"), miner)
                announce("A")
                store.append(block, work=1)
                report("A", block)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
