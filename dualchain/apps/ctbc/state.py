"""The CTBC application's state and what checking one transaction against it yields.

``RegistryState`` is everything ``RegistryApp`` knows (see its module for what each part means);
its canonical encoding is what the app hash digests. ``Checked`` is the verdict of one
transaction's check, which ``RegistryApp`` then applies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from dualchain.apps.ctbc.clients import ClientRecord, Readmission, encode_records
from dualchain.apps.ctbc.fl import ModelCommit
from dualchain.apps.ctbc.payloads import ValidatorRegister, ValidatorRemove
from dualchain.apps.ctbc.reputation import EMPTY, ValidatorStats
from dualchain.chain.app import Validator
from dualchain.chain.canonical import Writer
from dualchain.chain.identity import ID_BYTES
from dualchain.chain.types import TxKind

STATE_TAG = b"DRS4"  # DRS3 had no balances, DRS2 no client records
CHANGE_TAG = b"DMC1"


@dataclass
class RegistryState:
    height: int
    current: set[bytes]  # the validator set
    known: dict[bytes, Validator]  # every validator ever, with its latest address
    committees: dict[int, tuple[bytes, ...]]  # epoch -> members sorted by id
    stats: dict[int, dict[bytes, ValidatorStats]] = field(default_factory=dict)
    evidence: set[bytes] = field(default_factory=set)
    pending: dict[bytes, set[bytes]] = field(default_factory=dict)  # change -> its voters
    models: list[bytes] = field(default_factory=list)  # model blob hash of each version
    model_heights: list[int] = field(default_factory=list)  # the height that committed each
    clients: dict[bytes, ClientRecord] = field(default_factory=dict)  # offenders (clients.py)
    # account (client id) -> micro-units: the reward lists of the committed versions
    balances: dict[bytes, int] = field(default_factory=dict)

    def copy(self) -> RegistryState:
        return RegistryState(
            self.height, set(self.current), dict(self.known), dict(self.committees),
            {epoch: dict(per) for epoch, per in self.stats.items()}, set(self.evidence),
            {change: set(voters) for change, voters in self.pending.items()}, list(self.models),
            list(self.model_heights), dict(self.clients), dict(self.balances),
        )

    def add(self, epoch: int, validator: bytes, delta: ValidatorStats) -> None:
        per = self.stats.setdefault(epoch, {})
        per[validator] = per.get(validator, EMPTY).plus(delta)

    def encode(self) -> bytes:
        w = Writer(STATE_TAG).u64(self.height).count(len(self.known))
        for vid in sorted(self.known):
            v = self.known[vid]
            w.fixed(vid, ID_BYTES).var(v.public_key).text(v.address).flag(vid in self.current)
        w.count(len(self.committees))
        for epoch in sorted(self.committees):
            w.u64(epoch).count(len(self.committees[epoch]))
            for member in self.committees[epoch]:
                w.fixed(member, ID_BYTES)
        w.count(len(self.stats))
        for epoch in sorted(self.stats):
            per = self.stats[epoch]
            w.u64(epoch).count(len(per))
            for vid in sorted(per):
                s = per[vid]
                w.fixed(vid, ID_BYTES).u64(s.votes_expected).u64(s.votes_cast)
                w.u64(s.proposal_turns).u64(s.proposals_committed).u64(s.misbehaviour)
        w.count(len(self.evidence))
        for key in sorted(self.evidence):
            w.fixed(key, 32)
        w.count(len(self.pending))
        for change in sorted(self.pending):
            w.fixed(change, 32).count(len(self.pending[change]))
            for voter in sorted(self.pending[change]):
                w.fixed(voter, ID_BYTES)
        w.count(len(self.models))
        for model, height in zip(self.models, self.model_heights, strict=True):
            w.fixed(model, 32).u64(height)
        encode_records(w, self.clients)
        w.count(len(self.balances))  # in the app hash: replicas that disagree cannot commit
        for account in sorted(self.balances):
            w.fixed(account, ID_BYTES).u64(self.balances[account])
        return w.bytes()


def change_key(kind: TxKind, payload: ValidatorRegister | ValidatorRemove) -> bytes:
    """Names one membership change: its kind and canonical payload, whoever votes for it."""
    return hashlib.sha256(Writer(CHANGE_TAG).u8(int(kind)).var(payload.encode()).bytes()).digest()


@dataclass(frozen=True)
class Offence:
    key: bytes
    offender: bytes


@dataclass(frozen=True)
class NewVersion:
    commit: ModelCommit
    offenders: tuple[tuple[bytes, str], ...] = ()  # (client, reason) of each discarded update


@dataclass(frozen=True)
class Approval:
    """One committee member's vote for one membership change."""

    change: ValidatorRegister | ValidatorRemove
    key: bytes  # change_key of the change
    voter: bytes


Checked = Approval | Offence | NewVersion | Readmission | None
