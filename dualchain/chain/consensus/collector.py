"""Linear vote collection for the committee engine (HotStuff's pattern on Tendermint's votes).

All-to-all voting costs 2 x N x (N - 1) messages a height, each verified on arrival. Here, on
the happy path, a member sends its round-0 vote for a block only to the round's leader (the
*collector*; a precommit also to the next height's leader, who builds the next block and its
``parent_qc`` from them); the collector, once it holds a quorum of one step's votes, sends them
to everybody as one bundle: 2 x (N - 1) votes in and 2 x (N - 1) bundles out per height.

The engine does not change: every replica still counts the individual signed votes, so its
safety argument (docs/consensus.md) holds word for word; only who relays the votes changed.
Liveness is kept by going back to all-to-all whenever the happy path is in doubt:

- nil votes and every vote of a round after 0 go to everybody (a failed round means a faulty
  or slow leader, and that leader is the collector);
- a vote sent to a collector is sent to everybody too if its step has not moved on after
  ``fallback_delay`` (a collector that crashed after proposing, or withholds its bundles);
- a replica whose height stalls re-sends its votes to everybody (the daemon's re-sends).

So a faulty collector costs at most one fallback delay per height it leads, never liveness.
The class does no I/O; the daemon and the simulator carry out what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dualchain.chain.app import Committee
from dualchain.chain.types import ZERO_HASH, Vote, VoteStep

ANY = b"any"  # marks the bundle sent when a step first holds a quorum of votes of any value


def vote_targets(committee: Committee, vote: Vote) -> tuple[bytes, ...] | None:
    """Whom a member sends its own ``vote`` to: the collectors, or None for everybody."""
    if vote.round != 0 or vote.block_hash == ZERO_HASH:
        return None
    leader = committee.proposer(vote.height, vote.round)
    if vote.step == VoteStep.PREVOTE:
        return (leader,)
    following = committee.proposer(vote.height + 1, 0)
    return (leader,) if following == leader else (leader, following)


def is_collector(committee: Committee, me: bytes | None, vote: Vote) -> bool:
    """Whether ``me`` bundles this vote's step: the leader of its height and round 0."""
    return vote.round == 0 and me is not None and committee.proposer(vote.height, 0) == me


def moved_on(height: int, round_: int, step: int, vote: Vote) -> bool:
    """Whether a replica at (height, round, engine step) is past the step of its own ``vote``:
    if not after the fallback delay, it sends the vote to everybody."""
    if (height, round_) != (vote.height, vote.round):
        return True
    return step >= (2 if vote.step == VoteStep.PREVOTE else 3)  # Step.PRECOMMIT, Step.DECIDED


@dataclass
class Collector:
    """The collector's side for one height: what to send on as bundles."""

    quorum: int
    _held: dict[tuple[int, int], dict[bytes, Vote]] = field(default_factory=dict)
    _sent: dict[tuple[int, int], set[bytes]] = field(default_factory=dict)

    def add(self, vote: Vote) -> list[Vote]:
        """Records a verified round-0 vote; returns the bundle to send to everybody ([]: none).

        A step's first bundle goes out when it holds a quorum of votes of any values (the
        others' prevote and precommit timeouts start on that); another when a block reaches a
        quorum it did not have in a bundle yet. Bundles leave out nil votes: those went to
        everybody already. A member's first vote per step counts.
        """
        key = (vote.round, int(vote.step))
        held = self._held.setdefault(key, {})
        if vote.voter in held:
            return []
        held[vote.voter] = vote
        sent = self._sent.setdefault(key, set())
        if ANY not in sent:
            if len(held) < self.quorum:
                return []
            sent.add(ANY)
            sent.update(value for value in {v.block_hash for v in held.values()}
                        if self._count(held, value) >= self.quorum)
            return [v for v in held.values() if v.block_hash != ZERO_HASH]
        value = vote.block_hash
        if value == ZERO_HASH or value in sent or self._count(held, value) < self.quorum:
            return []
        sent.add(value)
        return [v for v in held.values() if v.block_hash == value]

    @staticmethod
    def _count(held: dict[bytes, Vote], value: bytes) -> int:
        return sum(1 for v in held.values() if v.block_hash == value)
