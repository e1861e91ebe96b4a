"""`dualchain demo`: what exists today, end to end on one machine, with a report.

Part 1, the ledger in one process: ML-DSA identities written to key files, signed transactions,
admission checks and the mempool (with deliberately bad transactions that must be refused),
signed blocks validated in full and appended to a SQLite block store, the store reopened and
checked, and a Merkle inclusion proof verified against a stored header.

Part 2, CTBC across processes: a 4-replica committee chain (one daemon process each) on
loopback, fed signed transactions by a load generator process, with progress every second.

The federated-learning testbed (`dualchain up`) replaces it as the main job once it lands.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from dualchain.chain.clock import now_ms
from dualchain.chain.errors import DualchainError
from dualchain.chain.identity import Signer, load_key_file
from dualchain.chain.mempool import Mempool
from dualchain.chain.merkle import inclusion_proof, verify_inclusion
from dualchain.chain.mldsa import DEFAULT_ALGORITHM, DEFAULT_BACKEND, Algorithm
from dualchain.chain.store import BlockStore
from dualchain.chain.types import Transaction, TxKind
from dualchain.chain.validation import (
    LedgerParams,
    build_block,
    check_block,
    check_transaction,
    sign_transaction,
)
from dualchain.chain.verifier import SignatureVerifier

CHAIN_ID = "dualchain-demo"


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("runs/demo")
    senders: int = 8
    txs_per_sender: int = 50
    block_txs: int = 100
    algorithm: Algorithm = DEFAULT_ALGORITHM
    backend: str = DEFAULT_BACKEND
    seed: int = 1
    ctbc_nodes: int = 4  # 0 skips part 2
    ctbc_seconds: float = 10.0
    ctbc_rate: float = 300.0


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _identities(config: DemoConfig, keys: Path) -> tuple[Signer, list[Signer]]:
    """Creates the proposer and the senders, writes their key files and loads them back."""
    keys.mkdir(mode=0o700, parents=True)
    names = ["proposer"] + [f"sender-{i}" for i in range(config.senders)]
    for name in names:
        Signer.generate(config.algorithm, config.backend).save(keys / f"{name}.key")
    loaded = [load_key_file(keys / f"{name}.key", config.backend) for name in names]
    return loaded[0], loaded[1:]


def _bad_transactions(good: list[Transaction], signer: Signer, now: int) -> list[Transaction]:
    """Transactions every replica must refuse: tampered, wrong chain, replayed, from the future."""
    return [
        replace(good[0], payload=b"tampered after signing"),
        sign_transaction(signer, "some-other-chain", TxKind.MEMO, b"x", 0, now),
        good[0],  # already committed: a replay
        sign_transaction(signer, CHAIN_ID, TxKind.MEMO, b"late", 10_000, now + 3_600_000),
    ]


def _admit(
    txs: list[Transaction],
    params: LedgerParams,
    verifier: SignatureVerifier,
    mempool: Mempool,
    store: BlockStore,
    refused: Counter[str],
) -> None:
    """Admission as a chain daemon does it: ledger checks, then the mempool's own rules."""
    for tx in txs:
        try:
            check_transaction(tx, params, verifier, now_ms())
            mempool.add(tx, store.next_nonce(tx.sender), now_ms())
        except DualchainError as exc:
            refused[exc.code] += 1


def _run_ctbc(config: DemoConfig) -> dict:
    from dualchain.bench.consensus import consensus_benchmark

    _say(f"part 2: a {config.ctbc_nodes}-replica CTBC testnet, one process per replica")
    result = consensus_benchmark(
        nodes=config.ctbc_nodes, duration=config.ctbc_seconds, algorithm=config.algorithm,
        rate=config.ctbc_rate, senders=64, batch=64, directory=config.out,
        progress=lambda line: _say(f"ctbc: {line}"),
    )
    _say(f"ctbc: {result['committed']} transactions committed, {result['tps']} tx/s, "
         f"latency p50 {result['latency_p50_s']} s")
    return result


