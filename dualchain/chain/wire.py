"""Conversions between ledger values and their protobuf wire messages.

Decoding is strict: wrong field lengths, unknown enum values and unparsable bytes raise DecodeError
with a reason, so the gRPC edge can answer INVALID_ARGUMENT without the value going further.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from dualchain.chain.errors import DecodeError
from dualchain.chain.identity import ID_BYTES
from dualchain.chain.types import (
    HASH_BYTES,
    MAX_CHAIN_ID,
    MAX_KEY,
    MAX_PAYLOAD,
    MAX_SIGNATURE,
    MAX_TXS_PER_BLOCK,
    MAX_VOTES,
    Block,
    BlockHeader,
    QuorumCertificate,
    Transaction,
    TxKind,
    Vote,
    VoteStep,
)
from dualchain.proto.v1 import ledger_pb2 as pb


def _fixed(value: bytes, length: int, field: str) -> bytes:
    if len(value) != length:
        raise DecodeError(f"{field} must be {length} bytes, got {len(value)}")
    return bytes(value)


def _bounded(value: bytes, limit: int, field: str) -> bytes:
    if len(value) > limit:
        raise DecodeError(f"{field} is {len(value)} bytes, above the limit of {limit}")
    return bytes(value)


def _chain_id(value: str) -> str:
    if len(value.encode("utf-8")) > MAX_CHAIN_ID:
        raise DecodeError(f"chain_id is longer than {MAX_CHAIN_ID} bytes")
    return value


def _step(value: int) -> VoteStep:
    try:
        return VoteStep(value)
    except ValueError as exc:
        raise DecodeError(f"unknown vote step {value}") from exc


def parse(message_type: type[Message], data: bytes) -> Message:
    """Parses protobuf bytes, turning every parse failure into DecodeError."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"malformed {message_type.DESCRIPTOR.name}: {exc}") from exc
    return message


# --- transactions -----------------------------------------------------------------------------


def tx_to_proto(tx: Transaction) -> pb.Transaction:
    return pb.Transaction(
        chain_id=tx.chain_id,
        kind=int(tx.kind),
        sender=tx.sender,
        public_key=tx.public_key,
        nonce=tx.nonce,
        timestamp_ms=tx.timestamp_ms,
        payload=tx.payload,
        signature=tx.signature,
    )


def tx_from_proto(msg: pb.Transaction) -> Transaction:
    try:
        kind = TxKind(msg.kind)
    except ValueError as exc:
        raise DecodeError(f"unknown transaction kind {msg.kind}") from exc
    return Transaction(
        chain_id=_chain_id(msg.chain_id),
        kind=kind,
        sender=_fixed(msg.sender, ID_BYTES, "sender"),
        public_key=_bounded(msg.public_key, MAX_KEY, "public_key"),
        nonce=msg.nonce,
        timestamp_ms=msg.timestamp_ms,
        payload=_bounded(msg.payload, MAX_PAYLOAD, "payload"),
        signature=_bounded(msg.signature, MAX_SIGNATURE, "signature"),
    )


# --- votes and certificates -------------------------------------------------------------------


def vote_to_proto(vote: Vote) -> pb.Vote:
    return pb.Vote(
        chain_id=vote.chain_id,
        height=vote.height,
        round=vote.round,
        step=int(vote.step),
        block_hash=vote.block_hash,
        voter=vote.voter,
        signature=vote.signature,
    )


def vote_from_proto(msg: pb.Vote) -> Vote:
    return Vote(
        chain_id=_chain_id(msg.chain_id),
        height=msg.height,
        round=msg.round,
        step=_step(msg.step),
        block_hash=_fixed(msg.block_hash, HASH_BYTES, "block_hash"),
        voter=_fixed(msg.voter, ID_BYTES, "voter"),
        signature=_bounded(msg.signature, MAX_SIGNATURE, "signature"),
    )


