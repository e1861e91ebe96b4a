"""The load generator of `dualchain bench consensus`: its own process, driven over stdin/stdout.

1. It signs every transaction before the measurement (on all cores, in worker processes),
   then prints ``{"event": "signed", ...}`` and waits for a line ``go`` on stdin.
2. It submits them in batches (SubmitTxs) at the offered rate, each sender always to the same
   replica so that its nonces arrive in order, and records the submit time of every batch.
3. It prints ``{"event": "done", ...}`` with counts, having written the submit times (tx hash,
   Unix time) to the file named on the command line.

With ``etcd`` set the targets are etcd members (the Raft baseline): each batch is one
``/v3/kv/txn`` of puts through etcd's HTTP/JSON gateway (key: the transaction's hash, value: its
encoded bytes, so the same bytes per write as the chain gets), sent from a thread per target;
a reply means the batch is committed by Raft, and its time goes to ``TIMES_FILE.commit``.

Run by the benchmark as ``python -m dualchain.bench.loadgen SPEC_JSON``.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import multiprocessing
import os
import struct
import sys
import time
from dataclasses import dataclass

import grpc

from dualchain.chain import wire
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.rpc import channel_options
from dualchain.chain.types import Transaction, TxKind
from dualchain.chain.validation import sign_transaction
from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc
from dualchain.runtime.lifeline import die_with_parent, watch_parent

PAYLOAD_BYTES = 256
RECORD = struct.Struct(">32sd")
RETRYABLE = frozenset({"full", "sender_full", "nonce_gap", "busy"})  # a client tries again
RETRY_STATUSES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
                            grpc.StatusCode.DEADLINE_EXCEEDED})
# A replica that turned a batch away as busy is asked again after a back-off that doubles up
# to the maximum while it stays busy (its other clients keep it busy too).
BUSY_BACKOFF_S = 0.1
BUSY_BACKOFF_MAX_S = 2.0
# Each target gets a request at least this often: a batch is smaller than asked for when its
# target's share of the rate is low (16 replicas at 150 tx/s would otherwise get 256
# transactions each at once, then nothing for half a minute).
BATCH_PERIOD_S = 0.1


def effective_batch(batch: int, rate: float, targets: int) -> int:
    """Transactions per request: ``batch`` at most, and at most BATCH_PERIOD_S of one target's
    share of the offered rate."""
    return max(1, min(batch, int(rate / targets * BATCH_PERIOD_S)))


@dataclass(frozen=True)
class LoadSpec:
    chain_id: str
    algorithm: str
    targets: list[str]
    txs: int
    senders: int
    rate: float  # offered transactions per second, over all targets
    batch: int
    times_file: str
    timestamp_ms: int
    kind: int = int(TxKind.MEMO)
    rpc_timeout_s: float = 60.0
    etcd: bool = False  # the targets are etcd members (the Raft baseline)


def _sender_seed(index: int) -> bytes:
    return b"loadgen-sender-" + index.to_bytes(17, "big")


def _sign_slice(args: tuple[str, str, int, int, int, int, int]) -> list[bytes]:
    """Signs the transactions of senders [first, last) in a worker process."""
    chain_id, algorithm, first, last, per_sender, timestamp_ms, kind = args
    alg = Algorithm.parse(algorithm)
    out: list[bytes] = []
    for index in range(first, last):
        signer = Signer(_sender_seed(index), alg)
        for nonce in range(per_sender):
            payload = (index.to_bytes(4, "big") + nonce.to_bytes(4, "big")).ljust(
                PAYLOAD_BYTES, b"\x00")
            tx = sign_transaction(signer, chain_id, TxKind(kind), payload, nonce, timestamp_ms)
            out.append(tx.encoded)
    return out


def presign(spec: LoadSpec) -> list[list[Transaction]]:
    """Per sender, its transactions in nonce order."""
    per_sender = -(-spec.txs // spec.senders)
    workers = max(1, multiprocessing.cpu_count())
    bounds = [spec.senders * i // workers for i in range(workers + 1)]
    jobs = [(spec.chain_id, spec.algorithm, bounds[i], bounds[i + 1], per_sender,
             spec.timestamp_ms, spec.kind) for i in range(workers) if bounds[i] < bounds[i + 1]]
    with multiprocessing.get_context("spawn").Pool(
            len(jobs), initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        slices = pool.map(_sign_slice, jobs)
    flat = [Transaction.decode(raw) for chunk in slices for raw in chunk]
    return [flat[i * per_sender : (i + 1) * per_sender] for i in range(spec.senders)]


class _EtcdTarget:
    """One etcd member, written through its HTTP/JSON gateway in a thread (keep-alive)."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self._connection = http.client.HTTPConnection(host, int(port), timeout=60)

    def put_all(self, txs: list[Transaction]) -> None:
        body = json.dumps({"success": [
            {"requestPut": {"key": base64.b64encode(tx.hash).decode(),
                            "value": base64.b64encode(tx.encoded).decode()}} for tx in txs]})
        self._connection.request("POST", "/v3/kv/txn", body,
                                 {"Content-Type": "application/json"})
        reply = self._connection.getresponse()
        text = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"etcd txn: HTTP {reply.status}: {text[:200]!r}")


