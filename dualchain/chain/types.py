"""Ledger values: transactions, block headers, blocks, votes and quorum certificates (a leader's
proposals are in ``proposals``).

Each value is a frozen dataclass with one canonical encoding (see ``canonical``). Hashes are
SHA-256 over that encoding; signatures are ML-DSA over the encoding without the signature, under the
context of the value's ``Domain``.

- A transaction's hash covers its signature (it names exactly the bytes in a block); its nonce,
  not its hash, is what stops replays.
- A block's hash is the hash of its header without the header signature, so a proof-of-work nonce
  can be searched without re-signing, and the proposer signs that same hash.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field, replace
from functools import cached_property

from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.errors import DecodeError
from dualchain.chain.identity import ID_BYTES

HASH_BYTES = 32
ZERO_HASH = bytes(HASH_BYTES)

# Decoder bounds: generous upper limits that keep a malicious length from allocating gigabytes.
# Tighter, configurable limits are enforced by validation (ChainParams).
MAX_CHAIN_ID = 64
MAX_KEY = 4096
MAX_SIGNATURE = 8192
MAX_PAYLOAD = 16 * 1024 * 1024
MAX_TXS_PER_BLOCK = 100_000
MAX_TX_ENCODED = MAX_PAYLOAD + 64 * 1024
MAX_VOTES = 1024
MAX_BLOCK_ENCODED = 256 * 1024 * 1024

TX_TAG = b"DCT1"
TX_UNSIGNED_TAG = b"DCt1"
HEADER_TAG = b"DCH1"
HEADER_UNSIGNED_TAG = b"DCh1"
BLOCK_TAG = b"DCB1"
VOTE_TAG = b"DCV1"
VOTE_UNSIGNED_TAG = b"DCv1"
QC_TAG = b"DCQ1"
PROPOSAL_TAG = b"DCP1"
PROPOSAL_UNSIGNED_TAG = b"DCp1"
SIGNED_PROPOSAL_TAG = b"DCS1"
COMPACT_BLOCK_TAG = b"DCK1"
COMPACT_PROPOSAL_TAG = b"DCQ1"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class TxKind(enum.IntEnum):
    """Transaction kinds; values match ``dualchain.v1.TxKind`` in proto/v1/ledger.proto."""

    UNSPECIFIED = 0
    MEMO = 1  # opaque application bytes: the demo and benchmarks
    VALIDATOR_REGISTER = 2
    VALIDATOR_REMOVE = 3
    CLIENT_REGISTER = 10
    STATE_REPORT = 11
    GROUP_ASSIGNMENT = 12
    TASK_PLAN = 13
    NODE_JOIN_REQUEST = 14
    MODEL_VERSION = 20
    EVIDENCE = 21
    ANCHOR = 22
    REWARD = 23
    CLIENT_READMIT = 24  # an operator lifts a client's exclusion (CTBC)


class VoteStep(enum.IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2


def _kind(value: int, reader_what: str) -> TxKind:
    try:
        return TxKind(value)
    except ValueError as exc:
        raise DecodeError(f"{reader_what}: unknown transaction kind {value}") from exc


@dataclass(frozen=True)
class Transaction:
    chain_id: str
    kind: TxKind
    sender: bytes  # identity id: SHA-256 of public_key
    public_key: bytes
    nonce: int
    timestamp_ms: int
    payload: bytes
    signature: bytes = b""

    def _write_body(self, w: Writer) -> Writer:
        return (
            w.text(self.chain_id)
            .u32(int(self.kind))
            .fixed(self.sender, ID_BYTES)
            .var(self.public_key)
            .u64(self.nonce)
            .u64(self.timestamp_ms)
            .var(self.payload)
        )

    @cached_property
    def signing_bytes(self) -> bytes:
        return self._write_body(Writer(TX_UNSIGNED_TAG)).bytes()

    @cached_property
    def encoded(self) -> bytes:
        return self._write_body(Writer(TX_TAG)).var(self.signature).bytes()

    @cached_property
    def hash(self) -> bytes:
        return sha256(self.encoded)

    @property
    def size(self) -> int:
        return len(self.encoded)

    def with_signature(self, signature: bytes) -> Transaction:
        return replace(self, signature=signature)

    @classmethod
    def decode(cls, data: bytes) -> Transaction:
        tx = _decode_transaction_fast(data)
        return tx if tx is not None else cls._decode_checked(data)

    @classmethod
    def _decode_checked(cls, data: bytes) -> Transaction:
        """The field-by-field decoder: it names what is wrong with a malformed encoding."""
        r = Reader(data, TX_TAG, "transaction")
        tx = cls._read_body(r, "transaction")
        tx = replace(tx, signature=r.var("signature", MAX_SIGNATURE))
        r.finish()
        # The encoding is canonical (one value, one encoding), so the input is the encoding:
        # keep it rather than re-encode when the hash is needed. The signed bytes are the same
        # body under the unsigned tag, without the trailing length-prefixed signature.
        raw = bytes(data)
        tx.__dict__["encoded"] = raw
        tx.__dict__["signing_bytes"] = TX_UNSIGNED_TAG + raw[4 : len(raw) - 4 - len(tx.signature)]
        return tx

    @classmethod
    def _read_body(cls, r: Reader, what: str) -> Transaction:
        return cls(
            chain_id=r.text("chain_id", MAX_CHAIN_ID),
            kind=_kind(r.u32("kind"), what),
            sender=r.fixed(ID_BYTES, "sender"),
            public_key=r.var("public_key", MAX_KEY),
            nonce=r.u64("nonce"),
            timestamp_ms=r.u64("timestamp_ms"),
            payload=r.var("payload", MAX_PAYLOAD),
        )


_LEN = struct.Struct(">I")
_KIND_SENDER = struct.Struct(f">I{ID_BYTES}s")
_NONCE_TIME = struct.Struct(">QQ")
_TX_KINDS = {int(k): k for k in TxKind}


def _decode_transaction_fast(data: bytes) -> Transaction | None:
    """Decodes a well-formed transaction in one pass; None for anything else.

    Every transaction is decoded on each replica at least once (gossip, blocks, sync), so this
    path skips the general reader's per-field bookkeeping and the frozen dataclass's checked
    ``__init__``. It enforces the same rules (tag, limits, UTF-8, known kind, no trailing
    bytes); on any doubt it returns None and the caller runs the field-by-field decoder, which
    raises a DecodeError that names the fault.
    """
    if type(data) is not bytes or data[:4] != TX_TAG:
        return None
    size = len(data)
    try:
        (n,) = _LEN.unpack_from(data, 4)
        if n > MAX_CHAIN_ID:
            return None
        chain_id = data[8 : 8 + n].decode("utf-8")
        kind_value, sender = _KIND_SENDER.unpack_from(data, 8 + n)
        at = 8 + n + _KIND_SENDER.size
        (n,) = _LEN.unpack_from(data, at)
        if n > MAX_KEY:
            return None
        public_key = data[at + 4 : at + 4 + n]
        at += 4 + n
        nonce, timestamp_ms = _NONCE_TIME.unpack_from(data, at)
        at += _NONCE_TIME.size
        (n,) = _LEN.unpack_from(data, at)
        if n > MAX_PAYLOAD:
            return None
        payload = data[at + 4 : at + 4 + n]
        at += 4 + n
        (n,) = _LEN.unpack_from(data, at)
        if n > MAX_SIGNATURE or at + 4 + n != size:
            return None
        signature = data[at + 4 :]
        kind = _TX_KINDS[kind_value]
    except (struct.error, KeyError, UnicodeDecodeError):
        return None
    tx = object.__new__(Transaction)
    tx.__dict__.update(
        chain_id=chain_id, kind=kind, sender=sender, public_key=public_key, nonce=nonce,
        timestamp_ms=timestamp_ms, payload=payload, signature=signature, encoded=data,
        signing_bytes=TX_UNSIGNED_TAG + data[4 : size - 4 - len(signature)],
    )
    return tx


@dataclass(frozen=True)
class Vote:
    """A committee member's signed vote for a block (or for nil: block_hash all zero)."""

    chain_id: str
    height: int
    round: int
    step: VoteStep
    block_hash: bytes
    voter: bytes
    signature: bytes = b""

    def _write_body(self, w: Writer) -> Writer:
        return (
            w.text(self.chain_id)
            .u64(self.height)
            .u64(self.round)
            .u8(int(self.step))
            .fixed(self.block_hash, HASH_BYTES)
            .fixed(self.voter, ID_BYTES)
        )

    @cached_property
    def signing_bytes(self) -> bytes:
        return self._write_body(Writer(VOTE_UNSIGNED_TAG)).bytes()

    @cached_property
    def encoded(self) -> bytes:
        return self._write_body(Writer(VOTE_TAG)).var(self.signature).bytes()

    @classmethod
    def decode(cls, data: bytes) -> Vote:
        r = Reader(data, VOTE_TAG, "vote")
        vote = cls._read(r)
        r.finish()
        return vote

    @classmethod
    def _read(cls, r: Reader) -> Vote:
        chain_id = r.text("chain_id", MAX_CHAIN_ID)
        height = r.u64("height")
        round_ = r.u64("round")
        step_value = r.u8("step")
        try:
            step = VoteStep(step_value)
        except ValueError as exc:
            raise DecodeError(f"vote: unknown step {step_value}") from exc
        return cls(
            chain_id=chain_id,
            height=height,
            round=round_,
            step=step,
            block_hash=r.fixed(HASH_BYTES, "block_hash"),
            voter=r.fixed(ID_BYTES, "voter"),
            signature=r.var("signature", MAX_SIGNATURE),
        )


