"""Committee BFT consensus for CTBC: the Tendermint algorithm as a pure state machine.

This is Algorithm 1 of Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus" (2018):
three steps per round (propose, prevote, precommit), a lock on the block a replica precommitted,
and a rotating leader per round. docs/consensus.md gives the safety argument.

The class does no I/O, reads no clock and signs nothing. The daemon feeds it events (a proposal
whose signature and block it has checked, a vote whose signature it has checked, a timeout that
fired) and carries out the actions it returns (propose, vote, schedule a timeout, decide, report
equivocation, fetch a missing block). The daemon signs the votes it is told to cast, after
recording them on disk, and feeds its own votes back in like anybody else's. Tests drive the
class directly, with any interleaving of messages and timeouts.

Each ``_rule_*`` method is one "upon" clause of the paper, named after its line numbers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dualchain.chain.app import Committee
from dualchain.chain.proposals import Proposal
from dualchain.chain.types import ZERO_HASH, Block, QuorumCertificate, Vote, VoteStep

NIL = ZERO_HASH  # a vote for no block
MAX_BUFFERED = 4096  # messages kept for the next height while this one finishes
MAX_VALUES_PER_VOTER = 8  # distinct blocks one (equivocating) member's votes count for per step


class Step:
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2
    DECIDED = 3


@dataclass(frozen=True)
class Timeouts:
    """Seconds each step waits in round 0; every further round adds ``delta``."""

    propose: float = 1.0
    prevote: float = 0.5
    precommit: float = 0.5
    delta: float = 0.5

    def of(self, step: int, round_: int) -> float:
        base = {Step.PROPOSE: self.propose, Step.PREVOTE: self.prevote,
                Step.PRECOMMIT: self.precommit}[step]
        return base + round_ * self.delta


# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Propose:
    """We lead this round: propose ``block`` (None: build a fresh one from the mempool)."""

    height: int
    round: int
    valid_round: int
    block: Block | None


@dataclass(frozen=True)
class CastVote:
    """Sign and broadcast this vote (and feed it back in)."""

    height: int
    round: int
    step: VoteStep
    block_hash: bytes


@dataclass(frozen=True)
class ScheduleTimeout:
    height: int
    round: int
    step: int
    delay: float


@dataclass(frozen=True)
class WaitForWork:
    """Round 0 of ``height`` waits for work (a pending transaction) before its propose step:
    call ``on_work`` once there is some. No timeout runs meanwhile, so an idle chain makes no
    blocks and changes no views. A proposal or vote of the height ends the wait too."""

    height: int


@dataclass(frozen=True)
class Decide:
    """``block`` is committed at ``height``, certified by ``certificate``."""

    height: int
    round: int
    block: Block
    certificate: QuorumCertificate


@dataclass(frozen=True)
class Equivocation:
    """Two signed, conflicting messages from one member for one height and round (and step)."""

    offender: bytes
    first: Vote | Proposal
    second: Vote | Proposal


@dataclass(frozen=True)
class FetchBlock:
    """A quorum precommitted a block we do not have: get it from a peer.

    Asked once per block and height: keep trying (other peers) until ``on_block`` delivers it,
    or the height is left. Without it this replica cannot decide the height.
    """

    height: int
    block_hash: bytes


Action = Propose | CastVote | ScheduleTimeout | WaitForWork | Decide | Equivocation | FetchBlock


@dataclass(frozen=True)
class LockState:
    """What a replica must remember across a restart within a height (it is on disk)."""

    round: int = 0
    locked_round: int = -1
    locked_block: Block | None = None
    valid_round: int = -1
    valid_block: Block | None = None


# --- vote bookkeeping -------------------------------------------------------------------------


@dataclass
class _VoteSet:
    """The votes of one (round, step).

    As in the paper, "2f+1 votes for v" counts the distinct members that voted for v: a member
    that equivocated counts for each block it voted for (up to MAX_VALUES_PER_VOTER of them).
    Counting only its first vote would be safe too, but a replica that saw the "wrong" vote of
    an equivocator first could then never count a quorum other replicas decided on (their
    certificate holds the other vote), and would stay behind. Safety does not depend on it:
    two quorums for different blocks in one (round, step) share f+1 members, so at least one
    correct member would have voted twice.
    """

    by_voter: dict[bytes, Vote] = field(default_factory=dict)  # each member's first vote
    by_block: dict[bytes, dict[bytes, Vote]] = field(default_factory=dict)  # hash -> voter -> vote
    _values: dict[bytes, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, vote: Vote) -> Vote | None:
        """Adds a vote; returns the earlier conflicting vote of the same voter, if any."""
        earlier = self.by_voter.setdefault(vote.voter, vote)
        voters = self.by_block.setdefault(vote.block_hash, {})
        if vote.voter not in voters and self._values[vote.voter] < MAX_VALUES_PER_VOTER:
            voters[vote.voter] = vote
            self._values[vote.voter] += 1
        return earlier if earlier.block_hash != vote.block_hash else None

    @property
    def tally(self) -> dict[bytes, int]:
        return {block_hash: len(voters) for block_hash, voters in self.by_block.items()}

    def total(self) -> int:
        return len(self.by_voter)

    def count(self, block_hash: bytes) -> int:
        return len(self.by_block.get(block_hash, ()))

    def signatures_for(self, block_hash: bytes) -> tuple[tuple[bytes, bytes], ...]:
        return tuple(sorted(
            (voter, vote.signature) for voter, vote in self.by_block.get(block_hash, {}).items()
        ))


# --- the state machine ------------------------------------------------------------------------


class CommitteeConsensus:
    """One replica's view of the protocol for one height at a time."""

    def __init__(self, chain_id: str, me: bytes | None, timeouts: Timeouts,
                 wait_for_work: bool = False) -> None:
        self.chain_id = chain_id
        self.me = me  # None: a follower that never votes or proposes
        self.timeouts = timeouts
        # CometBFT's create_empty_blocks = false: round 0 of a height starts (leader proposes,
        # propose timeout runs) only once there is work, or once a peer shows it started.
        self.wait_for_work = wait_for_work
        self.waiting = False
        self.height = 0
        self.committee: Committee | None = None
        # messages of the next height, each with the validity the caller gave its block
        self._future: list[tuple[Vote | Proposal, bool]] = []
        self._reset(LockState())

    def _reset(self, lock: LockState) -> None:
        self.waiting = False
        self.round = lock.round
        self.step = Step.PROPOSE
        self.locked_round = lock.locked_round
        self.locked_block = lock.locked_block
        self.valid_round = lock.valid_round
        self.valid_block = lock.valid_block
        self._proposals: dict[int, Proposal] = {}
        self._blocks: dict[bytes, tuple[Block, bool]] = {}  # hash -> (block, valid)
        self._votes: dict[tuple[int, VoteStep], _VoteSet] = defaultdict(_VoteSet)
        self._fired: set[tuple] = set()  # one-shot rules already taken
        self._fetching: set[bytes] = set()
        for block in (lock.locked_block, lock.valid_block):
            if block is not None:
                self._blocks[block.hash] = (block, True)

    # -- inputs ----------------------------------------------------------------------------------

    def start_height(
        self, height: int, committee: Committee, lock: LockState | None = None
    ) -> list[Action]:
        """Enters ``height`` (after the previous one was decided and applied, or at boot)."""
        self.height = height
        self.committee = committee
        self._reset(lock or LockState())
        actions = self._start_round(self.round)
        buffered, self._future = self._future, []
        for message, valid in buffered:
            if message.height == height:
                if isinstance(message, Proposal):
                    self._learn(message.block, valid)
                actions += self._receive(message)
            elif message.height > height:
                self._buffer(message, valid)
        return actions

    def on_proposal(self, proposal: Proposal, valid: bool) -> list[Action]:
        """A proposal whose signature the caller checked; ``valid``: its block passed validation.

        A proposal of the next height is kept, with ``valid`` as given, until ``start_height``
        enters that height. A block once reported valid stays valid; one reported invalid may be
        reported valid later (feed the proposal or the block again once it could be checked).
        """
        if proposal.height > self.height:
            self._buffer(proposal, valid)
            return []
        if proposal.height < self.height:
            return []
        learned = self._learn(proposal.block, valid)
        actions = self._receive(proposal)
        return actions + self._process() if learned else actions

    def on_vote(self, vote: Vote) -> list[Action]:
        """A vote whose signature the caller checked."""
        if vote.height > self.height:
            self._buffer(vote)
            return []
        if vote.height < self.height:
            return []
        return self._receive(vote)

    def on_block(self, block: Block, valid: bool) -> list[Action]:
        """A block fetched after FetchBlock (or any block of this height we learn of)."""
        if block.height != self.height:
            return []
        self._learn(block, valid)
        return self._process()

    def on_work(self) -> list[Action]:
        """There is work to commit (or an empty block is due): a waiting round 0 starts."""
        if not self.waiting:
            return []
        self.waiting = False
        return self._start_round(self.round, wait=False)

    def on_timeout(self, height: int, round_: int, step: int) -> list[Action]:
        if (height != self.height or round_ != self.round or self.step == Step.DECIDED
                or self.waiting):
            return []
        if step == Step.PROPOSE and self.step == Step.PROPOSE:  # line 57
            return self._vote(VoteStep.PREVOTE, NIL, Step.PREVOTE) + self._process()
        if step == Step.PREVOTE and self.step == Step.PREVOTE:  # line 61
            return self._vote(VoteStep.PRECOMMIT, NIL, Step.PRECOMMIT) + self._process()
        if step == Step.PRECOMMIT:  # line 65
            return self._start_round(round_ + 1)
        return []

    def known_messages(self) -> list[Vote | Proposal]:
        """Every proposal and vote held for the current height, for re-sending to peers.

        Tendermint gossips the votes it holds, not only its own: a replica that was down when a
        round's prevotes went out can only justify that round's lock (its polka) by receiving
        those prevotes from someone.
        """
        messages: list[Vote | Proposal] = list(self._proposals.values())
        for votes in self._votes.values():
            for by_voter in votes.by_block.values():
                messages.extend(by_voter.values())
        return messages

    def block(self, block_hash: bytes) -> Block | None:
        """A block of the current height that the engine holds (proposed or fetched)."""
        entry = self._blocks.get(block_hash)
        return entry[0] if entry is not None else None

    def lock_state(self) -> LockState:
        """What must be on disk before any vote this replica casts leaves the process."""
        return LockState(self.round, self.locked_round, self.locked_block, self.valid_round,
                         self.valid_block)

    # -- internals -------------------------------------------------------------------------------

    def _learn(self, block: Block, valid: bool) -> bool:
        """Records a block of this height; True if it is new or now known to be valid."""
        entry = self._blocks.get(block.hash)
        if entry is not None and (entry[1] or not valid):
            return False
        self._blocks[block.hash] = (block, valid)
        return True

    def _buffer(self, message: Vote | Proposal, valid: bool = False) -> None:
        if message.height <= self.height + 1 and len(self._future) < MAX_BUFFERED:
            self._future.append((message, valid))

    def _receive(self, message: Vote | Proposal) -> list[Action]:
        assert self.committee is not None
        if isinstance(message, Proposal):
            if (message.proposer != self.committee.proposer(message.height, message.round)
                    or message.chain_id != self.chain_id):
                return []
        elif message.voter not in self.committee or message.chain_id != self.chain_id:
            return []
        # A member's proposal or vote of this height means that it has work: so do we.
        actions: list[Action] = self.on_work()
        if isinstance(message, Proposal):
            earlier = self._proposals.get(message.round)
            if earlier is not None:
                if earlier.block.hash != message.block.hash:
                    actions.append(Equivocation(message.proposer, earlier, message))
                return actions
            self._proposals[message.round] = message
        else:
            earlier = self._votes[(message.round, message.step)].add(message)
            if earlier is not None:
                actions.append(Equivocation(message.voter, earlier, message))
        return actions + self._process()

    def _start_round(self, round_: int, wait: bool = True) -> list[Action]:  # line 11
        assert self.committee is not None
        self.round = round_
        self.step = Step.PROPOSE
        self.waiting = False
        # Only a fresh round 0 waits: a later round follows a failed one (work was there), and
        # a replica holding a lock or a valid block has a block to decide.
        if (wait and self.wait_for_work and round_ == 0 and self.locked_block is None
                and self.valid_block is None):
            self.waiting = True
            return [WaitForWork(self.height), *self._process()]
        actions: list[Action] = []
        if self.me is not None and self.committee.proposer(self.height, round_) == self.me:
            actions.append(Propose(self.height, round_, self.valid_round, self.valid_block))
        actions.append(ScheduleTimeout(self.height, round_, Step.PROPOSE,
                                       self.timeouts.of(Step.PROPOSE, round_)))
        return actions + self._process()

    def _vote(self, step: VoteStep, block_hash: bytes, next_step: int) -> list[Action]:
        self.step = next_step
        if self.me is None or self.me not in self.committee:  # type: ignore[operator]
            return []
        return [CastVote(self.height, self.round, step, block_hash)]

    def _quorum(self) -> int:
        assert self.committee is not None
        return self.committee.quorum

    def _valid(self, block_hash: bytes) -> bool:
        entry = self._blocks.get(block_hash)
        return entry is not None and entry[1]

    def _process(self) -> list[Action]:
        """Takes every rule that applies, until none does."""
        actions: list[Action] = []
        rules = (
            self._rule_decide,
            self._rule_skip_round,
            self._rule_prevote_fresh,
            self._rule_prevote_valid_round,
            self._rule_prevote_timeout,
            self._rule_lock,
            self._rule_precommit_nil,
            self._rule_precommit_timeout,
        )
        progress = True
        while progress and self.step != Step.DECIDED:
            progress = False
            for rule in rules:
                taken = rule()
                if taken is not None:
                    actions += taken
                    progress = True
                    break
        return actions

    def _rule_decide(self) -> list[Action] | None:  # line 49
        for (round_, step), votes in list(self._votes.items()):
            if step != VoteStep.PRECOMMIT:
                continue
            for block_hash, count in votes.tally.items():
                if block_hash == NIL or count < self._quorum():
                    continue
                entry = self._blocks.get(block_hash)
                if entry is None:
                    if block_hash in self._fetching:
                        continue
                    self._fetching.add(block_hash)
                    return [FetchBlock(self.height, block_hash)]
                block, valid = entry
                if not valid:
                    continue  # 2f+1 precommitted an invalid block: impossible with f faulty
                self.step = Step.DECIDED
                certificate = QuorumCertificate(
                    self.chain_id, self.height, round_, VoteStep.PRECOMMIT, block_hash,
                    votes.signatures_for(block_hash),
                )
                return [Decide(self.height, round_, block, certificate)]
        return None

    def _rule_skip_round(self) -> list[Action] | None:  # line 55
        assert self.committee is not None
        later: dict[int, set[bytes]] = defaultdict(set)
        for (round_, _), votes in self._votes.items():
            if round_ > self.round:
                later[round_].update(votes.by_voter)
        for round_, proposal in self._proposals.items():
            if round_ > self.round:
                later[round_].add(proposal.proposer)
        for round_ in sorted(later, reverse=True):
            if len(later[round_]) >= self.committee.max_faulty + 1:
                return self._start_round(round_)
        return None

    def _rule_prevote_fresh(self) -> list[Action] | None:  # line 22
        proposal = self._proposals.get(self.round)
        if self.step != Step.PROPOSE or proposal is None or proposal.valid_round != -1:
            return None
        block_hash = proposal.block.hash
        good = self._valid(block_hash) and (
            self.locked_round == -1 or self._locked_hash() == block_hash
        )
        return self._vote(VoteStep.PREVOTE, block_hash if good else NIL, Step.PREVOTE)

    def _rule_prevote_valid_round(self) -> list[Action] | None:  # line 28
        proposal = self._proposals.get(self.round)
        if self.step != Step.PROPOSE or proposal is None:
            return None
        vr = proposal.valid_round
        if not 0 <= vr < self.round:
            return None
        block_hash = proposal.block.hash
        if self._votes[(vr, VoteStep.PREVOTE)].count(block_hash) < self._quorum():
            return None
        good = self._valid(block_hash) and (
            self.locked_round <= vr or self._locked_hash() == block_hash
        )
        return self._vote(VoteStep.PREVOTE, block_hash if good else NIL, Step.PREVOTE)

    def _rule_prevote_timeout(self) -> list[Action] | None:  # line 34
        key = ("prevote-timeout", self.round)
        votes = self._votes[(self.round, VoteStep.PREVOTE)]
        if self.step != Step.PREVOTE or key in self._fired or votes.total() < self._quorum():
            return None
        self._fired.add(key)
        return [ScheduleTimeout(self.height, self.round, Step.PREVOTE,
                                self.timeouts.of(Step.PREVOTE, self.round))]

    def _rule_lock(self) -> list[Action] | None:  # line 36
        proposal = self._proposals.get(self.round)
        key = ("lock", self.round)
        if proposal is None or self.step < Step.PREVOTE or key in self._fired:
            return None
        block_hash = proposal.block.hash
        votes = self._votes[(self.round, VoteStep.PREVOTE)]
        if not self._valid(block_hash) or votes.count(block_hash) < self._quorum():
            return None
        self._fired.add(key)
        actions: list[Action] = []
        if self.step == Step.PREVOTE:
            self.locked_round, self.locked_block = self.round, proposal.block
            actions = self._vote(VoteStep.PRECOMMIT, block_hash, Step.PRECOMMIT)
        self.valid_round, self.valid_block = self.round, proposal.block
        return actions

    def _rule_precommit_nil(self) -> list[Action] | None:  # line 44
        votes = self._votes[(self.round, VoteStep.PREVOTE)]
        if self.step != Step.PREVOTE or votes.count(NIL) < self._quorum():
            return None
        return self._vote(VoteStep.PRECOMMIT, NIL, Step.PRECOMMIT)

    def _rule_precommit_timeout(self) -> list[Action] | None:  # line 47
        key = ("precommit-timeout", self.round)
        votes = self._votes[(self.round, VoteStep.PRECOMMIT)]
        if key in self._fired or votes.total() < self._quorum():
            return None
        self._fired.add(key)
        return [ScheduleTimeout(self.height, self.round, Step.PRECOMMIT,
                                self.timeouts.of(Step.PRECOMMIT, self.round))]

    def _locked_hash(self) -> bytes | None:
        return self.locked_block.hash if self.locked_block is not None else None
