"""Ledger validation rules: sizes, chain id, signatures, nonces, timestamps and parent linkage.

Rules are plain functions over values so that mempool admission, block validation, block sync and
the tests all run the same checks. Each failure raises a ValidationError subclass with a reason.

Transaction timestamps are judged against the local clock on admission to the mempool, but against
the block's own timestamp inside a block, so that a replica syncing old blocks reaches the same
verdict as the replicas that saw them live.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dualchain.chain.errors import (
    OversizedError,
    ReplayError,
    SignatureError,
    ValidationError,
)
from dualchain.chain.identity import Domain, Signer, identity_id
from dualchain.chain.merkle import merkle_root
from dualchain.chain.mldsa import DEFAULT_ALGORITHM, Algorithm
from dualchain.chain.types import (
    ZERO_HASH,
    Block,
    BlockHeader,
    Transaction,
    TxKind,
)
from dualchain.chain.verifier import SignatureVerifier, VerifyRequest


@dataclass(frozen=True)
class LedgerParams:
    """The rules of one chain, fixed by its genesis."""

    chain_id: str
    algorithm: Algorithm = DEFAULT_ALGORITHM
    max_tx_bytes: int = 64 * 1024
    max_payload_bytes: int = 48 * 1024
    max_block_txs: int = 5_000
    max_block_bytes: int = 32 * 1024 * 1024
    max_future_drift_ms: int = 30_000  # how far a timestamp may run ahead of the reference clock
    max_tx_age_ms: int = 600_000  # how far a tx timestamp may lag behind the reference clock


def check_transaction_shape(tx: Transaction, params: LedgerParams) -> None:
    """Everything about a transaction that needs neither a signature check nor chain state."""
    if tx.chain_id != params.chain_id:
        raise ValidationError(
            f"transaction is for chain {tx.chain_id!r}, this is {params.chain_id!r}",
            code="wrong_chain",
        )
    if tx.kind == TxKind.UNSPECIFIED:
        raise ValidationError("transaction kind is unspecified", code="bad_kind")
    if tx.size > params.max_tx_bytes:
        raise OversizedError(f"transaction is {tx.size} bytes, limit {params.max_tx_bytes}")
    if len(tx.payload) > params.max_payload_bytes:
        raise OversizedError(
            f"payload is {len(tx.payload)} bytes, limit {params.max_payload_bytes}"
        )
    alg = params.algorithm
    if len(tx.public_key) != alg.public_key_bytes:
        raise SignatureError(
            f"sender key is {len(tx.public_key)} bytes; this chain uses {alg.label} "
            f"({alg.public_key_bytes} bytes)"
        )
    if identity_id(tx.public_key) != tx.sender:
        raise SignatureError("sender id is not SHA-256 of the sender's public key")
    if len(tx.signature) != alg.signature_bytes:
        raise SignatureError(
            f"signature is {len(tx.signature)} bytes, {alg.label} signatures are "
            f"{alg.signature_bytes}"
        )


def check_timestamp(timestamp_ms: int, reference_ms: int, params: LedgerParams, what: str) -> None:
    if timestamp_ms > reference_ms + params.max_future_drift_ms:
        raise ValidationError(
            f"{what} timestamp {timestamp_ms} is more than {params.max_future_drift_ms} ms "
            f"ahead of {reference_ms}",
            code="future_timestamp",
        )
    if timestamp_ms < reference_ms - params.max_tx_age_ms:
        raise ValidationError(
            f"{what} timestamp {timestamp_ms} is more than {params.max_tx_age_ms} ms "
            f"behind {reference_ms}",
            code="stale_timestamp",
        )


def tx_verify_request(tx: Transaction, params: LedgerParams) -> VerifyRequest:
    return VerifyRequest(
        params.algorithm, tx.public_key, Domain.TRANSACTION, tx.signing_bytes, tx.signature
    )


def check_transaction(
    tx: Transaction, params: LedgerParams, verifier: SignatureVerifier, now_ms: int
) -> None:
    """Admission check of a single transaction (mempool, SubmitTx): stateless rules + signature."""
    check_transaction_shape(tx, params)
    check_timestamp(tx.timestamp_ms, now_ms, params, "transaction")
    if not verifier.verify_request(tx_verify_request(tx, params)):
        raise SignatureError("transaction signature does not verify")


def check_nonce(tx: Transaction, next_nonce: int) -> None:
    if tx.nonce < next_nonce:
        raise ReplayError(
            f"nonce {tx.nonce} of sender {tx.sender.hex()[:16]} was already used "
            f"(next is {next_nonce})"
        )
    if tx.nonce > next_nonce:
        raise ValidationError(
            f"nonce {tx.nonce} of sender {tx.sender.hex()[:16]} skips ahead (next is {next_nonce})",
            code="nonce_gap",
        )


def check_header_linkage(
    header: BlockHeader, parent: BlockHeader | None, params: LedgerParams
) -> None:
    """Chain id, height, parent hash and timestamp order of a header against its parent."""
    if header.chain_id != params.chain_id:
        raise ValidationError(
            f"block is for chain {header.chain_id!r}, this is {params.chain_id!r}",
            code="wrong_chain",
        )
    if parent is None:
        if header.height != 0 or header.parent_hash != ZERO_HASH:
            raise ValidationError("a block without parent must be genesis (height 0, zero parent)")
        return
    if header.parent_hash != parent.hash:
        raise ValidationError("block does not link to its parent's hash", code="bad_parent")
    if header.height != parent.height + 1:
        raise ValidationError(
            f"block height {header.height} does not follow parent height {parent.height}",
            code="bad_height",
        )
    if header.timestamp_ms < parent.timestamp_ms:
        raise ValidationError(
            f"block timestamp {header.timestamp_ms} is before its parent's {parent.timestamp_ms}",
            code="bad_timestamp",
        )


def check_block(
    block: Block,
    parent: BlockHeader | None,
    params: LedgerParams,
    verifier: SignatureVerifier,
    now_ms: int,
    next_nonce: Callable[[bytes], int] | None,
    proposer_key: Callable[[bytes], bytes | None] | None = None,
    verified: Callable[[bytes], bool] | None = None,
) -> None:
    """Full validation of a block against its parent and the chain state at the parent.

    ``next_nonce`` gives each sender's next nonce after the parent (None: nonces are checked
    later, e.g. when a proof-of-work side branch is connected); ``proposer_key`` resolves the
    proposer id to a public key (None: the header signature is not checked here, e.g. proof of
    work blocks whose consensus engine checks the seal instead). ``verified(tx_hash)`` names
    transactions whose signatures this replica already checked (its mempool holds only those; a
    transaction hash covers the signature, so the same hash is the same signed bytes): their
    signature and shape checks (the mempool admitted them under the same parameters) are not
    repeated.
    """
    header = block.header
    check_header_linkage(header, parent, params)
    if header.timestamp_ms > now_ms + params.max_future_drift_ms:
        raise ValidationError(
            f"block timestamp {header.timestamp_ms} is more than {params.max_future_drift_ms} ms "
            "in the future",
            code="future_timestamp",
        )
    if len(block.transactions) > params.max_block_txs:
        raise OversizedError(
            f"block has {len(block.transactions)} transactions, limit {params.max_block_txs}"
        )
    if block.size > params.max_block_bytes:
        raise OversizedError(f"block is {block.size} bytes, limit {params.max_block_bytes}")
    hashes = [tx.hash for tx in block.transactions]
    if len(set(hashes)) != len(hashes):
        raise ValidationError("block contains the same transaction twice", code="duplicate_tx")
    if merkle_root(hashes) != header.tx_root:
        raise ValidationError("transaction Merkle root does not match the header", code="bad_root")
    if proposer_key is not None:
        check_header_signature(header, params, verifier, proposer_key)

    unchecked = block.transactions if verified is None else \
        [tx for tx in block.transactions if not verified(tx.hash)]
    for tx in unchecked:
        check_transaction_shape(tx, params)
    for tx in block.transactions:
        check_timestamp(tx.timestamp_ms, header.timestamp_ms, params, "transaction")
    if next_nonce is not None:
        check_nonces(block.transactions, next_nonce)
    check_signatures(unchecked, params, verifier)


def check_nonces(txs: Sequence[Transaction], next_nonce: Callable[[bytes], int]) -> None:
    """Each sender's transactions carry consecutive nonces from its next nonce on."""
    pending: dict[bytes, int] = defaultdict(lambda: -1)
    for tx in txs:
        expected = pending[tx.sender] if pending[tx.sender] >= 0 else next_nonce(tx.sender)
        check_nonce(tx, expected)
        pending[tx.sender] = tx.nonce + 1