@dataclass(frozen=True)
class QuorumCertificate:
    """2f+1 signatures of one step's votes for one block, sorted by voter id."""

    chain_id: str
    height: int
    round: int
    step: VoteStep
    block_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]  # (voter id, signature)

    def votes(self) -> list[Vote]:
        """The individual votes this certificate aggregates, for signature checks."""
        return [
            Vote(self.chain_id, self.height, self.round, self.step, self.block_hash, voter, sig)
            for voter, sig in self.signatures
        ]

    @cached_property
    def encoded(self) -> bytes:
        w = (
            Writer(QC_TAG)
            .text(self.chain_id)
            .u64(self.height)
            .u64(self.round)
            .u8(int(self.step))
            .fixed(self.block_hash, HASH_BYTES)
            .count(len(self.signatures))
        )
        for voter, sig in self.signatures:
            w.fixed(voter, ID_BYTES).var(sig)
        return w.bytes()

    @classmethod
    def decode(cls, data: bytes) -> QuorumCertificate:
        r = Reader(data, QC_TAG, "quorum certificate")
        chain_id = r.text("chain_id", MAX_CHAIN_ID)
        height = r.u64("height")
        round_ = r.u64("round")
        step_value = r.u8("step")
        try:
            step = VoteStep(step_value)
        except ValueError as exc:
            raise DecodeError(f"quorum certificate: unknown step {step_value}") from exc
        block_hash = r.fixed(HASH_BYTES, "block_hash")
        n = r.count("signatures", MAX_VOTES)
        sigs = tuple(
            (r.fixed(ID_BYTES, "voter"), r.var("signature", MAX_SIGNATURE)) for _ in range(n)
        )
        r.finish()
        voters = [v for v, _ in sigs]
        if voters != sorted(set(voters)):
            raise DecodeError("quorum certificate: voters not strictly sorted (duplicate?)")
        return cls(chain_id, height, round_, step, block_hash, sigs)


