"""A deterministic in-process simulator of a committee running ``CommitteeConsensus``.

N replicas (committee members, plus optional followers) each run their own engine. A virtual clock
and an event queue stand in for the network and the timers: every message is delivered after a
delay drawn from a seeded RNG (so messages are reordered), may be dropped, and may be held by a
partition until it heals. The simulator carries out the engine's actions the way a daemon would:

- ``Propose``: the leader builds a block on its last decided block (unique per height, round and
  leader) unless the engine hands it one, wraps it in a ``Proposal`` and broadcasts it, to itself
  too, fed in with ``on_proposal(p, valid)``;
- ``CastVote``: makes a ``Vote`` (optionally signed for real, optionally through a ``VoteGuard``)
  and broadcasts it, to itself too;
- ``ScheduleTimeout``: queues ``on_timeout`` at now + delay;
- ``Decide``: records the decision and enters the next height;
- ``FetchBlock``: delivers the block through ``on_block`` from any replica that has it;
- ``Equivocation``: records it.

Byzantine members are rule variants (``Byzantine``): a leader that proposes two blocks to two
halves of the committee, a voter that votes for two blocks to two halves, and a silent (crashed)
member. Replicas can also crash and restart from their ``VoteGuard``.

Everything is seeded: one seed, one run. Sets of bytes are never iterated unsorted.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dualchain.chain.app import Committee
from dualchain.chain.consensus.collector import Collector, is_collector, moved_on, vote_targets
from dualchain.chain.consensus.committee import (
    NIL,
    Action,
    CastVote,
    CommitteeConsensus,
    Decide,
    Equivocation,
    FetchBlock,
    Propose,
    ScheduleTimeout,
    Timeouts,
    WaitForWork,
)
from dualchain.chain.consensus.guard import PROPOSAL_STEP, VoteGuard
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.proposals import Proposal
from dualchain.chain.types import Block, QuorumCertificate, Vote, VoteStep
from tests.ledger_builders import make_block, make_signer

CHAIN_ID = "test"
DUMMY_SIGNATURE = b"unsigned"
FETCH_RETRY = 1.0  # seconds before a daemon asks again for a block it did not get

# -- shared, cached ledger values (signing costs milliseconds; runs reuse the same blocks) ------

_SIGNERS: dict[int, Signer] = {}
_BLOCKS: dict[tuple[bytes, int, int, int], Block] = {}


def signer(index: int) -> Signer:
    """The identity of replica ``index`` (the same in every run)."""
    if index not in _SIGNERS:
        _SIGNERS[index] = make_signer(index + 1)
    return _SIGNERS[index]


def genesis() -> Block:
    return block_on(None, 0, 0)


def block_on(parent: Block | None, round_: int, proposer: int, variant: int = 0) -> Block:
    """The block replica ``proposer`` proposes on ``parent`` in ``round_``; ``variant`` makes a
    sibling (for equivocation). Distinct per (parent, round, proposer, variant)."""
    key = (parent.hash if parent else b"", round_, proposer, variant)
    if key not in _BLOCKS:
        base = parent.header.timestamp_ms + 1000 if parent else None
        timestamp = None if base is None else base + 10 * round_ + variant
        _BLOCKS[key] = make_block(
            parent.header if parent else None, [], signer(proposer), CHAIN_ID, timestamp,
            view=round_,
        )
    return _BLOCKS[key]


def message_key(message: Vote | Proposal) -> tuple:
    if isinstance(message, Proposal):
        return ("p", message.height, message.round, message.proposer, message.block.hash)
    return ("v", message.height, message.round, int(message.step), message.voter,
            message.block_hash)


def make_committee(n: int) -> Committee:
    members = tuple(signer(i).id for i in range(n))
    return Committee(0, members, {signer(i).id: signer(i).public_key for i in range(n)})


def vote_signature_ok(vote: Vote, committee: Committee) -> bool:
    any_signer = signer(0)
    return any_signer.backend.verify(
        any_signer.algorithm, committee.keys[vote.voter], vote.signature, vote.signing_bytes,
        Domain.VOTE.value,
    )


def certificate_problems(
    cert: QuorumCertificate, block: Block, height: int, committee: Committee, signed: bool
) -> list[str]:
    """Why ``cert`` is not a good commit certificate for ``block`` (empty: it is)."""
    problems = []
    voters = [voter for voter, _ in cert.signatures]
    if cert.chain_id != CHAIN_ID or cert.height != height or cert.step != VoteStep.PRECOMMIT:
        problems.append("wrong chain, height or step")
    if cert.block_hash != block.hash:
        problems.append("certifies another block")
    if voters != sorted(set(voters)):
        problems.append("voters not strictly sorted")
    if len(set(voters)) < committee.quorum:
        problems.append(f"{len(set(voters))} signers < quorum {committee.quorum}")
    if any(v not in committee for v in voters):
        problems.append("a signer is not a member")
    if signed and not all(vote_signature_ok(v, committee) for v in cert.votes()):
        problems.append("a signature does not verify")
    return problems


# -- replicas --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Byzantine:
    """How a faulty member deviates. Its own engine runs honestly; only what it sends differs."""

    equivocate_proposals: bool = False  # proposes two sibling blocks to two halves
    equivocate_votes: bool = False  # votes for two different hashes to two halves
    witnesses: frozenset[int] = frozenset()  # replicas that get both conflicting messages
    withhold_bundles: bool = False  # as a collector (linear votes), never sends a bundle


@dataclass
class Decision:
    height: int
    round: int
    block: Block
    certificate: QuorumCertificate
    time: float


@dataclass
class Replica:
    index: int
    signer: Signer | None  # None: a follower without an identity
    member: bool
    engine: CommitteeConsensus
    last_block: Block
    byzantine: Byzantine | None = None
    guard_dir: Path | None = None
    guard: VoteGuard | None = None
    alive: bool = True
    incarnation: int = 0
    decisions: dict[int, Decision] = field(default_factory=dict)
    blocks: dict[bytes, Block] = field(default_factory=dict)
    equivocations: list[Equivocation] = field(default_factory=list)
    timeouts: list[ScheduleTimeout] = field(default_factory=list)
    votes_cast: list[Vote] = field(default_factory=list)
    proposals_made: list[Proposal] = field(default_factory=list)
    fetches: list[FetchBlock] = field(default_factory=list)
    waits: list[WaitForWork] = field(default_factory=list)
    collectors: dict[int, Collector] = field(default_factory=dict)  # height -> (linear votes)
    refused: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # by the guard
    signed: dict[tuple[int, int, int], set[bytes]] = field(default_factory=dict)
    seen: dict[int, dict[tuple, Vote | Proposal]] = field(
        default_factory=lambda: defaultdict(dict))  # height -> distinct messages received

    @property
    def id(self) -> bytes | None:
        return self.signer.id if self.signer else None


# -- the simulation ----------------------------------------------------------------------------


class Simulation:
    def __init__(
        self,
        n: int = 4,
        *,
        seed: int = 0,
        followers: int = 0,
        timeouts: Timeouts | None = None,
        delay: tuple[float, float] = (0.01, 0.2),
        drop: float = 0.0,
        sign: bool = False,
        byzantine: dict[int, Byzantine] | None = None,
        silent: Iterable[int] = (),
        guard_dirs: dict[int, Path] | None = None,
        valid: Callable[[Block], bool] | None = None,
        gossip: float | None = None,
        follower_identities: bool = False,
        wait_for_work: bool = False,
        linear: bool = False,
        fallback: float = 1.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.n = n
        self.committee = make_committee(n)
        self.timeouts = timeouts or Timeouts()
        self.delay = delay
        self.drop = drop
        self.sign = sign
        self.valid = valid or (lambda block: True)
        self.gossip = gossip
        self.now = 0.0
        self.wait_for_work = wait_for_work
        # Linear votes (collector.py): a round-0 vote for a block goes to its collectors, which
        # bundle a quorum to everybody; unmoved after ``fallback`` s, it goes to everybody.
        self.linear = linear
        self.fallback = fallback
        self.sent: Counter[str] = Counter()  # messages between replicas, by kind
        self.work: set[int] = set()  # replicas with pending transactions (wait_for_work)
        self._queue: list[tuple[float, int, str, int, Any]] = []
        self._seq = 0
        self._groups: list[set[int]] | None = None
        self._held: list[tuple[int, int, Any]] = []  # (src, dst, message) kept by a partition
        self.silent = set(silent)
        self.on_signed: Callable[[Replica, tuple[int, int, int], bytes], None] | None = None
        byzantine = byzantine or {}
        guard_dirs = guard_dirs or {}
        self.replicas: list[Replica] = []
        for i in range(n + followers):
            member = i < n
            ident = signer(i) if member or follower_identities else None
            replica = Replica(
                i, ident, member, self._engine(ident), genesis(),
                byzantine=byzantine.get(i), guard_dir=guard_dirs.get(i),
            )
            if replica.guard_dir is not None:
                replica.guard = VoteGuard(replica.guard_dir)
            replica.blocks[genesis().hash] = genesis()
            self.replicas.append(replica)
        for i in self.silent:
            self.replicas[i].alive = False

    def _engine(self, ident: Signer | None) -> CommitteeConsensus:
        return CommitteeConsensus(CHAIN_ID, ident.id if ident else None, self.timeouts,
                                  wait_for_work=self.wait_for_work)

    # -- who is who ------------------------------------------------------------------------------

    @property
    def honest(self) -> list[Replica]:
        """Replicas that follow the protocol (crashed-and-restarted ones included)."""
        return [r for r in self.replicas if r.byzantine is None and r.index not in self.silent]

    @property
    def honest_members(self) -> list[Replica]:
        return [r for r in self.honest if r.member]

    # -- the clock and the queue -----------------------------------------------------------------

    def _push(self, at: float, kind: str, dst: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, dst, payload))

    def at(self, time: float, fn: Callable[[], None]) -> None:
        """Runs ``fn`` at virtual ``time`` (to partition, heal, crash or restart mid-run)."""
        self._push(time, "call", -1, fn)

    def add_work(self, index: int) -> None:
        """A transaction reaches replica ``index`` (and stays pending there, every height)."""
        self.work.add(index)
        replica = self.replicas[index]
        if replica.alive:
            self._handle(replica, replica.engine.on_work())

    def start(self) -> None:
        for replica in self.replicas:
            if replica.alive:
                self._enter(replica, replica.last_block.height + 1)
        if self.gossip:
            for replica in self.replicas:
                self._push(self.rng.uniform(0, self.gossip), "gossip", replica.index, None)

    def run(self, heights: int | None = None, max_time: float = 600.0,
            max_events: int = 2_000_000) -> None:
        """Processes events until every live honest replica decided ``heights`` heights (None:
        until the queue is empty), or ``max_time`` passed."""
        events = 0
        while self._queue and events < max_events:
            if heights is not None and self.all_decided(heights):
                return
            at, _, kind, dst, payload = self._queue[0]
            if at > max_time:
                return
            heapq.heappop(self._queue)
            self.now = at
            events += 1
            self._dispatch(kind, dst, payload)

    def all_decided(self, heights: int) -> bool:
        return all(
            all(h in r.decisions for h in range(1, heights + 1))
            for r in self.honest if r.alive
        )

    def _dispatch(self, kind: str, dst: int, payload: Any) -> None:
        if kind == "call":
            payload()
            return
        replica = self.replicas[dst]
        if kind == "gossip":
            self._gossip(replica)
            self._push(self.now + self.gossip, "gossip", dst, None)  # type: ignore[operator]
            return
        if not replica.alive:
            return  # a crashed replica loses what reaches it
        if kind == "fetch":
            incarnation, action = payload
            if incarnation == replica.incarnation:
                self._fetch(replica, action, retry=True)
        elif kind == "timeout":
            incarnation, action = payload
            if incarnation == replica.incarnation:
                self._handle(replica, replica.engine.on_timeout(
                    action.height, action.round, action.step))
        elif kind == "message":
            if isinstance(payload, tuple):  # a collector's bundle of votes
                for vote in payload:
                    self._deliver(replica, vote)
            else:
                self._deliver(replica, payload)
        elif kind == "fallback":
            incarnation, vote = payload
            engine = replica.engine
            if incarnation == replica.incarnation and not moved_on(
                    engine.height, engine.round, engine.step, vote):
                self.broadcast(replica.index, vote, to=[
                    i for i in range(len(self.replicas)) if i != replica.index])
        elif kind == "block":
            block = payload
            replica.blocks[block.hash] = block
            self._handle(replica, replica.engine.on_block(block, self.valid(block)))

    def _deliver(self, replica: Replica, message: Vote | Proposal) -> None:
        replica.seen[message.height].setdefault(message_key(message), message)
        if isinstance(message, Proposal):
            replica.blocks[message.block.hash] = message.block
            actions = replica.engine.on_proposal(message, self.valid(message.block))
        else:
            actions = replica.engine.on_vote(message)
            if self.linear and message.height == replica.engine.height:
                self._collect(replica, message)
        self._handle(replica, actions)

    def _collect(self, replica: Replica, vote: Vote) -> None:
        if not is_collector(self.committee, replica.id, vote):
            return
        collector = replica.collectors.setdefault(vote.height, Collector(self.committee.quorum))
        bundle = collector.add(vote)
        if bundle and not (replica.byzantine and replica.byzantine.withhold_bundles):
            self.broadcast(replica.index, tuple(bundle), to=[
                i for i in range(len(self.replicas)) if i != replica.index])

    # -- the network -----------------------------------------------------------------------------

    def _latency(self) -> float:
        return self.rng.uniform(*self.delay)

    def send(self, src: int, dst: int, message: Any, kind: str = "message") -> None:
        if src == dst:
            self._push(self.now, kind, dst, message)
            return
        self.sent[type(message).__name__ if kind == "message" else kind] += 1
        if self._groups is not None and not any(src in g and dst in g for g in self._groups):
            self._held.append((src, dst, (kind, message)))
            return
        if self.drop and self.rng.random() < self.drop:
            return
        self._push(self.now + self._latency(), kind, dst, message)

    def broadcast(self, src: int, message: Any, to: Iterable[int] | None = None) -> None:
        for dst in range(len(self.replicas)) if to is None else to:
            self.send(src, dst, message)

    def partition(self, *groups: Iterable[int]) -> None:
        """Messages between different groups are held until ``heal``; a replica in no group is
        cut off from everybody."""
        self._groups = [set(g) for g in groups]

    def heal(self) -> None:
        """Ends the partition and delivers every held message (after fresh delays)."""
        self._groups = None
        held, self._held = self._held, []
        for _src, dst, (kind, message) in held:
            self._push(self.now + self._latency(), kind, dst, message)

    def _gossip(self, replica: Replica) -> None:
        """What a daemon's gossip does, knowing each peer's height (peers announce it): a peer at
        the same height gets again every message of that height this replica sent or saw; a peer
        behind gets the precommits that decided the peer's height here (it then fetches the
        block and decides). Without this, a replica whose messages were lost, or one that lags
        behind peers that moved on, never catches up: the engine does not re-send."""
        if not replica.alive:
            return
        height = replica.engine.height
        for peer in self.replicas:
            if peer is replica or not peer.alive:
                continue
            behind = peer.engine.height
            if behind == height:
                messages: list[Any] = list(replica.seen.get(height, {}).values())
            elif behind < height and behind in replica.decisions:
                messages = list(replica.decisions[behind].certificate.votes())
            else:
                continue
            for message in messages:
                self.send(replica.index, peer.index, message)

    # -- crashes ---------------------------------------------------------------------------------

    def crash(self, index: int) -> None:
        """The process dies: its engine, timers and messages in flight to it are lost; what it
        decided (its store) and its guard directory survive."""
        replica = self.replicas[index]
        replica.alive = False
        replica.incarnation += 1
        replica.guard = None

    def restart(self, index: int) -> None:
        """A fresh process: a new engine and a new ``VoteGuard`` on the same directory, entering
        the height after its last decision with the lock the guard recorded for it."""
        replica = self.replicas[index]
        replica.alive = True
        replica.incarnation += 1
        replica.engine = self._engine(replica.signer)
        if replica.guard_dir is not None:
            replica.guard = VoteGuard(replica.guard_dir)
        replica.seen = defaultdict(dict)
        self._enter(replica, replica.last_block.height + 1)

    # -- carrying out actions ----------------------------------------------------------------------

    def _enter(self, replica: Replica, height: int) -> None:
        lock = replica.guard.lock_for(height) if replica.guard else None
        self._handle(replica, replica.engine.start_height(height, self.committee, lock))

    def _handle(self, replica: Replica, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Propose):
                self._propose(replica, action)
            elif isinstance(action, CastVote):
                self._cast(replica, action)
            elif isinstance(action, ScheduleTimeout):
                replica.timeouts.append(action)
                self._push(self.now + action.delay, "timeout", replica.index,
                           (replica.incarnation, action))
            elif isinstance(action, Decide):
                self._decide(replica, action)
            elif isinstance(action, FetchBlock):
                self._fetch(replica, action)
            elif isinstance(action, Equivocation):
                replica.equivocations.append(action)
            elif isinstance(action, WaitForWork):
                replica.waits.append(action)
                if replica.index in self.work:
                    self._handle(replica, replica.engine.on_work())
            else:  # pragma: no cover
                raise AssertionError(f"unknown action {action!r}")

    def _guarded(self, replica: Replica, position: tuple[int, int, int], block_hash: bytes,
                 make: Callable[[], bytes]) -> bytes | None:
        if replica.guard is not None:
            signature = replica.guard.sign(*position, block_hash, replica.engine.lock_state(), make)
            if signature is None:
                replica.refused.append((*position, block_hash))
                return None
        else:
            signature = make()
        replica.signed.setdefault(position, set()).add(block_hash)
        if self.on_signed is not None:
            self.on_signed(replica, position, block_hash)
        return signature

    def _propose(self, replica: Replica, action: Propose) -> None:
        assert replica.signer is not None
        block = action.block or block_on(replica.last_block, action.round, replica.index)
        assert block.height == action.height, "the leader builds on its last decided block"
        byz = replica.byzantine
        if byz is not None and byz.equivocate_proposals:
            other = block_on(replica.last_block, action.round, replica.index, variant=1)
            first, second = self._proposal(replica, action, block), self._proposal(
                replica, action, other)
            replica.proposals_made += [first, second]
            self._split(replica, first, second, byz)
            return
        position = (action.height, action.round, PROPOSAL_STEP)
        signature = self._guarded(replica, position, block.hash,
                                  lambda: self._proposal(replica, action, block).signature)
        if signature is None:
            return
        proposal = Proposal(CHAIN_ID, action.height, action.round, action.valid_round, block,
                            replica.signer.id, signature)
        replica.proposals_made.append(proposal)
        self.broadcast(replica.index, proposal)

    def _proposal(self, replica: Replica, action: Propose, block: Block) -> Proposal:
        assert replica.signer is not None
        proposal = Proposal(CHAIN_ID, action.height, action.round, action.valid_round, block,
                            replica.signer.id)
        signature = (replica.signer.sign(Domain.PROPOSAL, proposal.signing_bytes) if self.sign
                     else DUMMY_SIGNATURE)
        return replace(proposal, signature=signature)

    def _vote(self, replica: Replica, action: CastVote, block_hash: bytes) -> Vote:
        assert replica.signer is not None
        unsigned = Vote(CHAIN_ID, action.height, action.round, action.step, block_hash,
                        replica.signer.id)
        signature = (replica.signer.sign(Domain.VOTE, unsigned.signing_bytes) if self.sign
                     else DUMMY_SIGNATURE)
        return Vote(CHAIN_ID, action.height, action.round, action.step, block_hash,
                    replica.signer.id, signature)

    def _cast(self, replica: Replica, action: CastVote) -> None:
        assert replica.member, "a follower was told to vote"
        byz = replica.byzantine
        if byz is not None and byz.equivocate_votes:
            candidates = sorted(
                {b.hash for b in replica.blocks.values() if b.height == action.height} | {NIL}
            )
            others = [h for h in candidates if h != action.block_hash]
            other = self.rng.choice(others) if others else bytes([0xEE]) * 32
            first, second = self._vote(replica, action, action.block_hash), self._vote(
                replica, action, other)
            replica.votes_cast += [first, second]
            self._split(replica, first, second, byz)
            return
        position = (action.height, action.round, int(action.step))
        signature = self._guarded(replica, position, action.block_hash,
                                  lambda: self._vote(replica, action, action.block_hash).signature)
        if signature is None:
            return
        vote = Vote(CHAIN_ID, action.height, action.round, action.step, action.block_hash,
                    replica.signer.id, signature)  # type: ignore[union-attr]
        replica.votes_cast.append(vote)
        targets = vote_targets(self.committee, vote) if self.linear else None
        if targets is None:
            self.broadcast(replica.index, vote)
            return
        indices = {replica.index, *(self.committee.members.index(t) for t in targets)}
        self.broadcast(replica.index, vote, to=sorted(indices))
        self._push(self.now + self.fallback, "fallback", replica.index,
                   (replica.incarnation, vote))

    def _split(self, replica: Replica, first: Any, second: Any, byz: Byzantine) -> None:
        """Sends ``first`` to itself and half of the others, ``second`` to the other half, and
        both (in a random order) to the witnesses."""
        others = [i for i in range(len(self.replicas)) if i != replica.index]
        self.rng.shuffle(others)
        half = len(others) // 2
        self.send(replica.index, replica.index, first)
        for i, dst in enumerate(others):
            if dst in byz.witnesses:
                pair = [first, second]
                self.rng.shuffle(pair)
                for message in pair:
                    self.send(replica.index, dst, message)
            else:
                self.send(replica.index, dst, first if i < half else second)

    def _decide(self, replica: Replica, action: Decide) -> None:
        assert action.height not in replica.decisions, "decided a height twice"
        assert action.block.height == action.height
        replica.decisions[action.height] = Decision(
            action.height, action.round, action.block, action.certificate, self.now
        )
        replica.blocks[action.block.hash] = action.block
        replica.last_block = action.block
        self._enter(replica, action.height + 1)

    def _fetch(self, replica: Replica, action: FetchBlock, retry: bool = False) -> None:
        """Asks a peer that has the block for it. The engine asks once: like a daemon, the
        simulator tries again (a reply can be dropped) until the block came or the height
        is over."""
        if not retry:
            replica.fetches.append(action)
        elif (not replica.alive or replica.engine.height != action.height
              or action.block_hash in replica.blocks):
            return
        holders = [o for o in self.replicas if o is not replica and action.block_hash in o.blocks]
        if holders:
            holder = self.rng.choice(holders)
            self.send(holder.index, replica.index, holder.blocks[action.block_hash], "block")
        self._push(self.now + FETCH_RETRY, "fetch", replica.index, (replica.incarnation, action))

    # -- checks --------------------------------------------------------------------------------

    def disagreements(self) -> list[tuple[int, list[bytes]]]:
        """Heights at which two honest replicas decided different blocks (safety violations)."""
        by_height: dict[int, set[bytes]] = defaultdict(set)
        for replica in self.honest:
            for height, decision in replica.decisions.items():
                by_height[height].add(decision.block.hash)
        return [(h, sorted(hashes)) for h, hashes in sorted(by_height.items()) if len(hashes) > 1]

    def decided_heights(self) -> int:
        """The highest height every live honest replica decided (all heights below it too)."""
        live = [r for r in self.honest if r.alive]
        height = 0
        while live and all(height + 1 in r.decisions for r in live):
            height += 1
        return height

    def double_signed(self) -> list[tuple[int, int, tuple[int, int, int]]]:
        """(replica, count, position) for every honest position signed for two blocks."""
        return [
            (r.index, len(hashes), position)
            for r in self.honest for position, hashes in sorted(r.signed.items())
            if len(hashes) > 1
        ]