def qc_to_proto(qc: QuorumCertificate) -> pb.QuorumCertificate:
    return pb.QuorumCertificate(
        chain_id=qc.chain_id,
        height=qc.height,
        round=qc.round,
        step=int(qc.step),
        block_hash=qc.block_hash,
        signatures=[pb.Signature(signer=v, signature=s) for v, s in qc.signatures],
    )


def qc_from_proto(msg: pb.QuorumCertificate) -> QuorumCertificate:
    if len(msg.signatures) > MAX_VOTES:
        raise DecodeError(f"quorum certificate has more than {MAX_VOTES} signatures")
    signatures = tuple(
        (
            _fixed(s.signer, ID_BYTES, "signer"),
            _bounded(s.signature, MAX_SIGNATURE, "signature"),
        )
        for s in msg.signatures
    )
    voters = [v for v, _ in signatures]
    if voters != sorted(set(voters)):
        raise DecodeError("quorum certificate signers are not strictly sorted (duplicate?)")
    return QuorumCertificate(
        chain_id=_chain_id(msg.chain_id),
        height=msg.height,
        round=msg.round,
        step=_step(msg.step),
        block_hash=_fixed(msg.block_hash, HASH_BYTES, "block_hash"),
        signatures=signatures,
    )


# --- blocks -----------------------------------------------------------------------------------


def header_to_proto(header: BlockHeader) -> pb.BlockHeader:
    msg = pb.BlockHeader(
        chain_id=header.chain_id,
        height=header.height,
        parent_hash=header.parent_hash,
        tx_root=header.tx_root,
        timestamp_ms=header.timestamp_ms,
        proposer=header.proposer,
        app_hash=header.app_hash,
        view=header.view,
        pow_target=header.pow_target,
        pow_nonce=header.pow_nonce,
        signature=header.signature,
    )
    if header.parent_qc is not None:
        msg.parent_qc.CopyFrom(qc_to_proto(header.parent_qc))
    return msg


def header_from_proto(msg: pb.BlockHeader) -> BlockHeader:
    return BlockHeader(
        chain_id=_chain_id(msg.chain_id),
        height=msg.height,
        parent_hash=_fixed(msg.parent_hash, HASH_BYTES, "parent_hash"),
        tx_root=_fixed(msg.tx_root, HASH_BYTES, "tx_root"),
        timestamp_ms=msg.timestamp_ms,
        proposer=_fixed(msg.proposer, ID_BYTES, "proposer"),
        app_hash=_fixed(msg.app_hash, HASH_BYTES, "app_hash"),
        view=msg.view,
        parent_qc=qc_from_proto(msg.parent_qc) if msg.HasField("parent_qc") else None,
        pow_target=_fixed(msg.pow_target, HASH_BYTES, "pow_target"),
        pow_nonce=msg.pow_nonce,
        signature=_bounded(msg.signature, MAX_SIGNATURE, "signature"),
    )


def block_to_proto(block: Block) -> pb.Block:
    return pb.Block(
        header=header_to_proto(block.header),
        body=pb.BlockBody(transactions=[tx_to_proto(tx) for tx in block.transactions]),
    )


def block_from_proto(msg: pb.Block) -> Block:
    if not msg.HasField("header"):
        raise DecodeError("block has no header")
    if len(msg.body.transactions) > MAX_TXS_PER_BLOCK:
        raise DecodeError(f"block has more than {MAX_TXS_PER_BLOCK} transactions")
    return Block(
        header_from_proto(msg.header),
        tuple(tx_from_proto(t) for t in msg.body.transactions),
    )


def decode_transaction(data: bytes) -> Transaction:
    """Protobuf bytes of a Transaction to a value, or DecodeError."""
    return tx_from_proto(parse(pb.Transaction, data))  # type: ignore[arg-type]


def decode_block(data: bytes) -> Block:
    """Protobuf bytes of a Block to a value, or DecodeError."""
    return block_from_proto(parse(pb.Block, data))  # type: ignore[arg-type]


def decode_vote(data: bytes) -> Vote:
    return vote_from_proto(parse(pb.Vote, data))  # type: ignore[arg-type]