def run_demo(config: DemoConfig) -> dict:
    if config.out.exists():
        shutil.rmtree(config.out)
    config.out.mkdir(parents=True)
    params = LedgerParams(CHAIN_ID, algorithm=config.algorithm)
    rng = random.Random(config.seed)
    started = time.perf_counter()
    _say(f"{config.algorithm.label} identities on backend {config.backend}: 1 proposer, "
         f"{config.senders} senders (key files in {config.out / 'keys'})")
    proposer, senders = _identities(config, config.out / "keys")

    now = now_ms()
    total = config.senders * config.txs_per_sender
    _say(f"signing {total} transactions")
    jobs = [(s, n) for n in range(config.txs_per_sender) for s in senders]
    t0 = time.perf_counter()
    with ThreadPoolExecutor() as pool:
        txs = list(pool.map(
            lambda job: sign_transaction(
                job[0], CHAIN_ID, TxKind.MEMO, f"reading {job[1]}".encode(), job[1], now
            ),
            jobs,
        ))
    sign_s = time.perf_counter() - t0
    rng.shuffle(txs)  # arrival order differs from nonce order; the mempool sorts it out

    store = BlockStore(config.out / "chain.sqlite")
    verifier = SignatureVerifier(config.backend)
    mempool = Mempool()
    refused: Counter[str] = Counter()
    genesis = build_block(proposer, None, (), CHAIN_ID, now)
    check_block(genesis, None, params, verifier, now_ms(), store.next_nonce)
    store.append(genesis)

    _say("admitting transactions to the mempool (signatures checked)")
    t0 = time.perf_counter()
    _admit(txs, params, verifier, mempool, store, refused)
    admit_s = time.perf_counter() - t0
    _say(f"admitted {len(mempool)}")

    t0 = time.perf_counter()
    keys = {proposer.id: proposer.public_key}.get
    while len(mempool):
        head = store.head()
        assert head is not None
        batch = mempool.select(store.next_nonce, config.block_txs, params.max_block_bytes)
        if not batch:
            break
        block = build_block(proposer, head, batch, CHAIN_ID, max(now_ms(), head.timestamp_ms))
        check_block(block, head, params, verifier, now_ms(), store.next_nonce, keys)
        store.append(block)
        mempool.remove_committed(block.transactions, store.next_nonce)
        _say(f"block {block.height}: {len(batch)} txs, hash {block.hash.hex()[:16]}, "
             f"{len(mempool)} pending")
    blocks_s = time.perf_counter() - t0
    committed = total - len(mempool)
    _say("submitting bad transactions: tampered, wrong chain, replayed, from the future")
    _admit(_bad_transactions(txs, senders[0], now), params, verifier, mempool, store, refused)
    _say(f"refused {sum(refused.values())} of 4: {dict(refused)}")
    head_hash = store.head_hash()
    store.close()
    verifier.close()

    _say("reopening the store and checking it")
    with BlockStore(config.out / "chain.sqlite") as reopened:
        problems = reopened.check_consistency()
        height = reopened.height()
        sample = rng.choice(txs)
        location = reopened.find_tx(sample.hash)
        assert location is not None
        block = reopened.get_block(location.block_hash)
        leaves = [t.hash for t in block.transactions]
        proof = inclusion_proof(leaves, location.index)
        proof_ok = verify_inclusion(sample.hash, proof, block.header.tx_root)
        same_head = reopened.head_hash() == head_hash

    ledger_ok = not problems and proof_ok and same_head and committed == total \
        and sum(refused.values()) == 4
    ctbc = _run_ctbc(config) if config.ctbc_nodes else None
    report = {
        "chain_id": CHAIN_ID,
        "algorithm": config.algorithm.label,
        "backend": config.backend,
        "senders": config.senders,
        "transactions_signed": total,
        "transactions_committed": committed,
        "refused_by_code": dict(refused),
        "blocks": height,
        "head_hash": head_hash.hex() if head_hash else None,
        "sign_tx_per_s": round(total / sign_s, 1),
        "admit_tx_per_s": round(total / admit_s, 1),
        "commit_tx_per_s": round(total / blocks_s, 1) if blocks_s else None,
        "merkle_proof": {"tx": sample.hash.hex(), "height": location.height,
                         "index": location.index, "path_len": len(proof.path),
                         "verified": proof_ok},
        "consistency_problems": problems,
        "consistent": ledger_ok,
        "ctbc": ctbc,
        "seconds": round(time.perf_counter() - started, 2),
        "store": str(config.out / "chain.sqlite"),
    }
    (config.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _say(f"{report['transactions_committed']} transactions in {height} blocks; store consistent: "
         f"{not problems}; Merkle proof verified: {proof_ok}")
    _say(f"report written to {config.out / 'report.json'}")
    print(json.dumps(report, indent=2))
    return report
