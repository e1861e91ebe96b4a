"""Committee election by reputation: pure functions over on-chain statistics.

Seed 001 eq. (2) scores a candidate as

    Score = w_Enc * Cap_Enc + w_Rou * Cap_Rou + w_Prop * Prop + w_Hist * Hist.

A socket testbed has no encryption or routing measurements that every replica could agree on, so
each term is read from what the chain itself records about a validator, over the last
``window_epochs`` epochs (``ReputationWeights`` in the genesis):

- votes (``weights.votes``): votes_cast / votes_expected. A member is expected to vote at every
  committed height of its epoch, and counts as having voted when the commit certificate of that
  height holds its precommit.
- uptime (``weights.uptime``): the fraction of the window's epochs in which the validator cast at
  least one vote while a member. An epoch in which it was not a member counts as up: a validator
  is not blamed for not being asked.
- proposals (``weights.proposals``): proposals_committed / proposal_turns. For a height committed
  in round r the leaders of rounds 0..r each had a turn; only the leader of round r got its block
  committed.
- history (``weights.history``): 1 with no recorded misbehaviour in the window, 0 with any. Eq. (2)
  lowers the score of "intentional wrongdoing"; an all-or-nothing term makes one proven
  equivocation enough to rank a validator below every validator with a clean record whose other
  terms are perfect (or unmeasured), so it leaves the committee whenever someone can replace it.

A rate with no data (0/0) counts as 1, so a newcomer scores like a validator with a perfect
record and is not penalised for having no history. All arithmetic is exact (``Fraction``): every
replica ranks the candidates identically, with no float rounding or summation-order effects.
Ties are broken by id ascending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from dualchain.chain.genesis import ReputationWeights

ONE = Fraction(1)


@dataclass(frozen=True)
class ValidatorStats:
    """What the chain recorded about one validator during one epoch."""

    votes_expected: int = 0  # committed heights at which it was a committee member
    votes_cast: int = 0  # of those, heights whose commit certificate holds its precommit
    proposal_turns: int = 0  # rounds it led at committed heights (rounds 0..r of a height)
    proposals_committed: int = 0  # heights whose commit round it led
    misbehaviour: int = 0  # evidence recorded against it

    def plus(self, other: ValidatorStats) -> ValidatorStats:
        return ValidatorStats(
            self.votes_expected + other.votes_expected,
            self.votes_cast + other.votes_cast,
            self.proposal_turns + other.proposal_turns,
            self.proposals_committed + other.proposals_committed,
            self.misbehaviour + other.misbehaviour,
        )

    @property
    def present(self) -> bool:
        """Up during the epoch: voted at least once as a member, or was not a member."""
        return self.votes_expected == 0 or self.votes_cast > 0


EMPTY = ValidatorStats()


@dataclass(frozen=True)
class Terms:
    """The four reputation terms, each in [0, 1]."""

    votes: Fraction
    uptime: Fraction
    proposals: Fraction
    history: Fraction


def _rate(numerator: int, denominator: int) -> Fraction:
    return ONE if denominator == 0 else Fraction(min(numerator, denominator), denominator)


def _weight(value: float) -> Fraction:
    # The decimal the genesis file wrote (0.3 -> 3/10): exact, and the same on every replica.
    return Fraction(repr(float(value)))


def terms(stats_window: Sequence[ValidatorStats], weights: ReputationWeights) -> Terms:
    """The terms over the last ``weights.window_epochs`` entries (one entry per epoch)."""
    window = list(stats_window)[-weights.window_epochs :]
    total = EMPTY
    for epoch in window:
        total = total.plus(epoch)
    up = sum(1 for epoch in window if epoch.present)
    return Terms(
        votes=_rate(total.votes_cast, total.votes_expected),
        uptime=_rate(up, len(window)),
        proposals=_rate(total.proposals_committed, total.proposal_turns),
        history=ONE if total.misbehaviour == 0 else Fraction(0),
    )


def score_exact(stats_window: Sequence[ValidatorStats], weights: ReputationWeights) -> Fraction:
    t = terms(stats_window, weights)
    return (
        _weight(weights.votes) * t.votes
        + _weight(weights.uptime) * t.uptime
        + _weight(weights.proposals) * t.proposals
        + _weight(weights.history) * t.history
    )


def score(stats_window: Sequence[ValidatorStats], weights: ReputationWeights) -> float:
    """Eq. (2) over on-chain statistics, for display; elections compare ``score_exact``."""
    return float(score_exact(stats_window, weights))


def elect(
    validators: Iterable[bytes],
    stats: Mapping[bytes, Sequence[ValidatorStats]],
    weights: ReputationWeights,
    committee_size: int,
) -> tuple[bytes, ...]:
    """The ``committee_size`` best-scoring validators, sorted by id (the leader rotation order).

    ``stats`` maps a validator id to its per-epoch statistics, oldest first; a validator without
    an entry is a newcomer. Fewer validators than seats elect them all.
    """
    if committee_size < 1:
        raise ValueError(f"committee size must be at least 1, got {committee_size}")
    candidates = sorted(set(validators))
    ranked = sorted(candidates, key=lambda v: (-score_exact(stats.get(v, ()), weights), v))
    return tuple(sorted(ranked[:committee_size]))
