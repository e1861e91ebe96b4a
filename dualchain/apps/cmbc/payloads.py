"""Payloads of CMBC's management transactions, in the canonical encoding.

Each payload has its own type tag and a strict decoder (short input, over-limit lengths and
trailing bytes raise DecodeError). Measured quantities are integers in fixed units (ms, milli-
samples per second) so that every replica reads the same values: no floats in signed bytes.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.consensus.reward import Reward
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.identity import ID_BYTES
from dualchain.chain.types import HASH_BYTES, TxKind

REGISTER_TAG = b"DCR1"
STATE_TAG = b"DCS3"
ANCHOR_TAG = b"DCA1"
GROUPS_TAG = b"DCG1"
PLAN_TAG = b"DCP1"
JOIN_TAG = b"DCJ1"
ADMISSION_TAG = b"DCJ2"
MAX_ADDRESS = 256
MAX_LABEL = 256
MAX_CLIENTS = 4096  # per plan: a bound for the decoder, far above any testbed
MAX_BATCHES = 1 << 20


@dataclass(frozen=True)
class ClientRegistration:
    """A client's ML-DSA key (the transaction's own sender key) and the server node it uses.

    Sending it again moves the client to another node (dynamic groups); the key stays the one
    of the transaction's sender, so nobody can register a key they do not hold."""

    node: bytes  # identity id of the server node the client attaches to
    label: str = ""  # free text for operators (device name, region)

    def encode(self) -> bytes:
        return Writer(REGISTER_TAG).fixed(self.node, ID_BYTES).text(self.label).bytes()

    @classmethod
    def decode(cls, data: bytes) -> ClientRegistration:
        r = Reader(data, REGISTER_TAG, "client registration")
        value = cls(r.fixed(ID_BYTES, "node"), r.text("label", MAX_LABEL))
        r.finish()
        return value


@dataclass(frozen=True)
class StateReport:
    """A client's measured state: the inputs of seed 000 eq. 8, as the client measured them."""

    task: int  # the task (model version it trained on) the measurement belongs to
    rtt_ms: int  # round trip time to its server node
    completion_ms: int  # wall time of the last task, fetch to upload
    speed_milli: int  # training speed, samples per second x 1000
    failures: int  # tasks failed or abandoned since the previous report
    disconnected_ms: int  # time without its node since the previous report
    # Samples trained in the task that completion_ms measures: completion minus their training
    # time (samples / speed) is what the task spent on transfers and waiting.
    samples: int = 0
    # Local differential privacy: the epsilon the client has spent, x 10^6 (None: no DP). An
    # optional trailing field, so reports of clients without it decode as before.
    epsilon_micro: int | None = None

    def encode(self) -> bytes:
        w = Writer(STATE_TAG).u64(self.task).u32(self.rtt_ms).u64(self.completion_ms)
        w.u64(self.speed_milli).u32(self.failures).u64(self.disconnected_ms)
        w.u64(self.samples)
        if self.epsilon_micro is not None:
            w.u64(self.epsilon_micro)
        return w.bytes()

    @classmethod
    def decode(cls, data: bytes) -> StateReport:
        r = Reader(data, STATE_TAG, "state report")
        value = cls(r.u64("task"), r.u32("rtt_ms"), r.u64("completion_ms"),
                    r.u64("speed_milli"), r.u32("failures"), r.u64("disconnected_ms"),
                    r.u64("samples"), None if r.at_end() else r.u64("epsilon_micro"))
        r.finish()
        return value

    @property
    def epsilon(self) -> float | None:
        return None if self.epsilon_micro is None else self.epsilon_micro / 1e6


@dataclass(frozen=True)
class Anchor:
    """Cross-chain record of a model version committed on CTBC."""

    version: int
    model_hash: bytes
    ctbc_height: int

    def encode(self) -> bytes:
        w = Writer(ANCHOR_TAG).u64(self.version).fixed(self.model_hash, HASH_BYTES)
        return w.u64(self.ctbc_height).bytes()

    @classmethod
    def decode(cls, data: bytes) -> Anchor:
        r = Reader(data, ANCHOR_TAG, "anchor")
        value = cls(r.u64("version"), r.fixed(HASH_BYTES, "model_hash"), r.u64("ctbc_height"))
        r.finish()
        return value


@dataclass(frozen=True)
class NodeJoinRequest:
    """Stage 1 of a server node's join (seed 000 §3.1): the sender (its key is the
    transaction's key) asks to become a server node. CTBC's committee then votes the key in as a
    validator, referencing this request; until that commit its clients get no tasks."""

    node_address: str  # host:port of its node service (clients, relayed updates)
    ctbc_address: str  # host:port of its CTBC replica (consensus gossip)

    def encode(self) -> bytes:
        return Writer(JOIN_TAG).text(self.node_address).text(self.ctbc_address).bytes()

    @classmethod
    def decode(cls, data: bytes) -> NodeJoinRequest:
        r = Reader(data, JOIN_TAG, "node join request")
        value = cls(r.text("node_address", MAX_ADDRESS), r.text("ctbc_address", MAX_ADDRESS))
        r.finish()
        if not value.node_address or not value.ctbc_address:
            raise DecodeError("node join request: both addresses are required")
        return value