def check_signatures(
    txs: Sequence[Transaction], params: LedgerParams, verifier: SignatureVerifier
) -> None:
    """Checks every transaction signature as one batch on the verifier's pool."""
    results = verifier.verify_batch([tx_verify_request(tx, params) for tx in txs])
    for tx, ok in zip(txs, results, strict=True):
        if not ok:
            raise SignatureError(f"signature of transaction {tx.hash.hex()[:16]} does not verify")


def check_header_signature(
    header: BlockHeader,
    params: LedgerParams,
    verifier: SignatureVerifier,
    proposer_key: Callable[[bytes], bytes | None],
) -> None:
    key = proposer_key(header.proposer)
    if key is None:
        raise ValidationError(
            f"block proposer {header.proposer.hex()[:16]} is unknown", code="unknown_proposer"
        )
    if not verifier.verify(params.algorithm, key, Domain.BLOCK, header.signing_bytes,
                           header.signature):
        raise SignatureError("block header signature does not verify")


def sign_transaction(
    signer: Signer,
    chain_id: str,
    kind: TxKind,
    payload: bytes,
    nonce: int,
    timestamp_ms: int,
) -> Transaction:
    """Builds and signs a transaction from ``signer``."""
    unsigned = Transaction(
        chain_id=chain_id,
        kind=kind,
        sender=signer.id,
        public_key=signer.public_key,
        nonce=nonce,
        timestamp_ms=timestamp_ms,
        payload=payload,
    )
    return unsigned.with_signature(signer.sign(Domain.TRANSACTION, unsigned.signing_bytes))


def sign_header(signer: Signer, header: BlockHeader) -> BlockHeader:
    return header.with_signature(signer.sign(Domain.BLOCK, header.signing_bytes))


def build_block(
    signer: Signer,
    parent: BlockHeader | None,
    transactions: Sequence[Transaction],
    chain_id: str,
    timestamp_ms: int,
    **consensus: object,
) -> Block:
    """A signed block on top of ``parent`` (None: genesis) carrying ``transactions``."""
    header = BlockHeader(
        chain_id=chain_id,
        height=0 if parent is None else parent.height + 1,
        parent_hash=ZERO_HASH if parent is None else parent.hash,
        tx_root=merkle_root([tx.hash for tx in transactions]),
        timestamp_ms=timestamp_ms,
        proposer=signer.id,
        **consensus,  # type: ignore[arg-type]
    )
    return Block(sign_header(signer, header), tuple(transactions))