async def _drive_etcd(spec: LoadSpec, streams: list[list[Transaction]]) -> dict:
    """The etcd baseline: the same pacing and batches, each batch one Raft-committed txn."""
    per_target_rate = spec.rate / len(spec.targets)
    batch_size = effective_batch(spec.batch, spec.rate, len(spec.targets))
    times = open(spec.times_file, "ab")  # noqa: SIM115 - closed at the end of the run
    commits = open(spec.times_file + ".commit", "ab")  # noqa: SIM115
    counts = {"submitted": 0, "accepted": 0}

    async def feed(target: _EtcdTarget, stream: list[Transaction]) -> None:
        start = time.monotonic()
        for position in range(0, len(stream), batch_size):
            delay = start + position / per_target_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            batch = stream[position : position + batch_size]
            submitted_at = time.time()
            await asyncio.to_thread(target.put_all, batch)
            committed_at = time.time()
            times.write(b"".join(RECORD.pack(tx.hash, submitted_at) for tx in batch))
            commits.write(b"".join(RECORD.pack(tx.hash, committed_at) for tx in batch))
            counts["submitted"] += len(batch)
            counts["accepted"] += len(batch)

    started = time.time()
    await asyncio.gather(*(feed(_EtcdTarget(t), s)
                           for t, s in zip(spec.targets, streams, strict=True)))
    times.close()
    commits.close()
    return {**counts, "submit_seconds": round(time.time() - started, 3)}


async def _drive(spec: LoadSpec, batches: list[list[tuple]]) -> dict:
    """Submits every target's stream concurrently; returns the counts."""
    options = channel_options()
    channels = [grpc.aio.insecure_channel(t, options=options) for t in spec.targets]
    stubs = [chain_pb2_grpc.ChainServiceStub(c) for c in channels]
    # Submit times go to the file as they happen: the benchmark may stop us at any moment.
    times = open(spec.times_file, "ab")  # noqa: SIM115 - closed at the end of the run
    counts = {"submitted": 0, "accepted": 0, "refused": 0, "retried": 0}
    refusals: dict[str, int] = {}
    per_target_rate = spec.rate / len(spec.targets)
    batch_size = effective_batch(spec.batch, spec.rate, len(spec.targets))

    async def feed(stub: chain_pb2_grpc.ChainServiceStub, stream: list[tuple]) -> None:
        """Sends one target's transactions in order at its share of the offered rate.

        Like a real client, it retries what the replica refused for lack of room ("full") or
        under admission control ("busy", after a short back-off):
        those go first in the next batch, so a sender's nonces never get a permanent gap and an
        overloaded chain sees back-pressure instead of an ever-growing backlog of stuck nonces.
        One request per target is outstanding at a time.
        """
        start = time.monotonic()
        sent = 0
        position = 0
        retry: list[tuple] = []
        backoff = BUSY_BACKOFF_S
        while position < len(stream) or retry:
            due = start + sent / per_target_rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            take = batch_size - len(retry)
            batch, retry = [*retry, *stream[position : position + take]], []
            position += take
            request = chain_pb2.SubmitTxsRequest(txs=[proto for _, proto in batch])
            submitted_at = time.time()
            try:
                reply = await stub.SubmitTxs(request, timeout=spec.rpc_timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRY_STATUSES:
                    raise
                # The replica is busy and turned the whole batch away, or is down (a fault
                # test kills it): again after a pause. What it admitted before it died without
                # answering is not acknowledged (not recorded), and comes back refused as a
                # duplicate or a used nonce.
                counts["retried"] += len(batch)
                retry = batch
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, BUSY_BACKOFF_MAX_S)
                continue
            records = []
            for (tx, proto), result in zip(batch, reply.results, strict=True):
                counts["submitted"] += 1
                if result.accepted:
                    counts["accepted"] += 1
                    records.append(RECORD.pack(tx.hash, submitted_at))
                elif result.code in RETRYABLE:
                    counts["retried"] += 1
                    retry.append((tx, proto))
                else:
                    counts["refused"] += 1
                    refusals[result.code] = refusals.get(result.code, 0) + 1
            times.write(b"".join(records))
            times.flush()
            sent += len(batch) - len(retry)
            if any(result.code == "busy" for result in reply.results):
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, BUSY_BACKOFF_MAX_S)
            else:
                backoff = BUSY_BACKOFF_S

    started = time.time()
    await asyncio.gather(*(feed(stub, b) for stub, b in zip(stubs, batches, strict=True)))
    elapsed = time.time() - started
    for channel in channels:
        await channel.close()
    times.close()
    return {**counts, "refusals": refusals, "submit_seconds": round(elapsed, 3)}


def main() -> int:
    watch_parent()  # started by a supervisor: stop when the benchmark dies
    spec = LoadSpec(**json.loads(sys.argv[1]))
    by_sender = presign(spec)
    streams: list[list[Transaction]] = [[] for _ in spec.targets]
    longest = max(len(txs) for txs in by_sender)
    for nonce in range(longest):
        for index, txs in enumerate(by_sender):
            if nonce < len(txs):
                streams[index % len(spec.targets)].append(txs[nonce])
    # Requests are built before the measurement so that the generator spends its time sending.
    batches = [] if spec.etcd else [[(tx, wire.tx_to_proto(tx)) for tx in stream]
                                    for stream in streams]
    print(json.dumps({"event": "signed", "txs": sum(len(s) for s in streams)}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    result = asyncio.run(_drive_etcd(spec, streams) if spec.etcd else _drive(spec, batches))
    print(json.dumps({"event": "done", **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