@dataclass(frozen=True)
class BlockHeader:
    chain_id: str
    height: int
    parent_hash: bytes
    tx_root: bytes
    timestamp_ms: int
    proposer: bytes  # identity id of the proposer or miner
    app_hash: bytes = ZERO_HASH  # application state after the parent (set by chain apps)
    # Consensus fields: each engine uses its own and leaves the others at their zero values.
    view: int = 0  # committee: the round in which this block was proposed
    parent_qc: QuorumCertificate | None = None  # committee: the certificate committing the parent
    pow_target: bytes = ZERO_HASH  # proof of work: 256-bit big-endian target
    pow_nonce: int = 0
    signature: bytes = b""

    def _write_body(self, w: Writer) -> Writer:
        w = (
            w.text(self.chain_id)
            .u64(self.height)
            .fixed(self.parent_hash, HASH_BYTES)
            .fixed(self.tx_root, HASH_BYTES)
            .u64(self.timestamp_ms)
            .fixed(self.proposer, ID_BYTES)
            .fixed(self.app_hash, HASH_BYTES)
            .u64(self.view)
            .flag(self.parent_qc is not None)
        )
        if self.parent_qc is not None:
            w.raw(self.parent_qc.encoded)
        return w.fixed(self.pow_target, HASH_BYTES).u64(self.pow_nonce)

    @cached_property
    def signing_bytes(self) -> bytes:
        return self._write_body(Writer(HEADER_UNSIGNED_TAG)).bytes()

    @cached_property
    def hash(self) -> bytes:
        return sha256(self.signing_bytes)

    @cached_property
    def encoded(self) -> bytes:
        return self._write_body(Writer(HEADER_TAG)).var(self.signature).bytes()

    def with_signature(self, signature: bytes) -> BlockHeader:
        return replace(self, signature=signature)

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        r = Reader(data, HEADER_TAG, "block header")
        header = cls._read(r)
        r.finish()
        header.__dict__["encoded"] = bytes(data)  # canonical: see Transaction.decode
        return header

    @classmethod
    def _read(cls, r: Reader) -> BlockHeader:
        chain_id = r.text("chain_id", MAX_CHAIN_ID)
        height = r.u64("height")
        parent_hash = r.fixed(HASH_BYTES, "parent_hash")
        tx_root = r.fixed(HASH_BYTES, "tx_root")
        timestamp_ms = r.u64("timestamp_ms")
        proposer = r.fixed(ID_BYTES, "proposer")
        app_hash = r.fixed(HASH_BYTES, "app_hash")
        view = r.u64("view")
        parent_qc = None
        if r.flag("parent_qc"):
            parent_qc = QuorumCertificate.decode(r.raw("parent_qc", MAX_VOTES * 9000))
        return cls(
            chain_id=chain_id,
            height=height,
            parent_hash=parent_hash,
            tx_root=tx_root,
            timestamp_ms=timestamp_ms,
            proposer=proposer,
            app_hash=app_hash,
            view=view,
            parent_qc=parent_qc,
            pow_target=r.fixed(HASH_BYTES, "pow_target"),
            pow_nonce=r.u64("pow_nonce"),
            signature=r.var("signature", MAX_SIGNATURE),
        )


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    transactions: tuple[Transaction, ...] = field(default_factory=tuple)

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @cached_property
    def encoded(self) -> bytes:
        w = Writer(BLOCK_TAG).raw(self.header.encoded).count(len(self.transactions))
        for tx in self.transactions:
            w.raw(tx.encoded)
        return w.bytes()

    @property
    def size(self) -> int:
        return len(self.encoded)

    @classmethod
    def decode(cls, data: bytes) -> Block:
        r = Reader(data, BLOCK_TAG, "block")
        header = BlockHeader.decode(r.raw("header", MAX_VOTES * 9000 + 64 * 1024))
        n = r.count("transactions", MAX_TXS_PER_BLOCK)
        txs = tuple(Transaction.decode(r.raw("transaction", MAX_TX_ENCODED)) for _ in range(n))
        r.finish()
        block = cls(header, txs)
        block.__dict__["encoded"] = bytes(data)  # canonical: see Transaction.decode
        return block

    @staticmethod
    def peek_header(data: bytes) -> BlockHeader:
        """The header of an encoded block without decoding its transactions: enough to drop
        a block already known before paying for the rest."""
        r = Reader(data, BLOCK_TAG, "block")
        return BlockHeader.decode(r.raw("header", MAX_VOTES * 9000 + 64 * 1024))


