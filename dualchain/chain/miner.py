"""The miner process: block templates from a CMBC daemon, nonce search on worker processes,
solutions back to the daemon.

    dualchain miner --cmbc 127.0.0.1:7100 --workers 2 --key keys/miner-0.key [--duty 0.5]
                    [--reward-account HEX]
                    [--tls-ca tls/ca.pem --tls-cert tls/miner-0.pem --tls-key tls/miner-0.key]

Each block's reward (the genesis's ``pow.block_reward``) credits the key's own identity id, or
``reward_account``: a client that mines does so with a key of its own for its client identity
(``client/mining.py``).

For each template it signs its reward transaction, computes the Merkle root over the reward and
the template's transaction hashes, and hashes the header prefix with nonces from a random start.
Each of ``workers`` processes searches ``chunk`` nonces at a time; when the daemon's tip changes
(a WatchTip stream) the miner raises a flag the workers look at every ``ABORT_CHECK`` nonces,
and drops the stale work at once. The daemon announces a new tip as soon as a block's seal
holds, before its full validation (the event says ``pending``): the miner stops hashing then,
and its next template request waits for that validation. It asks for a fresh template every
``refresh_s`` seconds, so new transactions get into blocks.

``duty`` (0 < duty <= 1) is the share of time the workers hash: after chunks that took t seconds
the miner pauses t * (1 - duty) / duty, and a tip change ends the pause at once. On a small
machine where mining competes with training (seed 004 studies that trade-off) the operator picks
workers and duty to cap the miner's CPU.

The miner prints JSON lines on stdout: ``ready`` once connected, ``block`` per accepted
solution, and ``stopped`` with its totals.

Operations: the miner runs no gRPC server (it only calls its daemon), so it has no health
service; ``metrics_port`` (0: off) serves its Prometheus metrics (prefix ``dualchain_miner_``,
read from its counters at scrape time, plus the process's CPU and memory). SIGTERM or SIGINT stop
it cleanly: it stops taking templates, lets a solution already being submitted finish (at most
``GRACE_S``), shuts its hashing workers down (they ignore SIGINT, so a Ctrl-C to the process group
reaches them only through the miner) and exits with code 0 after its ``stopped`` line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dualchain.chain import heartbeat
from dualchain.chain.consensus.pow import seal_prefix, search_nonce
from dualchain.chain.consensus.reward import Reward
from dualchain.chain.daemon.metrics import ProcessCollector
from dualchain.chain.errors import DualchainError
from dualchain.chain.identity import ID_BYTES, Domain, Signer, load_key_file
from dualchain.chain.lifecycle import stop_on_signals
from dualchain.chain.merkle import merkle_root
from dualchain.chain.rpc import TlsFiles, channel_options, open_channel
from dualchain.chain.types import BlockHeader, Transaction, TxKind
from dualchain.proto.v1 import miner_pb2 as miner_pb
from dualchain.proto.v1 import miner_pb2_grpc as miner_grpc
from dualchain.runtime.lifeline import die_with_parent

log = logging.getLogger("dualchain.miner")

RECONNECT_S = 1.0
GRACE_S = 2.0  # for a solution being submitted when the miner is told to stop


@dataclass(frozen=True)
class MinerConfig:
    cmbc: str  # host:port of the CMBC daemon
    key: Path
    workers: int = 1
    duty: float = 1.0
    chunk: int = 20_000  # nonces per worker call: about 18 ms of hashing on an idle core
    refresh_s: float = 1.0
    backend: str = "cryptography"
    metrics_port: int = 0  # Prometheus endpoint; 0 turns it off
    tls: TlsFiles | None = None  # mutual TLS to the daemon; None: plaintext
    reward_account: bytes = b""  # the identity id block rewards credit; b"": the key's own

    def __post_init__(self) -> None:
        if self.reward_account and len(self.reward_account) != ID_BYTES:
            raise ValueError(f"--reward-account must be {ID_BYTES} bytes (64 hex digits)")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if not 0 < self.duty <= 1:
            raise ValueError("--duty must be in (0, 1]")
        if self.chunk < 1 or self.refresh_s <= 0:
            raise ValueError("chunk and refresh must be positive")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError("--metrics-port must be a port number (0: off)")
        if self.tls is not None:
            for path in (self.tls.ca, self.tls.cert, self.tls.key):
                if not Path(path).is_file():
                    raise ValueError(f"TLS file {path} does not exist")


def parse_account(text: str) -> bytes:
    """``--reward-account``: 64 hex digits, or "" for the miner's own id."""
    try:
        account = bytes.fromhex(text)
    except ValueError:
        raise ValueError("--reward-account must be 64 hex digits") from None
    if account and len(account) != ID_BYTES:
        raise ValueError("--reward-account must be 64 hex digits")
    return account


