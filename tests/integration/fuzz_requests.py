"""Bad requests for every gRPC method, built from the proto descriptors (``test_fuzz_rpc``).

``methods()`` lists every method of every service in dualchain's generated modules and the
standard health service, so a method added to a .proto is fuzzed without editing the tests.
``Fuzzer.cases(method)`` gives, per method, seeded request streams of raw bytes: random bytes,
truncated well-formed messages, well-formed messages with random field values (some of them
signed transactions, votes and blob uploads with wrong signatures or wrong chain ids), huge
repeated fields and a message larger than the server accepts. Fields whose name says what
they hold (``genesis_hash``, ``chain_id``) sometimes get the target's real value, so a request
gets past the first check and into the deeper ones.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from types import ModuleType

from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2

from dualchain.chain import wire
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.types import TxKind, Vote, VoteStep
from dualchain.chain.validation import sign_transaction
from dualchain.proto.v1 import chain_pb2, ledger_pb2, miner_pb2, node_pb2, peer_pb2

MODULES: tuple[ModuleType, ...] = (chain_pb2, peer_pb2, miner_pb2, node_pb2, ledger_pb2,
                                   health_pb2)
HUGE_REPEATED = 20_000
HUGE_BYTES = 8 * 1024 * 1024  # a huge repeated field of large messages stops at about this
BIG_FIELD = 2 * 1024 * 1024
_INT_LIMITS = {
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
}


def methods() -> list[MethodDescriptor]:
    """Every method of every service the generated modules define."""
    return [m for module in MODULES for service in module.DESCRIPTOR.services_by_name.values()
            for m in service.methods]


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass(frozen=True)
class Case:
    label: str
    messages: list[bytes]  # one for a unary request, one or more for a request stream


@dataclass
class Target:
    """What a fuzzer may know of the process it talks to."""

    chain_id: str = ""
    genesis_hash: bytes = b""
    max_message: int = 64 * 1024 * 1024
    hints: dict[str, list[object]] = field(default_factory=dict)


class Fuzzer:
    def __init__(self, seed: int, chain_ids: list[str], strangers: list[Signer]) -> None:
        self.rng = random.Random(seed)
        self.chain_ids = chain_ids
        self.strangers = strangers  # keys no chain knows: everything they sign is refused

    # -- values ------------------------------------------------------------------------------

    def _bytes(self) -> bytes:
        r = self.rng
        return r.choice([b"", r.randbytes(32), r.randbytes(r.randint(1, 200)), b"\x00" * 32])

    def _chain_id(self) -> str:
        return self.rng.choice([*self.chain_ids, "", "x" * 300, "other-chain"])

    def bad_transaction(self) -> ledger_pb2.Transaction:
        """A transaction signed by a stranger: for another chain, or with a broken signature."""
        r = self.rng
        signer = r.choice(self.strangers)
        now = time.time_ns() // 1_000_000
        chain = r.choice(self.chain_ids)
        tx = sign_transaction(signer, r.choice([chain, "not-" + chain]), TxKind.MEMO,
                              r.randbytes(16), r.choice([0, 1, 2**40]), now)
        if tx.chain_id == chain:  # right chain: the signature is broken instead
            signature = bytearray(tx.signature)
            signature[r.randrange(len(signature))] ^= 0x40
            tx = tx.with_signature(bytes(signature))
        return wire.tx_to_proto(tx)

    def bad_vote(self) -> bytes:
        """A canonical vote signed by a stranger (not a member of any committee)."""
        signer = self.rng.choice(self.strangers)
        vote = Vote(self.rng.choice(self.chain_ids), self.rng.randint(1, 5), 0,
                    VoteStep.PREVOTE, self.rng.randbytes(32), signer.id)
        return replace(vote, signature=signer.sign(Domain.VOTE, vote.signing_bytes)).encoded

    def _scalar(self, f: FieldDescriptor, target: Target, big: bool) -> object:
        r = self.rng
        hinted = target.hints.get(f.name)
        if hinted and r.random() < 0.5:
            return r.choice(hinted)
        t = f.type
        if t == FieldDescriptor.TYPE_BYTES:
            if big:
                return r.randbytes(BIG_FIELD)
            if f.containing_type.name == "PeerMessage" and r.random() < 0.5:
                return self.bad_vote()
            return self._bytes()
        if t == FieldDescriptor.TYPE_STRING:
            return self._chain_id() if "chain" in f.name else r.choice(
                ["", "127.0.0.1:9", "é" * 40, "a" * r.randint(1, 100)])
        if t in _INT_LIMITS:
            low, high = _INT_LIMITS[t]
            return r.choice([0, 1, high, max(low, -1), r.randint(low, high)])
        if t == FieldDescriptor.TYPE_BOOL:
            return r.random() < 0.5
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return r.choice([0.0, -1.0, 1e308 if t == FieldDescriptor.TYPE_DOUBLE else 1e38,
                             math.nan, math.inf])
        if t == FieldDescriptor.TYPE_ENUM:
            return r.choice(f.enum_type.values).number
        raise AssertionError(f"no fuzz value for field type {t}")

    # -- messages ----------------------------------------------------------------------------

    def message(self, cls: type[Message], target: Target, depth: int = 3,
                huge: bool = False, big: bool = False) -> Message:
        """A message of ``cls`` with random field values; ``huge``: every repeated field gets
        HUGE_REPEATED entries; ``big``: every bytes field is BIG_FIELD long."""
        msg = cls()
        if cls.DESCRIPTOR.full_name == "dualchain.v1.Transaction":
            msg.CopyFrom(self.bad_transaction())
            return msg
        if cls.DESCRIPTOR.full_name == "dualchain.v1.Hello" and target.genesis_hash:
            msg.genesis_hash = target.genesis_hash  # the right genesis: past the handshake
        chosen_oneofs: set[str] = set()
        for f in cls.DESCRIPTOR.fields:
            oneof = f.containing_oneof
            if oneof is not None:
                if oneof.name in chosen_oneofs or self.rng.random() < 0.4:
                    continue
                chosen_oneofs.add(oneof.name)
            elif self.rng.random() < 0.2 and not huge and not big:
                continue  # absent
            if f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
                continue
            repeated = f.is_repeated
            count = (HUGE_REPEATED if huge else self.rng.randint(0, 3)) if repeated else 1
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                if depth == 0:
                    continue
                sub = GetMessageClass(f.message_type)
                values = [self.message(sub, target, depth - 1, big=big)
                          for _ in range(min(count, 8))]
                if repeated and huge and values:
                    size = max(1, values[0].ByteSize())
                    count = min(count, max(1, HUGE_BYTES // size))
                    getattr(msg, f.name).extend(
                        (values * (count // len(values) + 1))[:count])
                elif repeated:
                    getattr(msg, f.name).extend(values)
                elif values:
                    getattr(msg, f.name).CopyFrom(values[0])
            elif repeated:
                one = self._scalar(f, target, big=False)
                getattr(msg, f.name).extend([one] * count)
            else:
                setattr(msg, f.name, self._scalar(f, target, big))
        return msg

    def cases(self, method: MethodDescriptor, target: Target) -> Iterator[Case]:
        """The cases of one method, in the order they are sent (the cheap ones first)."""
        cls = GetMessageClass(method.input_type)
        r = self.rng
        stream = method.client_streaming

        def seq(make) -> list[bytes]:
            return [make() for _ in range(r.randint(1, 3) if stream else 1)]

        yield Case("random bytes", seq(lambda: r.randbytes(r.randint(1, 300))))
        for _ in range(8):
            yield Case("well-formed", seq(lambda: self.message(cls, target).SerializeToString()))
        for _ in range(3):
            def truncated() -> bytes:
                raw = self.message(cls, target).SerializeToString()
                while len(raw) < 2:
                    raw = self.message(cls, target).SerializeToString() + r.randbytes(4)
                return raw[: r.randint(1, len(raw) - 1)]
            yield Case("truncated", seq(truncated))
        yield Case("random bytes", seq(lambda: r.randbytes(r.randint(1, 4000))))
        yield Case("huge repeated", seq(
            lambda: self.message(cls, target, huge=True).SerializeToString()))
        yield Case("big fields", [self.message(cls, target, big=True).SerializeToString()])


def over_the_limit(target: Target) -> Case:
    """A message larger than the server takes (gRPC refuses it before any handler)."""
    return Case("over the size limit", [b"\x0a" + bytes(target.max_message + 1024)])