@dataclass(frozen=True)
class CompactBlock:
    """A block as announced to peers that hold its transactions: the header, the first
    transaction in full (a proof-of-work block's reward, which no mempool holds) and the hashes
    of the others."""

    header: BlockHeader
    first: Transaction
    hashes: tuple[bytes, ...]

    @classmethod
    def of(cls, block: Block) -> CompactBlock:
        return cls(block.header, block.transactions[0],
                   tuple(tx.hash for tx in block.transactions[1:]))

    @cached_property
    def encoded(self) -> bytes:
        w = Writer(COMPACT_BLOCK_TAG).raw(self.header.encoded).raw(self.first.encoded)
        w.count(len(self.hashes))
        for h in self.hashes:
            w.fixed(h, HASH_BYTES)
        return w.bytes()

    @classmethod
    def decode(cls, data: bytes) -> CompactBlock:
        r = Reader(data, COMPACT_BLOCK_TAG, "compact block")
        header = BlockHeader.decode(r.raw("header", MAX_VOTES * 9000 + 64 * 1024))
        first = Transaction.decode(r.raw("first", MAX_TX_ENCODED))
        n = r.count("hashes", MAX_TXS_PER_BLOCK)
        hashes = tuple(r.fixed(HASH_BYTES, "hash") for _ in range(n))
        r.finish()
        return cls(header, first, hashes)
