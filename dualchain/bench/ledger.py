"""`dualchain bench ledger`: how fast the ledger engine validates, stores and proves.

Figures (all from one run on this machine):

- ``tx_validate_per_s_one_core``: full admission checks (shape, timestamp, signature) one
  transaction at a time on one thread, with the signature cache off so every signature is checked;
- ``block_validate_tx_per_s``: full block validation (linkage, Merkle root, nonces, proposer
  signature, transaction signatures as one batch on the verifier's pool of ``workers`` threads),
  again without the cache, in transactions per second;
- ``append_blocks_per_s`` / ``append_tx_per_s``: ``BlockStore.append`` of pre-validated blocks
  to a SQLite file with fsync on every commit;
- ``merkle_*``: roots, proof generation and proof verification over a block's transactions.
"""

from __future__ import annotations

import itertools
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dualchain.chain.clock import now_ms
from dualchain.chain.identity import Signer
from dualchain.chain.merkle import inclusion_proof, merkle_root, verify_inclusion
from dualchain.chain.mldsa import DEFAULT_ALGORITHM, DEFAULT_BACKEND, Algorithm
from dualchain.chain.store import BlockStore
from dualchain.chain.types import Block, Transaction, TxKind
from dualchain.chain.validation import (
    LedgerParams,
    build_block,
    check_block,
    check_transaction,
    sign_transaction,
)
from dualchain.chain.verifier import SignatureVerifier

CHAIN_ID = "bench-ledger"
SENDERS = 16
PAYLOAD = bytes(200)


def _sign_all(signers: list[Signer], count: int, now_ms: int, workers: int) -> list[Transaction]:
    """``count`` transactions, round-robin over ``signers`` with consecutive nonces each."""
    jobs = [(signers[i % len(signers)], i // len(signers)) for i in range(count)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(
            lambda job: sign_transaction(job[0], CHAIN_ID, TxKind.MEMO, PAYLOAD, job[1], now_ms),
            jobs,
        ))


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("inf")


def ledger_benchmark(
    txs: int = 2000,
    block_txs: int = 100,
    algorithm: Algorithm = DEFAULT_ALGORITHM,
    backend: str = DEFAULT_BACKEND,
    workers: int | None = None,
    directory: Path | None = None,
) -> dict:
    workers = workers or os.cpu_count() or 1
    params = LedgerParams(CHAIN_ID, algorithm=algorithm)
    proposer = Signer.generate(algorithm, backend)
    signers = [Signer.generate(algorithm, backend) for _ in range(SENDERS)]
    now = now_ms()
    transactions = _sign_all(signers, txs, now, workers)

    # Admission checks, one at a time on one thread, every signature really checked.
    with SignatureVerifier(backend, cache_size=0, workers=1) as verifier:
        start = time.perf_counter()
        for tx in transactions:
            check_transaction(tx, params, verifier, now)
        one_core = time.perf_counter() - start

    # Build the chain: genesis plus blocks of block_txs transactions (nonces stay consecutive
    # because transactions are ordered round-robin by nonce).
    blocks: list[Block] = [build_block(proposer, None, (), CHAIN_ID, now)]
    for i in range(0, len(transactions), block_txs):
        parent = blocks[-1].header
        blocks.append(build_block(proposer, parent, transactions[i : i + block_txs], CHAIN_ID,
                                  now + len(blocks)))

    # Full block validation with batched signatures on the pool.
    nonces: dict[bytes, int] = {}
    keys = {proposer.id: proposer.public_key}.get
    with SignatureVerifier(backend, cache_size=0, workers=workers) as verifier:
        start = time.perf_counter()
        for parent, block in itertools.pairwise(blocks):
            check_block(block, parent.header, params, verifier, now + len(blocks),
                        lambda sender: nonces.get(sender, 0), keys)
            for tx in block.transactions:
                nonces[tx.sender] = tx.nonce + 1
        validate = time.perf_counter() - start

    # Appends with fsync per commit.
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        store = BlockStore(Path(tmp) / "bench.sqlite")
        try:
            store.append(blocks[0])
            start = time.perf_counter()
            for block in blocks[1:]:
                store.append(block)
            append = time.perf_counter() - start
        finally:
            store.close()

    merkle = _merkle(blocks[1])
    return {
        "benchmark": "ledger",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "algorithm": algorithm.label,
        "backend": backend,
        "workers": workers,
        "txs": len(transactions),
        "block_txs": block_txs,
        "blocks": len(blocks) - 1,
        "tx_bytes": transactions[0].size,
        "tx_validate_per_s_one_core": _rate(len(transactions), one_core),
        "block_validate_tx_per_s": _rate(len(transactions), validate),
        "block_validate_blocks_per_s": _rate(len(blocks) - 1, validate),
        "append_blocks_per_s": _rate(len(blocks) - 1, append),
        "append_tx_per_s": _rate(len(transactions), append),
        **merkle,
    }


def _merkle(block: Block, rounds: int = 5) -> dict:
    leaves = [tx.hash for tx in block.transactions]
    root = merkle_root(leaves)
    roots, proofs, checks = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            merkle_root(leaves)
        roots.append(_rate(20, time.perf_counter() - start))
        start = time.perf_counter()
        made = [inclusion_proof(leaves, i) for i in range(len(leaves))]
        proofs.append(_rate(len(leaves), time.perf_counter() - start))
        start = time.perf_counter()
        ok = all(verify_inclusion(leaf, p, root) for leaf, p in zip(leaves, made, strict=True))
        checks.append(_rate(len(leaves), time.perf_counter() - start))
        if not ok:
            raise AssertionError("a Merkle proof failed to verify")
    return {
        "merkle_leaves": len(leaves),
        "merkle_roots_per_s": statistics.median(roots),
        "merkle_proofs_generated_per_s": statistics.median(proofs),
        "merkle_proofs_verified_per_s": statistics.median(checks),
    }
