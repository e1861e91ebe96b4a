"""``GetTxStatus``: where each of a sender's transactions stands on this daemon."""

from __future__ import annotations

from collections.abc import Sequence

from dualchain.chain.daemon.base import ChainNodeBase
from dualchain.chain.errors import DecodeError
from dualchain.proto.v1 import chain_pb2 as chain_pb

MAX_STATUS_HASHES = 256


async def tx_statuses(node: ChainNodeBase, hashes: Sequence[bytes]) -> list[chain_pb.TxStatus]:
    """One status per hash, in order: pending, committed (canonical chain), dropped (with the
    code and reason the node kept) or unknown. Raises DecodeError for a malformed request."""
    if len(hashes) > MAX_STATUS_HASHES:
        raise DecodeError(f"at most {MAX_STATUS_HASHES} hashes per request, got {len(hashes)}")
    if any(len(h) != 32 for h in hashes):
        raise DecodeError("every transaction hash must be 32 bytes")
    hashes = [bytes(h) for h in hashes]
    pending = {h for h in hashes if h in node.mempool}
    located = await node.in_store(
        lambda: {h: node.store.find_tx(h) for h in hashes if h not in pending})
    out = []
    for h in hashes:
        status = chain_pb.TxStatus(tx_hash=h)
        location = located.get(h)
        dropped = node.dropped(h)
        if h in pending:
            status.state = chain_pb.TX_STATE_PENDING
        elif location is not None:
            status.state = chain_pb.TX_STATE_COMMITTED
            status.height = location.height
            status.final = location.height <= node.final_height
        elif dropped is not None:
            status.state = chain_pb.TX_STATE_DROPPED
            status.code, status.reason = dropped
        out.append(status)
    return out