@dataclass(frozen=True)
class NodeAdmission:
    """The join's last step: a server node records that CTBC committed the joiner as a
    validator (at ``ctbc_height``); from then on the joiner's clients are scheduled and it may
    manage a group. Sent with the kind NODE_JOIN_REQUEST (the tag tells the two apart)."""

    node: bytes  # identity id of the joiner
    ctbc_height: int

    def encode(self) -> bytes:
        return Writer(ADMISSION_TAG).fixed(self.node, ID_BYTES).u64(self.ctbc_height).bytes()

    @classmethod
    def decode(cls, data: bytes) -> NodeAdmission:
        r = Reader(data, ADMISSION_TAG, "node admission")
        value = cls(r.fixed(ID_BYTES, "node"), r.u64("ctbc_height"))
        r.finish()
        return value


def _decode_join(data: bytes) -> NodeJoinRequest | NodeAdmission:
    if data[: len(ADMISSION_TAG)] == ADMISSION_TAG:
        return NodeAdmission.decode(data)
    return NodeJoinRequest.decode(data)


class Regrouping(enum.IntEnum):
    """Why a group assignment was made: both are re-executed by every replica."""

    RECLUSTER = 1  # Algorithm 1 over every client's state
    PLACE = 2  # the previous groups kept; newcomers placed by Algorithm 2, departed ones removed


@dataclass(frozen=True)
class GroupAssignment:
    """Client groups and the server node that manages each, computed by the scheduler from the
    client states CMBC held at ``basis_height`` (a final height when it was made)."""

    version: int  # the anchored model version it follows
    basis_height: int
    reason: Regrouping
    previous: bytes  # digest of the assignment it replaces (zeros: the first)
    groups: tuple[tuple[bytes, tuple[bytes, ...]], ...]  # (node, member client ids)

    def encode(self) -> bytes:
        w = Writer(GROUPS_TAG).u64(self.version).u64(self.basis_height).u8(self.reason)
        w.fixed(self.previous, HASH_BYTES).count(len(self.groups))
        for node, members in self.groups:
            w.fixed(node, ID_BYTES).count(len(members))
            for client in members:
                w.fixed(client, ID_BYTES)
        return w.bytes()

    @classmethod
    def decode(cls, data: bytes) -> GroupAssignment:
        r = Reader(data, GROUPS_TAG, "group assignment")
        version, basis = r.u64("version"), r.u64("basis_height")
        try:
            reason = Regrouping(r.u8("reason"))
        except ValueError as exc:
            raise DecodeError("group assignment: unknown reason") from exc
        previous = r.fixed(HASH_BYTES, "previous")
        groups = []
        for _ in range(r.count("groups", MAX_CLIENTS)):
            node = r.fixed(ID_BYTES, "node")
            members = tuple(r.fixed(ID_BYTES, "client")
                            for _ in range(r.count("members", MAX_CLIENTS)))
            groups.append((node, members))
        r.finish()
        return cls(version, basis, reason, previous, tuple(groups))

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


@dataclass(frozen=True)
class TaskPlan:
    """Batches per client for the tasks after ``version``, by the scheduler over the groups of
    the assignment named by ``assignment`` and the client states at ``basis_height``."""

    version: int
    basis_height: int
    assignment: bytes  # SHA-256 of the GroupAssignment payload it sizes tasks for
    tasks: tuple[tuple[bytes, int], ...]  # (client, batches), by client id

    def encode(self) -> bytes:
        w = Writer(PLAN_TAG).u64(self.version).u64(self.basis_height)
        w.fixed(self.assignment, HASH_BYTES).count(len(self.tasks))
        for client, batches in self.tasks:
            w.fixed(client, ID_BYTES).u32(batches)
        return w.bytes()

    @classmethod
    def decode(cls, data: bytes) -> TaskPlan:
        r = Reader(data, PLAN_TAG, "task plan")
        version, basis = r.u64("version"), r.u64("basis_height")
        assignment = r.fixed(HASH_BYTES, "assignment")
        tasks = []
        for _ in range(r.count("tasks", MAX_CLIENTS)):
            client = r.fixed(ID_BYTES, "client")
            batches = r.u32("batches")
            if not 0 < batches <= MAX_BATCHES:
                raise DecodeError(f"task plan: {batches} batches is out of range")
            tasks.append((client, batches))
        r.finish()
        return cls(version, basis, assignment, tuple(tasks))


Payload = (ClientRegistration | StateReport | Anchor | Reward | GroupAssignment | TaskPlan
           | NodeJoinRequest | NodeAdmission | bytes)
# What a single-chain CTBC takes from CMBC (the rest of CMBC is its proof of work).
MANAGEMENT_KINDS = frozenset({
    TxKind.CLIENT_REGISTER, TxKind.STATE_REPORT, TxKind.GROUP_ASSIGNMENT, TxKind.TASK_PLAN,
    TxKind.ANCHOR, TxKind.NODE_JOIN_REQUEST,
})
_DECODERS = {
    TxKind.CLIENT_REGISTER: ClientRegistration.decode,
    TxKind.STATE_REPORT: StateReport.decode,
    TxKind.ANCHOR: Anchor.decode,
    TxKind.REWARD: Reward.decode,
    TxKind.GROUP_ASSIGNMENT: GroupAssignment.decode,
    TxKind.TASK_PLAN: TaskPlan.decode,
    TxKind.NODE_JOIN_REQUEST: _decode_join,
}


def decode_payload(kind: TxKind, payload: bytes) -> Payload:
    """The payload of a CMBC transaction of ``kind`` (MEMO: opaque bytes, for benchmarks)."""
    if kind == TxKind.MEMO:
        return payload
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise ValidationError(f"CMBC does not take {kind.name} transactions",
                              code="unsupported_kind")
    return decoder(payload)
