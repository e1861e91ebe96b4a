"""The minimal CTBC application: validator registry, committees, statistics and evidence.

State, all derived from the genesis and the committed blocks (a restart replays the chain):

- every validator there ever was (id, key, latest address) and which of them are current:
  evidence may name a validator removed since, and a removed validator keeps a committee seat
  already elected until its epoch ends, so peers still need its key and address;
- the membership changes pending approval in the current epoch: for each change (a digest of its
  kind and canonical payload), the committee members who have voted for it so far. A change is
  applied to the validator set when a quorum of the committee has voted for it; pending votes
  are discarded at the epoch boundary;
- the committee of every epoch elected so far. Epoch e covers heights [e*E + 1, (e+1)*E]; epoch 0
  is the first ``committee_size`` genesis validators by id; when the last block of epoch e is
  applied, the committee of epoch e+1 is elected by reputation (``reputation.elect``) from the
  validators of that moment. A membership change therefore takes effect at the next boundary;
- per-epoch statistics of each validator, read from the commit certificate each block carries
  for its parent (``BlockHeader.parent_qc``): who was expected to vote, who did, which leaders had
  a turn and which one's block was committed; and the misbehaviour that evidence proved;
- the keys of recorded offences, so one offence is punished once;
- each client with an offence on record: a committed commit's discarded updates are offences of
  their clients, which lower the client's reputation and exclude a repeat offender until an
  operator re-admits it (``clients``).

Committed model versions credit their reward lists to the clients' balances (``balances``),
which are part of the state and so of the app hash.

Transactions: MEMO (opaque, accepted), VALIDATOR_REGISTER and VALIDATOR_REMOVE (a vote for the
change, by a member of the committee of the block's height), EVIDENCE (anyone: two conflicting
votes or proposals signed by one validator), MODEL_VERSION (a server node's model commit) and
CLIENT_READMIT (an operator the genesis names); their payloads are in ``payloads``. With a
``single_chain`` genesis, CMBC's management transactions (``MANAGEMENT_KINDS``) are run by an
embedded CMBC application under CMBC's rules, as in seed 000 Table 5's single-chain baseline.
Other kinds are refused.

``apply_block`` runs every check ``validate_block`` runs (signatures hit the verifier's cache the
second time), on a copy of the state, and swaps the copy in only when the whole block passed: a
block is applied completely or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from types import MappingProxyType

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.apps.cmbc.payloads import MANAGEMENT_KINDS
from dualchain.apps.ctbc.clients import (
    ClientReadmit,
    ClientRecord,
    Readmission,
    check_not_excluded,
    check_readmit,
    offences_of,
    record_offences,
    standing_rows,
)
from dualchain.apps.ctbc.evidence import (
    bad_model_payload,
    check_bad_model,
    check_equivocation,
    equivocation_payload,
)
from dualchain.apps.ctbc.exclusion import excluded
from dualchain.apps.ctbc.fl import MissingBlobError, ModelCommit, ModelCommitChecker, fl_rules
from dualchain.apps.ctbc.payloads import (
    Evidence,
    EvidenceKind,
    ValidatorRegister,
    ValidatorRemove,
    decode_payload,
    evidence_key,
)
from dualchain.apps.ctbc.reputation import EMPTY, ValidatorStats, elect
from dualchain.apps.ctbc.state import (
    Approval,
    Checked,
    NewVersion,
    Offence,
    RegistryState,
    change_key,
)
from dualchain.apps.genesis import Genesis, GenesisError
from dualchain.chain.app import Committee, CommitteeApplication, Validator
from dualchain.chain.blobs import BlobStore
from dualchain.chain.consensus.certificate import check_commit_qc
from dualchain.chain.errors import DecodeError, DualchainError, ValidationError
from dualchain.chain.genesis import Genesis as EngineGenesis
from dualchain.chain.identity import identity_id
from dualchain.chain.proposals import Proposal, SignedProposal
from dualchain.chain.types import Block, QuorumCertificate, Transaction, TxKind, Vote
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.rewards import MAX_AMOUNT

__all__ = [
    "Evidence",
    "EvidenceKind",
    "RegistryApp",
    "ValidatorRegister",
    "ValidatorRemove",
    "change_key",
    "check_commit_qc",
    "decode_payload",
    "evidence_key",
]


class RegistryApp(CommitteeApplication):
    """The CTBC application: deterministic, built from the genesis, advanced by committed blocks."""

    def __init__(self, genesis: EngineGenesis, verifier: SignatureVerifier,
                 blobs: BlobStore | None = None) -> None:
        genesis = Genesis.of(genesis)  # its fl, sched and single_chain sections
        if genesis.kind != "ctbc":
            raise GenesisError(f"kind: the validator registry runs on ctbc, not {genesis.kind!r}")
        self.genesis = genesis
        self._verifier = verifier
        self._consensus = genesis.consensus
        known = {v.id: v for v in genesis.validators}
        first = tuple(sorted(known)[: genesis.consensus.committee_size])
        self._state = RegistryState(height=0, current=set(known), known=known,
                                    committees={0: first})
        self.models: ModelCommitChecker | None = None
        self.exclude_after = genesis.defense.exclude_after if genesis.defense is not None else 0
        self.offence_max_staleness = (genesis.defense.offence_max_staleness
                                      if genesis.defense is not None else 0)
        self.blobs = blobs
        if genesis.fl is not None:
            if blobs is None:
                raise GenesisError("fl: a chain with model versions needs a blob store")
            self.models = ModelCommitChecker(fl_rules(genesis), blobs, verifier)
            self._state.models.append(bytes.fromhex(genesis.fl.model_hash))
            self._state.model_heights.append(0)
        # Single-chain mode: CMBC's application, fed this chain's management transactions.
        self.management = (CmbcApp(max_undo=1, sched=genesis.sched) if genesis.single_chain
                           else None)
        self._hash: bytes | None = None
        self.last_failed: list[tuple[bytes, str]] = []  # (tx hash, code) of the last block run
        self._committees: dict[int, Committee] = {}  # Committee values built from the state

    # -- queries ------------------------------------------------------------------------------

    @property
    def height(self) -> int:
        """The height of the last applied block (0: only genesis)."""
        return self._state.height

    def epoch_of(self, height: int) -> int:
        return self._consensus.epoch_of(height)

    def committee(self, height: int) -> Committee:
        return self._committee(self._state, self.epoch_of(height))

    def validator(self, validator_id: bytes) -> Validator | None:
        return self._state.known.get(validator_id) if validator_id in self._state.current else None

    def known_validator(self, validator_id: bytes) -> Validator | None:
        """Any validator there ever was (a removed one may still sit on an elected committee)."""
        return self._state.known.get(validator_id)

    def validators(self) -> tuple[Validator, ...]:
        """The current validator set, sorted by id."""
        return tuple(self._state.known[v] for v in sorted(self._state.current))

    def stats(self, epoch: int) -> Mapping[bytes, ValidatorStats]:
        """What was recorded about each validator in ``epoch`` (old epochs are pruned)."""
        return MappingProxyType(dict(self._state.stats.get(epoch, {})))

    def latest_model(self) -> tuple[int, bytes, int] | None:
        """The newest committed model version, its blob hash and the height that committed it
        (None: no FL on this chain)."""
        if not self._state.models:
            return None
        return (len(self._state.models) - 1, self._state.models[-1],
                self._state.model_heights[-1])

    def model_hash(self, version: int) -> bytes | None:
        models = self._state.models
        return models[version] if 0 <= version < len(models) else None

    def client_records(self) -> Mapping[bytes, ClientRecord]:
        """Every client with an offence on record, by id (``clients.ClientRecord``)."""
        return MappingProxyType(dict(self._state.clients))

    def client_excluded(self, client: bytes) -> bool:
        record = self._state.clients.get(client)
        return record is not None and record.excluded(self.exclude_after)

    def blobs_for(self, tx: Transaction) -> list[bytes]:
        """The blobs checking ``tx`` reads (a model commit's parent and updates)."""
        if tx.kind != TxKind.MODEL_VERSION or self.models is None:
            return []
        try:
            commit = ModelCommit.decode(tx.payload)
        except DecodeError:
            return []
        parent = self.model_hash(commit.parent_version)
        return commit.digests + ([parent] if parent is not None else [])

    def balances(self) -> dict[bytes, int]:
        """Each client's rewards so far, in micro-units (the committed versions' lists)."""
        return dict(sorted(self._state.balances.items()))

    def status_fields(self) -> dict[str, object]:
        latest = self.latest_model()
        if latest is None:
            return {}
        return {"model_version": latest[0], "model_hash": latest[1], "model_height": latest[2],
                "clients": standing_rows(self._state.clients, self.exclude_after),
                "excluded": sorted(self.excluded_validators())}

    def excluded_validators(self) -> frozenset[bytes]:
        """Validators that may not commit the next model version (``exclusion.py``)."""
        return self._excluded(self._state)

    def _excluded(self, state: RegistryState) -> frozenset[bytes]:
        return excluded(state.stats, self.epoch_of(state.height + 1),
                        self.genesis.reputation.window_epochs, state.current)

    def equivocation_evidence(self, first: Vote | SignedProposal | Proposal,
                              second: Vote | SignedProposal | Proposal) -> bytes:
        return equivocation_payload(first, second)

    def refusal_evidence(self, tx: Transaction, error: DualchainError) -> bytes | None:
        """A model commit whose model is not the aggregate of its updates proves its signer
        tampered with it."""
        if error.code != "model_mismatch":
            return None
        return bad_model_payload(tx)

    def app_hash(self) -> bytes:
        if self._hash is None:
            extra = self.management.app_hash() if self.management is not None else b""
            self._hash = hashlib.sha256(self._state.encode() + extra).digest()
        return self._hash

    # -- Application --------------------------------------------------------------------------

    def check_tx(self, tx: Transaction) -> None:
        if self.management is not None and tx.kind in MANAGEMENT_KINDS:
            self.management.check_tx(tx)
            return
        self._check_tx(self._state, tx)

    def precheck(self, tx: Transaction) -> None:
        """Re-executes a model commit so that its verdict is cached: the daemon calls this on a
        CPU thread before admission, and ``check_tx`` on the event loop then only reads the
        verdict. Anything wrong is left for ``check_tx`` to report."""
        if tx.kind != TxKind.MODEL_VERSION or self.models is None:
            return
        try:
            commit = ModelCommit.decode(tx.payload)
            parent = self.model_hash(commit.parent_version)
            if parent is not None:
                self.models.check(commit, parent, commit.parent_version)
        except (DualchainError, MissingBlobError):
            return

    def validate_block(self, block: Block) -> None:
        self._execute(block)
        if self.management is not None:
            self.management.rollback_block(block)

    def apply_block(self, block: Block) -> bytes:
        self._state = self._execute(block)
        self._hash = None
        return self.app_hash()

    # -- internals ----------------------------------------------------------------------------

    def _committee(self, state: RegistryState, epoch: int) -> Committee:
        members = state.committees.get(epoch)
        built = self._committees.get(epoch)
        if built is not None and built.members == members:
            return built
        if members is None:
            raise ValidationError(
                f"the committee of epoch {epoch} is not known yet", code="unknown_epoch"
            )
        keys = MappingProxyType({m: state.known[m].public_key for m in members})
        built = Committee(epoch, members, keys)
        self._committees[epoch] = built
        return built

    def _execute(self, block: Block) -> RegistryState:
        """The state after ``block``, on a copy; raises ValidationError and changes nothing.

        Block-level faults (height, commit certificate) refuse the block; a transaction the
        application refuses is recorded in ``last_failed`` and has no effect.
        """
        self.last_failed = []
        state = self._state
        header = block.header
        height = header.height
        if height != state.height + 1:
            raise ValidationError(
                f"block height {height} does not follow applied height {state.height}",
                code="bad_height",
            )
        epoch = self.epoch_of(height)
        self._committee(state, epoch)  # the block's own committee must be known
        qc = header.parent_qc
        if height == 1 and qc is not None:
            raise ValidationError("block 1 carries a commit certificate", code="bad_qc")
        if height >= 2:
            if qc is None:
                raise ValidationError(f"block {height} has no commit certificate", code="bad_qc")
            check_commit_qc(
                qc, self._committee(state, self.epoch_of(height - 1)), self.genesis.algorithm,
                self._verifier, height - 1, header.parent_hash, self.genesis.chain_id,
            )
        state = state.copy()
        if qc is not None:
            self._record_commit(state, qc)
        for tx in block.transactions:
            if self.management is not None and tx.kind in MANAGEMENT_KINDS:
                continue  # below
            try:
                outcome = self._check_tx(state, tx)
            except MissingBlobError:
                raise  # not a verdict on the transaction: this replica cannot judge it yet
            except ValidationError as exc:
                # The ledger accepted it (signature, nonce): it stays in the block, uses its
                # nonce and changes nothing else. Refusing the whole block instead would let one
                # transaction that became stale in every mempool (a surplus approval, a second
                # copy of some evidence) stall the chain.
                self.last_failed.append((tx.hash, exc.code))
                continue
            self._apply_tx(state, outcome, epoch)
        state.height = height
        if self._consensus.is_epoch_end(height):
            self._elect(state, epoch)
            state.pending.clear()  # a change must be approved within one epoch
        if self.management is not None:  # last: nothing after it may raise (it is applied)
            self.last_failed += self.management.apply_transactions(
                height, [tx for tx in block.transactions if tx.kind in MANAGEMENT_KINDS],
                skip_refused=True)
        return state

    def _record_commit(self, state: RegistryState, qc: QuorumCertificate) -> None:
        """Votes and proposal turns at the certified height, credited to that height's epoch."""
        epoch = self.epoch_of(qc.height)
        committee = self._committee(state, epoch)
        signers = {voter for voter, _ in qc.signatures}
        for member in committee.members:
            state.add(epoch, member, ValidatorStats(1, int(member in signers)))
        # Leaders of rounds 0..r rotate through the members: each had (r+1) // n turns, and the
        # first (r+1) % n leaders one more (no loop over a round number a peer chose).
        full, extra = divmod(qc.round + 1, committee.size)
        for member in committee.members:
            state.add(epoch, member, ValidatorStats(proposal_turns=full))
        for k in range(extra):
            state.add(epoch, committee.proposer(qc.height, k), ValidatorStats(proposal_turns=1))
        leader = committee.proposer(qc.height, qc.round)
        state.add(epoch, leader, ValidatorStats(proposals_committed=1))

    def _elect(self, state: RegistryState, epoch: int) -> None:
        weights = self.genesis.reputation
        window = range(max(0, epoch - weights.window_epochs + 1), epoch + 1)
        history = {
            vid: [state.stats.get(e, {}).get(vid, EMPTY) for e in window]
            for vid in state.current
        }
        state.committees[epoch + 1] = elect(
            state.current, history, weights, self._consensus.committee_size
        )
        oldest_needed = epoch + 2 - weights.window_epochs  # the next election's window
        for old in [e for e in state.stats if e < oldest_needed]:
            del state.stats[old]

    def _check_tx(self, state: RegistryState, tx: Transaction) -> Checked:
        """Checks ``tx`` for the block at ``state.height + 1``, against ``state``."""
        if tx.kind == TxKind.MEMO:
            return None
        try:
            payload = decode_payload(tx.kind, tx.payload)
        except DecodeError as exc:
            raise ValidationError(
                f"{tx.kind.name} payload is malformed: {exc.reason}", code="malformed_payload"
            ) from exc
        if isinstance(payload, Evidence) and payload.kind == EvidenceKind.BAD_MODEL:
            return check_bad_model(state, payload, self.genesis.chain_id, self.genesis.algorithm,
                                   self._verifier, self.models)
        if isinstance(payload, Evidence):
            return check_equivocation(state, payload, self.genesis.chain_id,
                                      self.genesis.algorithm, self._verifier)
        if isinstance(payload, ModelCommit):
            return self._check_commit(state, tx, payload)
        if isinstance(payload, ClientReadmit):
            return check_readmit(state.clients, tx.sender, self.genesis.operators, payload,
                                 self.exclude_after)
        assert isinstance(payload, ValidatorRegister | ValidatorRemove)
        committee = self._committee(state, self.epoch_of(state.height + 1))
        if tx.sender not in committee:
            who = tx.sender.hex()[:16]
            if tx.sender not in state.current:
                raise ValidationError(
                    f"{tx.kind.name} must come from a committee member; {who} is not even a "
                    "current validator",
                    code="not_a_validator",
                )
            raise ValidationError(
                f"{tx.kind.name} must come from a member of committee {committee.epoch}, "
                f"not {who}",
                code="not_a_member",
            )
        if isinstance(payload, ValidatorRegister):
            self._check_register(state, payload)
        else:
            self._check_remove(state, payload)
        key = change_key(tx.kind, payload)
        if tx.sender in state.pending.get(key, ()):
            raise ValidationError(
                f"{tx.sender.hex()[:16]} has already voted for this change this epoch",
                code="duplicate_approval",
            )
        return Approval(payload, key, tx.sender)

    def _check_register(self, state: RegistryState, reg: ValidatorRegister) -> None:
        alg = self.genesis.algorithm
        if len(reg.public_key) != alg.public_key_bytes:
            raise ValidationError(
                f"key is {len(reg.public_key)} bytes, {alg.label} keys are "
                f"{alg.public_key_bytes}",
                code="bad_key_length",
            )
        if identity_id(reg.public_key) in state.current:
            raise ValidationError("this key is already a validator", code="already_validator")
        if not reg.address:
            raise ValidationError("a validator needs a peer address", code="bad_address")

    def _check_remove(self, state: RegistryState, rem: ValidatorRemove) -> None:
        if rem.validator not in state.current:
            raise ValidationError(
                f"{rem.validator.hex()[:16]} is not a validator", code="unknown_validator"
            )
        size = self._consensus.committee_size
        if len(state.current) - 1 < size:
            raise ValidationError(
                f"removing it would leave fewer validators than the committee size {size}",
                code="too_few_validators",
            )

    def _check_commit(self, state: RegistryState, tx: Transaction,
                      commit: ModelCommit) -> NewVersion:
        if self.models is None:
            raise ValidationError("this chain carries no model versions", code="no_fl")
        if tx.sender not in state.current:
            raise ValidationError("model versions come from server nodes (validators)",
                                  code="not_a_validator")
        if tx.sender in self._excluded(state):
            raise ValidationError("the sender has misbehaviour on record and may not commit "
                                  "model versions", code="excluded_validator")
        named = self.models.check(commit, state.models[-1], len(state.models) - 1)
        check_not_excluded(state.clients, [c for c, _ in named.values()], self.exclude_after)
        for client, amount in commit.rewards or ():
            if state.balances.get(client, 0) + amount > MAX_AMOUNT:
                raise ValidationError(f"the balance of {client.hex()[:16]} would overflow",
                                      code="balance_overflow")
        return NewVersion(commit, offences_of(commit, named, self.offence_max_staleness))

    def _apply_tx(self, state: RegistryState, checked: Checked, epoch: int) -> None:
        if isinstance(checked, NewVersion):
            state.models.append(checked.commit.model_hash)
            state.model_heights.append(state.height + 1)  # state.height is still the parent's
            record_offences(state.clients, checked.commit.version, checked.offenders)
            for client, amount in checked.commit.rewards or ():  # checked: conserves its base
                state.balances[client] = state.balances.get(client, 0) + amount
        elif isinstance(checked, Readmission):
            state.clients[checked.client] = state.clients[checked.client].readmitted()
        elif isinstance(checked, Approval):
            voters = state.pending.setdefault(checked.key, set())
            voters.add(checked.voter)
            if len(voters) >= self._committee(state, epoch).quorum:
                del state.pending[checked.key]
                self._apply_change(state, checked.change)
        elif isinstance(checked, Offence):
            state.evidence.add(checked.key)
            state.add(epoch, checked.offender, ValidatorStats(misbehaviour=1))

    def _apply_change(self, state: RegistryState,
                      change: ValidatorRegister | ValidatorRemove) -> None:
        """An approved change: the next epoch's election sees it."""
        if isinstance(change, ValidatorRegister):
            vid = identity_id(change.public_key)
            state.known[vid] = Validator(vid, change.public_key, change.address)
            state.current.add(vid)
        else:
            state.current.discard(change.validator)
