"""A sender asks GetNonce until its window has room (``chain.senders.admissible_nonce``)."""

from __future__ import annotations

from dualchain.chain.senders import admissible_nonce
from dualchain.proto.v1 import chain_pb2 as chain_pb


class Daemon:
    """GetNonce answers: the window is full twice, then has room."""

    def __init__(self, replies: list[tuple[int, int]]) -> None:
        self.replies = replies
        self.asked = 0

    async def GetNonce(self, request, timeout):
        nonce, admissible = self.replies[min(self.asked, len(self.replies) - 1)]
        self.asked += 1
        return chain_pb.GetNonceResponse(next_nonce=nonce, admissible=admissible)


async def test_a_sender_waits_for_room_before_it_signs() -> None:
    daemon = Daemon([(65, 0), (65, 0), (65, 3)])
    assert await admissible_nonce(daemon, b"s" * 32, timeout=1) == 65  # type: ignore[arg-type]
    assert daemon.asked == 3


async def test_a_sender_gives_up_waiting_after_the_limit() -> None:
    daemon = Daemon([(7, 0)])
    assert await admissible_nonce(daemon, b"s" * 32, timeout=1,  # type: ignore[arg-type]
                                  max_wait_s=0.2) == 7
    assert 2 <= daemon.asked <= 5
