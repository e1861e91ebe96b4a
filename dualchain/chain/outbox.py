"""A sender's CMBC records, signed, submitted and followed until they are final.

A CMBC block takes a sender's transactions in nonce order. When the chain state refuses one of
them for good, the daemon drops it from its mempool together with every later one of the same
sender (``chain/daemon/stuck.py``) and keeps why for ``GetTxStatus``. ``follow_up`` asks for the
status of every record not final yet:

- dropped because an earlier record was dropped (code ``earlier_dropped``), or unknown to the
  daemon (restarted: its mempool is gone): signed again with the nonce ``GetNonce`` gives now,
  which starts from the sender's committed nonce once its dropped transactions are gone;
- dropped for its own sake: given up, and returned to the caller with the code and reason;
- final: forgotten.

Used by the server node (anchors, admissions, group assignments, task plans) and the client
(registration, state reports).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from dualchain.chain import wire
from dualchain.chain.clock import now_ms
from dualchain.chain.identity import Signer
from dualchain.chain.senders import admissible_nonce
from dualchain.chain.types import TxKind
from dualchain.chain.validation import sign_transaction
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc

log = logging.getLogger(__name__)

RESIGN_CODE = "earlier_dropped"  # chain/daemon/stuck.py FOLLOWS_CODE
NONCE_RACE = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS)
STATUS_BATCH = 256  # GetTxStatus takes at most this many hashes
OUTSTANDING_MAX = 1024  # records followed at most; the oldest is forgotten beyond


@dataclass(frozen=True)
class Record:
    kind: TxKind
    payload: bytes
    nonce: int


@dataclass(frozen=True)
class Refused:
    """A record the chain state refused for good."""

    kind: TxKind
    payload: bytes
    tx_hash: bytes
    code: str
    reason: str


class Outbox:
    def __init__(self, stub: chain_grpc.ChainServiceStub, signer: Signer, chain_id: str,
                 timeout_s: float = 10.0, attempts: int = 3) -> None:
        self._stub = stub
        self._signer = signer
        self._chain_id = chain_id
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._records: dict[bytes, Record] = {}  # by tx hash, in submission order
        self._lock = asyncio.Lock()  # a follow-up and a submission never interleave

    def __len__(self) -> int:
        return len(self._records)

    async def submit(self, kind: TxKind, payload: bytes) -> bytes:
        """Signs with the nonce GetNonce gives (once the mempool would admit it,
        ``chain.senders``) and submits; returns the tx hash. A nonce race
        (another submission of this sender took the nonce) is retried with a fresh one; other
        refusals raise ``grpc.aio.AioRpcError``."""
        async with self._lock:
            return await self._submit(kind, payload)

    async def _submit(self, kind: TxKind, payload: bytes) -> bytes:
        for attempt in range(self._attempts):
            try:
                nonce = await admissible_nonce(self._stub, self._signer.id, self._timeout_s)
                tx = sign_transaction(self._signer, self._chain_id, kind, payload, nonce,
                                      now_ms())
                await self._stub.SubmitTx(chain_pb.SubmitTxRequest(tx=wire.tx_to_proto(tx)),
                                          timeout=self._timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in NONCE_RACE and attempt + 1 < self._attempts:
                    continue
                raise
            self._records[tx.hash] = Record(kind, payload, tx.nonce)
            while len(self._records) > OUTSTANDING_MAX:
                del self._records[next(iter(self._records))]
            return tx.hash
        raise AssertionError("unreachable")

    async def follow_up(self) -> list[Refused]:
        """Asks for the status of every record not final yet; signs again those dropped behind
        a refused one (or lost by the daemon), in their nonce order; returns the refused ones.
        Raises ``grpc.aio.AioRpcError`` when the daemon cannot be asked (try again later)."""
        async with self._lock:
            hashes = list(self._records)
            statuses: list[chain_pb.TxStatus] = []
            for i in range(0, len(hashes), STATUS_BATCH):
                reply = await self._stub.GetTxStatus(
                    chain_pb.GetTxStatusRequest(tx_hashes=hashes[i : i + STATUS_BATCH]),
                    timeout=self._timeout_s)
                statuses += reply.statuses
            refused: list[Refused] = []
            again: list[tuple[bytes, Record]] = []
            for tx_hash, status in zip(hashes, statuses, strict=True):
                state = status.state
                if state == chain_pb.TX_STATE_PENDING or (
                        state == chain_pb.TX_STATE_COMMITTED and not status.final):
                    continue
                record = self._records.pop(tx_hash)
                if state == chain_pb.TX_STATE_DROPPED and status.code != RESIGN_CODE:
                    refused.append(Refused(record.kind, record.payload, tx_hash, status.code,
                                           status.reason))
                    log.warning("%s record %s refused by the chain: %s (%s)", record.kind.name,
                                tx_hash.hex()[:16], status.reason, status.code)
                elif state in (chain_pb.TX_STATE_DROPPED, chain_pb.TX_STATE_UNKNOWN):
                    again.append((tx_hash, record))
            for tx_hash, record in sorted(again, key=lambda item: item[1].nonce):
                try:
                    new_hash = await self._submit(record.kind, record.payload)
                except grpc.aio.AioRpcError as exc:
                    self._records[tx_hash] = record  # asked about again next time
                    log.info("%s record not signed again yet: %s %s", record.kind.name,
                             exc.code().name, exc.details())
                    continue
                log.info("%s record %s (nonce %d) signed again as %s", record.kind.name,
                         tx_hash.hex()[:16], record.nonce, new_hash.hex()[:16])
            return refused

    async def run(self, period_s: float) -> None:
        """``follow_up`` every ``period_s`` while there are records to follow, for good."""
        while True:
            await asyncio.sleep(period_s)
            if not self._records:
                continue
            try:
                await self.follow_up()
            except grpc.aio.AioRpcError as exc:
                log.info("follow-up of %d records: %s %s", len(self._records),
                         exc.code().name, exc.details())
