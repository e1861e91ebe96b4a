"""How a CTBC replica sends its votes and relays the ones it collects (linear vote collection).

The rules are ``dualchain.chain.consensus.collector``'s; this class carries them out on the peer
links. A round-0 vote for a block goes to its collectors only, and to every peer if its step has
not moved on after the fallback delay; a collector sends each bundle it makes to every peer as
one ``votes`` message. With ``linear=False`` every vote goes to every peer (all-to-all).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dualchain.chain.app import Committee
from dualchain.chain.consensus.collector import Collector, is_collector, moved_on, vote_targets
from dualchain.chain.daemon.peers import PeerLink
from dualchain.chain.types import Vote
from dualchain.proto.v1 import peer_pb2 as peer_pb

Position = Callable[[], tuple[int, int, int]]  # the engine's (height, round, step)


class VoteRelay:
    def __init__(self, me: bytes, linear: bool, fallback_s: Callable[[], float],
                 position: Position,
                 link_of: Callable[[bytes], PeerLink | None],
                 broadcast: Callable[[peer_pb.PeerMessage], None]) -> None:
        self.me = me
        self.linear = linear
        self.fallback_s = fallback_s
        self._position = position
        self._link_of = link_of
        self._broadcast = broadcast
        self._collector: tuple[int, Collector] | None = None  # (height, its collector)
        self.bundles_sent = 0

    def send_own(self, vote: Vote, committee: Committee) -> None:
        """Sends a vote this replica signed: to its collectors, or to every peer."""
        message = peer_pb.PeerMessage(vote=vote.encoded)
        targets = vote_targets(committee, vote) if self.linear else None
        links = [self._link_of(t) for t in targets or () if t != self.me]
        if targets is None or any(link is None for link in links):
            self._broadcast(message)
            return
        for link in links:
            link.send(message)  # type: ignore[union-attr]
        asyncio.get_running_loop().call_later(self.fallback_s(), self._fallback, vote, message)

    def _fallback(self, vote: Vote, message: peer_pb.PeerMessage) -> None:
        if not moved_on(*self._position(), vote):
            self._broadcast(message)

    def collect(self, vote: Vote, committee: Committee) -> None:
        """A verified vote of the height being decided (ours too): bundles it if we collect."""
        if not self.linear or not is_collector(committee, self.me, vote):
            return
        if self._collector is None or self._collector[0] != vote.height:
            self._collector = (vote.height, Collector(committee.quorum))
        bundle = self._collector[1].add(vote)
        if bundle:
            self.bundles_sent += 1
            self._broadcast(peer_pb.PeerMessage(
                votes=peer_pb.VoteBatch(votes=[v.encoded for v in bundle])))
