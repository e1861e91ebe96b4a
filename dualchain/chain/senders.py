"""What a process that signs transactions (a server node, a client) asks before it signs one.

``GetNonce`` names the nonce the next transaction should carry and how many from there the
daemon's mempool would admit now. At 0 the sender's window is full (its pending transactions
wait for a block): a transaction signed now would be refused (``nonce_gap``), so the sender
waits for room instead, with a growing pause, for at most ``max_wait_s``.
"""

from __future__ import annotations

import asyncio

from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc

FIRST_PAUSE_S = 0.05
MAX_PAUSE_S = 1.0


async def admissible_nonce(stub: chain_grpc.ChainServiceStub, sender: bytes, timeout: float,
                           max_wait_s: float = 30.0) -> int:
    """The nonce for ``sender``'s next transaction, once the mempool would admit it (or after
    ``max_wait_s``, when the submission will say why it is refused)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    pause = FIRST_PAUSE_S
    while True:
        reply = await stub.GetNonce(chain_pb.GetNonceRequest(sender=sender), timeout=timeout)
        if reply.admissible > 0 or loop.time() + pause > deadline:
            return reply.next_nonce
        await asyncio.sleep(pause)
        pause = min(2 * pause, MAX_PAUSE_S)