# Nonces a worker hashes between looks at the abort flag: about 1 ms on an idle core.
ABORT_CHECK = 1024

# In a worker process: set by the miner when its work went stale (see ``_init_worker``).
_abort: Any = None


def _init_worker(abort: Any, miner_pid: int) -> None:
    """Worker process initializer. A Ctrl-C to the process group is for the miner to handle;
    ``abort`` (a multiprocessing Event) tells a chunk in progress that its work is stale; the
    worker dies with the miner, however the miner dies (a parent-death signal)."""
    global _abort
    die_with_parent(miner_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _abort = abort


def _search(prefix: bytes, target: bytes, start: int, count: int) -> tuple[int | None, int]:
    """Worker process: one chunk of nonces, cut short when the miner raises the abort flag (a
    chunk lasts tens of milliseconds on a loaded machine: long enough to find a block that
    competes with one the daemon already announced). Returns (nonce or None, hashes)."""
    end = start + count
    for first in range(start, end, ABORT_CHECK):
        if _abort is not None and _abort.is_set():
            return None, first - start
        last = min(first + ABORT_CHECK, end)
        nonce = search_nonce(prefix, target, first, last - first)
        if nonce is not None:
            return nonce, nonce - start + 1
    return None, count


def _timed_search(prefix: bytes, target: bytes, start: int,
                  count: int) -> tuple[int | None, int, float]:
    """``_search`` and the seconds the worker spent on it, measured in the worker: the time the
    miner waits also holds the hand-off and, for the first call, the worker's start-up."""
    began = time.perf_counter()
    nonce, hashed = _search(prefix, target, start, count)
    return nonce, hashed, time.perf_counter() - began


# The longest duty-cycle pause: a chunk slowed down by a busy machine must not idle the miner
# for many seconds (duty 0.2 rests four times the hashing time).
MAX_PAUSE_S = 1.0


def duty_pause(hashing_s: float, duty: float) -> float:
    """Seconds to rest after ``hashing_s`` of hashing so that hashing takes ``duty`` of the
    time, at most ``MAX_PAUSE_S``."""
    return min(hashing_s * (1 - duty) / duty, MAX_PAUSE_S) if duty < 1 else 0.0


@dataclass
class MinerStats:
    hashes: int = 0
    blocks: int = 0
    stale: int = 0
    templates: int = 0
    hashrate: float = 0.0


class MinerCollector(Collector):
    """The miner's counters as Prometheus metrics, read at scrape time."""

    def __init__(self, stats: MinerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s, p = self._stats, "dualchain_miner"
        yield CounterMetricFamily(f"{p}_hashes", "header hashes computed", value=s.hashes)
        yield CounterMetricFamily(f"{p}_blocks", "solutions the daemon connected",
                                  value=s.blocks)
        yield CounterMetricFamily(f"{p}_stale", "templates dropped because the tip moved",
                                  value=s.stale)
        yield CounterMetricFamily(f"{p}_templates", "block templates received",
                                  value=s.templates)
        yield GaugeMetricFamily(f"{p}_hashrate_hs", "hash rate (H/s, smoothed)",
                                value=s.hashrate)


def serve_metrics(stats: MinerStats, port: int) -> CollectorRegistry:
    """The miner's registry, served over HTTP on ``port`` (a daemon thread; 0: not served)."""
    registry = CollectorRegistry()
    registry.register(MinerCollector(stats))
    registry.register(ProcessCollector("dualchain_process"))
    if port:
        start_http_server(port, registry=registry)
    return registry


class Miner:
    def __init__(self, config: MinerConfig, signer: Signer) -> None:
        self.config = config
        self.signer = signer
        self.stats = MinerStats()
        self.reward_account = config.reward_account or signer.id
        self._tip = b""
        self._tip_changed = asyncio.Event()
        # Spawned workers: forking a process that already runs gRPC threads is unsafe.
        context = multiprocessing.get_context("spawn")
        self._abort = context.Event()
        self._pool = ProcessPoolExecutor(config.workers, mp_context=context,
                                         initializer=_init_worker,
                                         initargs=(self._abort, os.getpid()))
        self._started = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        async with open_channel(self.config.cmbc, self.config.tls, channel_options()) as ch:
            stub = miner_grpc.MinerServiceStub(ch)
            watcher = asyncio.create_task(self._watch(stub))
            announced = False
            beat = None
            try:
                while not stop.is_set():
                    try:
                        template = await stub.GetBlockTemplate(miner_pb.BlockTemplateRequest(
                            miner_public_key=self.signer.public_key,
                            hashrate_hs=self.stats.hashrate,
                            reward_account=self.config.reward_account), timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        log.warning("no template from %s: %s", self.config.cmbc, exc.details())
                        await asyncio.sleep(RECONNECT_S)
                        continue
                    if not announced:
                        print(json.dumps({"event": "ready", "id": self.signer.id.hex(),
                                          "reward_account": self.reward_account.hex(),
                                          "cmbc": self.config.cmbc,
                                          "workers": self.config.workers,
                                          "duty": self.config.duty,
                                          "metrics_port": self.config.metrics_port}),
                              flush=True)
                        announced = True
                        beat = heartbeat.start()
                    self.stats.templates += 1
                    solved = await self._solve(template, stop)
                    if solved is not None:
                        await self._submit(stub, template, *solved)
            finally:
                heartbeat.stop(beat)
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                    await watcher

    async def _watch(self, stub: miner_grpc.MinerServiceStub) -> None:
        while True:
            try:
                async for event in stub.WatchTip(miner_pb.WatchTipRequest()):
                    if event.head_hash != self._tip:
                        self._tip = bytes(event.head_hash)
                        self._tip_changed.set()
                        self._abort.set()
                        log.debug("tip %s at height %d%s", self._tip.hex()[:16], event.height,
                                  " (pending)" if event.pending else "")
            except grpc.aio.AioRpcError:
                await asyncio.sleep(RECONNECT_S)

    def _prepare(self, template: miner_pb.BlockTemplate) -> tuple[BlockHeader, Transaction]:
        reward = Transaction.decode(template.reward_tx)
        if reward.sender != self.signer.id or reward.kind != TxKind.REWARD or \
                Reward.decode(reward.payload).account != self.reward_account:
            raise DualchainError("the template's reward transaction is not for this miner")
        reward = reward.with_signature(self.signer.sign(Domain.TRANSACTION,
                                                        reward.signing_bytes))
        header = BlockHeader(
            chain_id=template.chain_id, height=template.height,
            parent_hash=bytes(template.parent_hash),
            tx_root=merkle_root([reward.hash, *(bytes(h) for h in template.tx_hashes)]),
            timestamp_ms=template.timestamp_ms, proposer=self.signer.id,
            app_hash=bytes(template.app_hash), pow_target=bytes(template.target),
        )
        return header, reward

    async def _solve(self, template: miner_pb.BlockTemplate,
                     stop: asyncio.Event) -> tuple[BlockHeader, Transaction] | None:
        header, reward = self._prepare(template)
        prefix, target = seal_prefix(header), bytes(template.target)
        loop = asyncio.get_running_loop()
        cursor = random.getrandbits(62)
        chunk, workers = self.config.chunk, self.config.workers
        began = time.monotonic()
        while not stop.is_set():
            if self._tip not in (b"", header.parent_hash):
                self.stats.stale += 1
                return None  # the daemon's tip moved (or a new one is being validated)
            self._tip_changed.clear()
            self._abort.clear()
            if time.monotonic() - began > self.config.refresh_s:
                return None  # a fresh template carries the transactions that arrived since
            calls = [loop.run_in_executor(self._pool, _timed_search, prefix, target,
                                          cursor + i * chunk, chunk)
                     for i in range(workers)]
            cursor += workers * chunk
            results = await asyncio.gather(*calls)
            hashed = sum(h for _, h, _ in results)
            self.stats.hashes += hashed
            hashing_s = max(seconds for _, _, seconds in results)
            # The rate over hashing and its pause: what the miner adds to the network.
            rate = hashed / max(hashing_s + duty_pause(hashing_s, self.config.duty), 1e-6)
            self.stats.hashrate = rate if not self.stats.hashrate else \
                0.8 * self.stats.hashrate + 0.2 * rate
            for nonce, _, _ in results:
                if nonce is not None:
                    log.debug("solved height %d on %s", header.height,
                              header.parent_hash.hex()[:16])
                    sealed = replace(header, pow_nonce=nonce)
                    return sealed.with_signature(
                        self.signer.sign(Domain.BLOCK, sealed.signing_bytes)), reward
            await self.rest(duty_pause(hashing_s, self.config.duty))
        return None

    async def rest(self, seconds: float) -> None:
        """The duty-cycle pause; a tip change ends it at once."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tip_changed.wait(), seconds)

    async def _submit(self, stub: miner_grpc.MinerServiceStub,
                      template: miner_pb.BlockTemplate, header: BlockHeader,
                      reward: Transaction) -> None:
        try:
            reply = await stub.SubmitBlock(miner_pb.SubmitBlockRequest(
                template_id=template.template_id, header=header.encoded,
                reward_tx=reward.encoded), timeout=30)
        except grpc.aio.AioRpcError as exc:
            log.warning("solution at height %d refused: %s", header.height, exc.details())
            return
        if reply.outcome == "connected":
            self.stats.blocks += 1
        print(json.dumps({"event": "block", "height": reply.height,
                          "reward_account": self.reward_account.hex(),
                          "hash": bytes(reply.block_hash).hex(), "outcome": reply.outcome,
                          "txs": len(template.tx_hashes) + 1}), flush=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def totals(self) -> dict:
        return {"event": "stopped", "blocks": self.stats.blocks, "stale": self.stats.stale,
                "hashes": self.stats.hashes, "templates": self.stats.templates,
                "hashrate_hs": round(self.stats.hashrate, 1),
                "seconds": round(time.monotonic() - self._started, 1)}


async def _main(config: MinerConfig) -> None:
    stop = stop_on_signals()
    signer = load_key_file(config.key, config.backend)
    miner = Miner(config, signer)
    serve_metrics(miner.stats, config.metrics_port)
    task = asyncio.create_task(miner.run(stop))
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        # run() sees ``stop`` between chunks and after a submit: give it that long to return.
        await asyncio.wait({task}, timeout=GRACE_S)
    finally:
        stopper.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.get_running_loop().run_in_executor(None, miner.close)
    print(json.dumps(miner.totals()), flush=True)


def run(config: MinerConfig, log_level: str = "INFO") -> int:
    logging.basicConfig(level=log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(config))
    return 0
