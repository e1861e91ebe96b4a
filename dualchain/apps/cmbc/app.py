"""The CMBC application: registered clients, their measured states and cross-chain anchors.

Rules (each refusal is a ValidationError with a code):

- ``CLIENT_REGISTER``: the sender (its key is the transaction's key) attaches to a server node;
  sending it again moves the client.
- ``STATE_REPORT``: only from a registered client; the latest report per client is kept.
- ``ANCHOR``: a model version committed on CTBC; a version is anchored once, with one hash.
- ``REWARD``: exactly one per block, its first transaction, sent by the block's miner, bound
  to the block's height and parent and claiming the genesis's ``pow.block_reward``; never
  admitted to the mempool. Applying the block credits the amount to the record's account
  (``balances``); a reorg takes the credit back with the block (the undo journal).
- ``MEMO``: opaque bytes, accepted and not stored (benchmarks).
- ``NODE_JOIN_REQUEST`` (seed 000 §3.1, two-stage node join): a ``NodeJoinRequest`` from the
  joining node, once per node; then, after CTBC committed the joiner as a validator, a
  ``NodeAdmission`` from a server node other than the joiner (a second admission of the same
  node is superseded). Between the two the joiner is pending: it is no server node, and its
  clients are left out of every group and plan.

- ``GROUP_ASSIGNMENT`` and ``TASK_PLAN`` (seed 000 §4): only from a server node (one that
  clients registered with), only with a ``sched`` genesis section, and only if re-running the
  scheduler on the client states at the record's basis height reproduces it exactly
  (``management``). A record overtaken by another (an assignment that does not replace the
  one in force, a plan over another assignment or for an older version) is superseded: it is
  accepted and changes nothing. Refusing it instead would strand every later transaction of
  its honest sender behind a nonce that can never be used.

Every state report is also kept in a short per-client history with the height that recorded it,
so a record made from the (final) state at an earlier height can be checked against the same
inputs later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dualchain.apps.cmbc import management
from dualchain.apps.cmbc.payloads import (
    Anchor,
    ClientRegistration,
    GroupAssignment,
    NodeAdmission,
    NodeJoinRequest,
    StateReport,
    TaskPlan,
    decode_payload,
)
from dualchain.apps.cmbc.state import JournaledState
from dualchain.apps.genesis import SchedParams
from dualchain.chain.app import ReorgApplication
from dualchain.chain.canonical import U64_MAX, Reader, Writer
from dualchain.chain.consensus.reward import Reward, check_reward
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.identity import ID_BYTES
from dualchain.chain.types import Block, Transaction, TxKind
from dualchain.scheduler import ClientState

CLIENT = b"client/"
CLIENTS = b"clients"  # every registered client id, sorted
STATE = b"state/"
HISTORY = b"history/"
ANCHOR = b"anchor/"
ZERO_DIGEST = bytes(32)
ASSIGNMENT = b"assignment"
PLAN = b"plan"
JOIN = b"join/"
JOINS = b"joins"  # every node that asked to join, sorted
ADMITTED = b"admitted/"  # CTBC height of the admission, then the CMBC height that recorded it
ASKED = b"asked/"  # the CMBC height that recorded a node's join request
BALANCE = b"balance/"  # an account's micro-units, u64
HISTORY_TAG = b"DCH1"
JOIN_RECORD_TAG = b"DCJR"


def _ids(raw: bytes | None) -> list[bytes]:
    raw = raw or b""
    return [raw[i : i + ID_BYTES] for i in range(0, len(raw), ID_BYTES)]


def _encode_history(entries: list[tuple[int, StateReport]]) -> bytes:
    w = Writer(HISTORY_TAG).count(len(entries))
    for height, report in entries:
        w.u64(height).raw(report.encode())
    return w.bytes()


def _decode_history(data: bytes) -> list[tuple[int, StateReport]]:
    r = Reader(data, HISTORY_TAG, "state history")
    entries = [(r.u64("height"), StateReport.decode(r.raw("report", 1024)))
               for _ in range(r.count("entries", 1 << 16))]
    r.finish()
    return entries


class Superseded:
    """A scheduling record that no longer applies: accepted, with no effect."""


SUPERSEDED = Superseded()


class CmbcApp(ReorgApplication):
    def __init__(self, max_undo: int = 64, sched: SchedParams | None = None,
                 block_reward: int = 0) -> None:
        self.state = JournaledState(max_undo)
        self.sched = sched
        self.block_reward = block_reward  # the genesis's pow.block_reward
        self.height = 0  # of the last applied block
        self._cache: dict[tuple, object] = {}

    # -- reads -----------------------------------------------------------------------------------

    def client(self, client_id: bytes) -> tuple[bytes, ClientRegistration] | None:
        """A registered client's public key and registration."""
        raw = self.state.get(CLIENT + client_id)
        if raw is None:
            return None
        key_len = int.from_bytes(raw[:4], "big")
        return raw[4 : 4 + key_len], ClientRegistration.decode(raw[4 + key_len :])

    def latest_report(self, client_id: bytes) -> StateReport | None:
        raw = self.state.get(STATE + client_id)
        return None if raw is None else StateReport.decode(raw)

    def clients(self) -> list[bytes]:
        return _ids(self.state.get(CLIENTS))

    def join_request(self, node: bytes) -> tuple[bytes, bytes, NodeJoinRequest] | None:
        """A joining node's public key, the hash of its request transaction and the request."""
        raw = self.state.get(JOIN + node)
        if raw is None:
            return None
        r = Reader(raw, JOIN_RECORD_TAG, "join record")
        value = (r.var("public_key", 1 << 16), r.fixed(32, "tx_hash"),
                 NodeJoinRequest.decode(r.var("request", 1 << 12)))
        r.finish()
        return value

    def joiners(self) -> list[bytes]:
        """Every node that asked to join, admitted or not."""
        return _ids(self.state.get(JOINS))

    def admitted_at(self, node: bytes) -> int | None:
        """The CTBC height that committed a joiner as a validator (None: not admitted)."""
        raw = self.state.get(ADMITTED + node)
        return None if raw is None else int.from_bytes(raw[:8], "big")

    def pending(self, node: bytes) -> bool:
        """Asked to join and not admitted yet."""
        return self.state.get(JOIN + node) is not None and self.admitted_at(node) is None

    def pending_at(self, node: bytes, height: int) -> bool:
        """Pending as the state at CMBC ``height`` had it: its request recorded by then, its
        admission not."""
        asked = self.state.get(ASKED + node)
        if asked is None or int.from_bytes(asked, "big") > height:
            return False
        admitted = self.state.get(ADMITTED + node)
        return admitted is None or int.from_bytes(admitted[8:], "big") > height

    def history(self, client_id: bytes) -> list[tuple[int, StateReport]]:
        raw = self.state.get(HISTORY + client_id)
        return [] if raw is None else _decode_history(raw)

    def states_at(self, basis_height: int) -> dict[bytes, ClientState]:
        """Each client's latest state at ``basis_height``, as the scheduler reads it; clients
        with no report by then are left out. Raises if a history no longer reaches back.

        Whether a client's node was a pending joiner is judged at the basis too: a record made
        while a joiner was pending must reproduce when it is mined after the admission."""
        assert self.sched is not None
        states = {}
        for client in self.clients():
            registered = self.client(client)
            if registered is not None and self.pending_at(registered[1].node, basis_height):
                continue  # its node's join was not complete at the basis
            entries = self.history(client)
            earlier = [report for height, report in entries if height <= basis_height]
            if earlier:
                states[client] = management.client_state(client, earlier[-1],
                                                          self.sched.batch_size)
            elif len(entries) >= self.sched.history:
                raise ValidationError(f"basis height {basis_height} is older than the kept "
                                      "state history", code="basis_too_old")
        return states

    def nodes_of(self, clients: list[bytes]) -> dict[bytes, bytes]:
        out = {}
        for client in clients:
            registered = self.client(client)
            if registered is not None:
                out[client] = registered[1].node
        return out

    def assignment(self) -> GroupAssignment | None:
        raw = self.state.get(ASSIGNMENT)
        return None if raw is None else GroupAssignment.decode(raw)

    def plan(self) -> TaskPlan | None:
        raw = self.state.get(PLAN)
        return None if raw is None else TaskPlan.decode(raw)

    def is_server_node(self, node: bytes) -> bool:
        """One that clients registered with, unless its join is pending."""
        return node in self.nodes_of(self.clients()).values() and not self.pending(node)

    def balance(self, account: bytes) -> int:
        """An account's micro-units from block rewards."""
        raw = self.state.get(BALANCE + account)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def balances(self) -> dict[bytes, int]:
        """Every non-zero balance (block rewards, micro-units), by account."""
        return {key[len(BALANCE):]: int.from_bytes(raw, "big")
                for key, raw in sorted(self.state.items(BALANCE))}

    def anchor(self, version: int) -> Anchor | None:
        raw = self.state.get(ANCHOR + version.to_bytes(8, "big"))
        return None if raw is None else Anchor.decode(raw)

    # -- Application -----------------------------------------------------------------------------

    def app_hash(self) -> bytes:
        return self.state.digest()

    def check_tx(self, tx: Transaction) -> None:
        if tx.kind == TxKind.REWARD:
            raise ValidationError("reward transactions come only with their block",
                                  code="unsupported_kind")
        self._check(tx, admission=True)

    def validate_block(self, block: Block) -> None:
        self.apply_block(block)
        self.rollback_block(block)

    def apply_block(self, block: Block) -> bytes:
        check_reward(block, self.block_reward)
        self.apply_transactions(block.header.height, block.transactions)
        return self.app_hash()

    def apply_transactions(self, height: int, txs: Sequence[Transaction],
                           skip_refused: bool = False) -> list[tuple[bytes, str]]:
        """Applies the management transactions of the block at ``height`` as one undoable
        step. A refused transaction raises and nothing is applied, or with ``skip_refused`` (a
        single chain's committee block, where a refused transaction only uses its nonce) has no
        effect and is returned as (tx hash, code)."""
        self.state.begin()
        previous, self.height = self.height, height - 1
        refused = []
        try:
            for tx in txs:
                try:
                    payload = self._check(tx)
                except ValidationError as exc:
                    if not skip_refused:
                        raise
                    refused.append((tx.hash, exc.code))
                    continue
                self._apply(tx, payload)
        except BaseException:
            self.state.abort()
            self.height = previous
            raise
        self.state.commit()
        self.height = height
        return refused

    def rollback_block(self, block: Block) -> None:
        self.state.undo_last()
        self.height = block.header.height - 1

    def executable(self, txs: Sequence[Transaction],
                   refused: list[tuple[Transaction, ValidationError]] | None = None
                   ) -> list[Transaction]:
        """What of ``txs``, applied in order, the rules accept; changes nothing. Each sender's
        first refused transaction is appended to ``refused`` with the reason.

        Each transaction was checked alone when it was admitted, but together they may conflict
        (two anchors of one version with different hashes), and a reorg can take back what one
        relied on. A block template must leave such a transaction out, and every later one of
        its sender (their nonces would skip), or each block mined from it is invalid and the
        chain stalls.
        """
        kept: list[Transaction] = []
        blocked: set[bytes] = set()
        self.state.begin()
        try:
            for tx in txs:
                if tx.sender in blocked:
                    continue
                try:
                    self._apply(tx, self._check(tx))
                except ValidationError as exc:
                    blocked.add(tx.sender)
                    if refused is not None:
                        refused.append((tx, exc))
                    continue
                kept.append(tx)
        finally:
            self.state.abort()
        return kept

    # -- rules -----------------------------------------------------------------------------------

    def _check(self, tx: Transaction, admission: bool = False) -> object:
        """The rules for ``tx`` applied next. At mempool ``admission`` a group assignment or
        plan is only checked for its sender and kind: it may depend on records still in the
        mempool, and the scheduler is re-run when a block (or a template) applies it."""
        try:
            payload = decode_payload(tx.kind, tx.payload)
        except DecodeError as exc:
            raise ValidationError(f"{tx.kind.name} payload: {exc.reason}",
                                  code="bad_payload") from exc
        if isinstance(payload, StateReport) and self.client(tx.sender) is None:
            raise ValidationError(
                f"state report from unregistered client {tx.sender.hex()[:16]}",
                code="unknown_client")
        if isinstance(payload, Anchor):
            known = self.anchor(payload.version)
            if known is not None and known.model_hash != payload.model_hash:
                raise ValidationError(
                    f"version {payload.version} is already anchored with another hash",
                    code="conflicting_anchor")
        if (isinstance(payload, GroupAssignment | TaskPlan)
                and not self._check_schedule(tx, payload, admission)):
            return SUPERSEDED
        if isinstance(payload, Reward) and \
                self.balance(payload.account) + payload.amount > U64_MAX:
            raise ValidationError(f"balance of {payload.account.hex()[:16]} would overflow",
                                  code="bad_reward")
        if isinstance(payload, NodeJoinRequest) and self.state.get(JOIN + tx.sender) is not None:
            raise ValidationError(f"node {tx.sender.hex()[:16]} has already asked to join",
                                  code="already_requested")
        if isinstance(payload, NodeAdmission) and not self._check_admission(tx, payload):
            return SUPERSEDED
        return payload

    def _check_admission(self, tx: Transaction, admission: NodeAdmission) -> bool:
        """False when the joiner is admitted already (the record is superseded)."""
        if not self.is_server_node(tx.sender):
            raise ValidationError(f"node admission from {tx.sender.hex()[:16]}, not a server "
                                  "node", code="not_a_node")
        if self.state.get(JOIN + admission.node) is None:
            raise ValidationError(f"node {admission.node.hex()[:16]} has not asked to join",
                                  code="unknown_join")
        return self.admitted_at(admission.node) is None

    def _check_schedule(self, tx: Transaction, record: GroupAssignment | TaskPlan,
                        admission: bool) -> bool:
        """Re-executes the scheduler for a group assignment or task plan (the block being
        applied has height ``self.height + 1``); False when the record is superseded."""
        what = "group assignment" if isinstance(record, GroupAssignment) else "task plan"
        if self.sched is None:
            raise ValidationError(f"this CMBC has no sched section: no {what}s",
                                  code="unsupported_kind")
        if not self.is_server_node(tx.sender):
            raise ValidationError(f"{what} from {tx.sender.hex()[:16]}, not a server node",
                                  code="not_a_node")
        if admission:
            return True
        if record.basis_height > self.height:
            raise ValidationError(f"{what} basis {record.basis_height} is past height "
                                  f"{self.height}", code="future_basis")
        current = self.assignment()
        if isinstance(record, GroupAssignment):
            if record.previous != (current.digest if current else ZERO_DIGEST):
                return False
            states = self.states_at(record.basis_height)
            nodes = self.nodes_of(list(states))
            expected = self._reexecute(
                ("groups", record.reason, record.version, record.basis_height, record.previous,
                 tuple(sorted(states.items())), tuple(sorted(nodes.items()))),
                lambda: management.expected_groups(
                    record.reason, states, nodes, current, self.sched, record.version,
                    record.basis_height))
            if expected != record.groups:
                raise ValidationError("group assignment does not reproduce",
                                      code="plan_mismatch")
            return True
        plan = self.plan()
        if (plan is not None and record.version <= plan.version) or current is None \
                or record.assignment != current.digest:
            return False
        states = self.states_at(record.basis_height)
        missing = [c for _, members in current.groups for c in members if c not in states]
        if missing:
            raise ValidationError(f"task plan basis lacks states of {len(missing)} group "
                                  "member(s)", code="plan_mismatch")
        expected_tasks = self._reexecute(
            ("tasks", record.version, record.basis_height, record.assignment,
             tuple(sorted(states.items()))),
            lambda: management.expected_tasks(current, states, self.sched, record.version,
                                              record.basis_height))
        if expected_tasks != record.tasks:
            raise ValidationError("task plan does not reproduce", code="plan_mismatch")
        return True

    def _reexecute(self, key: tuple, compute: Callable[[], object]) -> object:
        """The scheduler's output for a record's inputs, computed once: a record is checked at
        every template, block validation and application, and clustering is not free. ``key``
        must hold every input of ``compute``."""
        if key not in self._cache:
            if len(self._cache) >= 64:
                self._cache.clear()
            self._cache[key] = compute()
        return self._cache[key]

    def _apply(self, tx: Transaction, payload: object) -> None:
        if isinstance(payload, ClientRegistration):
            key = len(tx.public_key).to_bytes(4, "big") + tx.public_key
            if self.state.get(CLIENT + tx.sender) is None:
                known = sorted([*self.clients(), tx.sender])
                self.state.put(CLIENTS, b"".join(known))
            self.state.put(CLIENT + tx.sender, key + payload.encode())
        elif isinstance(payload, StateReport):
            self.state.put(STATE + tx.sender, payload.encode())
            if self.sched is not None:
                entries = [*self.history(tx.sender), (self.height + 1, payload)]
                self.state.put(HISTORY + tx.sender,
                               _encode_history(entries[-self.sched.history :]))
        elif isinstance(payload, GroupAssignment):  # (a superseded one is not a payload)
            self.state.put(ASSIGNMENT, payload.encode())
        elif isinstance(payload, TaskPlan):
            self.state.put(PLAN, payload.encode())
        elif isinstance(payload, NodeJoinRequest):
            record = Writer(JOIN_RECORD_TAG).var(tx.public_key).fixed(tx.hash, 32)
            self.state.put(JOIN + tx.sender, record.var(payload.encode()).bytes())
            self.state.put(ASKED + tx.sender, (self.height + 1).to_bytes(8, "big"))
            self.state.put(JOINS, b"".join(sorted([*self.joiners(), tx.sender])))
        elif isinstance(payload, NodeAdmission):  # (a superseded one is not a payload)
            self.state.put(ADMITTED + payload.node, payload.ctbc_height.to_bytes(8, "big")
                           + (self.height + 1).to_bytes(8, "big"))
        elif isinstance(payload, Reward) and payload.amount:
            self.state.put(BALANCE + payload.account,
                           (self.balance(payload.account) + payload.amount).to_bytes(8, "big"))
        elif isinstance(payload, Anchor) and self.anchor(payload.version) is None:
            self.state.put(ANCHOR + payload.version.to_bytes(8, "big"), payload.encode())
