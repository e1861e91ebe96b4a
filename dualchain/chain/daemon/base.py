"""What every chain daemon does alike, whatever orders its blocks: transaction admission and
gossip, the store and CPU threads, peer links and waiting for the chain to grow.

``CtbcNode`` (committee consensus) and ``CmbcNode`` (proof of work) build on it. Work that would
hold up the event loop runs elsewhere: signature batches on the verifier's thread pool, block
validation on a CPU thread, and every block store call on the store's own thread (SQLite
connections are used from one thread at a time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from dualchain.chain.app import Application
from dualchain.chain.app_context import AppContext, AppFactory
from dualchain.chain.clock import now_ms
from dualchain.chain.daemon.config import DaemonConfig
from dualchain.chain.daemon.metrics import ChainMetrics
from dualchain.chain.daemon.peers import PeerLink
from dualchain.chain.errors import DualchainError, MempoolError, SignatureError, ValidationError
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import Signer
from dualchain.chain.mempool import Mempool, MempoolConfig
from dualchain.chain.rpc import message_limit
from dualchain.chain.store import BlockStore
from dualchain.chain.types import BlockHeader, Transaction
from dualchain.chain.validation import check_timestamp, check_transaction_shape, tx_verify_request
from dualchain.chain.verifier import SignatureVerifier
from dualchain.proto.v1 import peer_pb2 as peer_pb

T = TypeVar("T")

GOSSIP_FLUSH_S = 0.02
# Gossiped transactions waiting for their signature checks, at most. Bounded in transactions,
# not in gossip messages (a message may carry one transaction or thousands): 8,192 of 4 kB is
# 32 MB, and under overload the transactions reach us in blocks anyway.
ADMISSION_BACKLOG_TXS = 8192
# A worker checks whatever has queued up since its last batch in one go (up to this many):
# one thread-pool hand-off per gossip message cost more than the checks of a small one.
ADMISSION_BATCH_TXS = 1024
ADMISSION_WORKERS = 2
# How often the admission control looks for the oldest executable pending transaction (the
# scan is O(senders)); a refusal is at most this stale.
BUSY_CHECK_S = 0.05
# Admission control acts on a backlog, not on a stall: while a height stalls (a view change, a
# restarted leader) the few pending transactions of an FL testbed wait too, but refusing its
# model commits and state reports would only add retries.
BUSY_MIN_PENDING = 1024


@dataclass(frozen=True)
class TxOutcome:
    tx_hash: bytes
    error: DualchainError | None = None


class ChainNodeBase:
    kind = ""
    # Admission control's default (``max_pending_wait_ms`` in the config): 0 is off.
    default_max_pending_wait_ms = 0

    # The application interface this kind of daemon drives (checked on the factory's result).
    app_type: type[Application] = Application

    def __init__(self, config: DaemonConfig, genesis: Genesis, signer: Signer,
                 make_app: AppFactory) -> None:
        self.config = config
        self.genesis = genesis
        self.signer = signer
        self.params = genesis.ledger_params()
        self.chain_id = genesis.chain_id
        self.max_message = message_limit(self.params.max_block_bytes)
        self.verifier = SignatureVerifier(config.backend)
        app = make_app(AppContext(genesis, self.verifier, config.data_dir))
        if not isinstance(app, self.app_type):
            self.verifier.close()
            raise TypeError(f"a {self.kind} daemon runs a {self.app_type.__name__}, the factory "
                            f"gave a {type(app).__name__}")
        self.app = app
        self.mempool = Mempool(self._mempool_config())
        self.metrics = ChainMetrics(self.kind)
        self.metrics.watch_verifier(self.verifier)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = BlockStore(config.data_dir / "chain.sqlite")
        self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._cpu = ThreadPoolExecutor(2, thread_name_prefix="cpu")
        self._head: BlockHeader = genesis.genesis_block().header
        self._nonces: dict[bytes, int] = {}
        self._admitted_at: dict[bytes, float] = {}
        self._gossip_buffer: list[bytes] = []
        self._gossip_ready = asyncio.Event()
        self._admission: asyncio.Queue[list[Transaction]] = asyncio.Queue()
        self._admission_txs = 0  # transactions in _admission
        self._grown = asyncio.Condition()
        self.head_version = 0  # counts head changes, so a waiter cannot miss one
        self._tasks: list[asyncio.Task[Any]] = []
        wait_ms = config.max_pending_wait_ms
        self._max_pending_wait_ms = (self.default_max_pending_wait_ms if wait_ms is None
                                     else wait_ms)
        self._busy: tuple[float, str | None] = (0.0, None)  # (checked at, reason)
        self.links = [PeerLink(a, self.hello, self.max_message, config.tls)
                      for a in config.peers]

    def _mempool_config(self) -> MempoolConfig:
        return MempoolConfig()

    # -- helpers ---------------------------------------------------------------------------------

    async def in_store(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a block store call on the store's own thread (the servicers read through it)."""
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, fn, *args)

    async def _on_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    @property
    def height(self) -> int:
        return self._head.height

    @property
    def final_height(self) -> int:
        """The highest block that is never taken back."""
        return self.height

    def hello(self) -> peer_pb.Hello:
        return peer_pb.Hello(genesis_hash=self.genesis.hash, node_id=self.signer.id,
                             height=self.height, address=self.config.listen)

    def _before_add(self, tx: Transaction) -> None:
        """Called for an admissible transaction just before the mempool takes it."""

    def dropped(self, tx_hash: bytes) -> tuple[str, str] | None:
        """(code, reason) if this node took the transaction out of its mempool unmined."""
        return None

    def next_nonce(self, sender: bytes) -> int:
        """The sender's next nonce on the canonical chain (callers load it first)."""
        return self._nonces[sender]

    async def load_nonces(self, senders: Iterable[bytes]) -> None:
        missing = {s for s in senders if s not in self._nonces}
        if missing:
            found = await self.in_store(lambda: {s: self.store.next_nonce(s) for s in missing})
            for sender, nonce in found.items():
                self._nonces.setdefault(sender, nonce)

    async def _open_store(self) -> None:
        """Writes block 0 on first start; refuses a store that holds another chain."""
        genesis_block = self.genesis.genesis_block()
        stored = await self.in_store(self.store.canonical_hash, 0)
        if stored is None:
            await self.in_store(self.store.append, genesis_block)
        elif stored != genesis_block.hash:
            raise ValidationError(
                f"the store in {self.config.data_dir} holds another chain (genesis "
                f"{stored.hex()[:16]}, this genesis file gives {genesis_block.hash.hex()[:16]})",
                code="wrong_genesis",
            )

    def _start_common(self) -> None:
        self.metrics.serve(self.config.metrics_port)
        for link in self.links:
            link.start()
        self._tasks += [
            asyncio.create_task(self._gossip_flusher(), name="gossip"),
            *(asyncio.create_task(self._admission_worker(), name=f"admission-{i}")
              for i in range(ADMISSION_WORKERS)),
        ]

    async def close_links(self) -> None:
        for link in self.links:
            await link.close()

    async def stop(self) -> None:
        """Stops the node's tasks and closes the store; also after a start that did not finish.

        A store write already handed to the store thread completes first (cancelling the task
        that awaits it does not stop the thread), and the close runs after it on that thread,
        so the store is left consistent and its WAL checkpointed.
        """
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.close_links()
        await self.in_store(self.store.close)
        self._store_thread.shutdown()
        self._cpu.shutdown()
        self.verifier.close()

    # -- transactions ----------------------------------------------------------------------------

    async def submit(self, txs: Sequence[Transaction], gossip: bool = True) -> list[TxOutcome]:
        """Admission of transactions from a client (gossiped on) or a peer (not gossiped)."""
        outcomes: list[TxOutcome | None] = [None] * len(txs)
        checked: list[int] = []
        now = now_ms()
        await self.load_nonces(tx.sender for tx in txs)
        # Only a client's transactions are turned away: a peer's were admitted there, and would
        # reach us in its blocks anyway.
        busy = self.busy_reason(now) if gossip else None
        for i, tx in enumerate(txs):
            try:
                check_transaction_shape(tx, self.params)
                check_timestamp(tx.timestamp_ms, now, self.params, "transaction")
                # Cheap refusals before the expensive signature check: under load many gossiped
                # transactions arrive after their block (or after the client's own copy).
                if tx.hash in self.mempool:
                    raise MempoolError("transaction is already pending", code="duplicate")
                if tx.nonce < self.next_nonce(tx.sender):
                    raise MempoolError(
                        f"nonce {tx.nonce} is below the sender's next nonce "
                        f"{self.next_nonce(tx.sender)}", code="stale_nonce")
                gap = self.mempool.config.max_nonce_gap
                if tx.nonce > self.next_nonce(tx.sender) + gap:  # what the mempool would say
                    raise MempoolError(
                        f"nonce {tx.nonce} is more than {gap} above the sender's next nonce "
                        f"{self.next_nonce(tx.sender)} (GetNonce tells the window)",
                        code="nonce_gap")
                if busy is not None:
                    raise MempoolError(busy, code="busy")
            except DualchainError as exc:
                outcomes[i] = TxOutcome(tx.hash, exc)
            else:
                checked.append(i)
        started = time.perf_counter()
        results = await self.verifier.verify_batch_async(
            [tx_verify_request(txs[i], self.params) for i in checked], background=True)
        self.metrics.verify_seconds.observe(time.perf_counter() - started)
        accepted: list[bytes] = []
        for i, ok in zip(checked, results, strict=True):
            tx = txs[i]
            try:
                if not ok:
                    raise SignatureError("transaction signature does not verify")
                self.app.check_tx(tx)
                self._before_add(tx)
                self.mempool.add(tx, self.next_nonce(tx.sender), now)
            except DualchainError as exc:
                outcomes[i] = TxOutcome(tx.hash, exc)
                continue
            outcomes[i] = TxOutcome(tx.hash)
            self._admitted_at[tx.hash] = time.monotonic()
            accepted.append(tx.encoded)
        for outcome in outcomes:
            if outcome is not None and outcome.error is not None:
                self.metrics.rejected.labels(outcome.error.code).inc()
        if gossip and accepted:
            self._gossip_buffer.extend(accepted)
            self._gossip_ready.set()
        if accepted:
            self._on_admitted()
        self.metrics.mempool_size.set(len(self.mempool))
        return [o for o in outcomes if o is not None]

    def _on_admitted(self) -> None:
        """Transactions were added to the mempool (CTBC wakes a height waiting for work)."""

    def busy_reason(self, now: int | None = None) -> str | None:
        """Why new client transactions are refused now, or None (admission control).

        When the chain commits less than it is offered, the executable backlog grows, and every
        transaction admitted costs every replica a signature check and waits ever longer. So
        while the oldest executable pending transaction has waited more than the limit (and at
        least BUSY_MIN_PENDING are pending), client transactions are refused before their
        signature is checked (code "busy", retryable): throughput levels off at what the chain
        can commit and latency stays bounded, instead of both degrading as the backlog grows.
        """
        if self._max_pending_wait_ms <= 0 or len(self.mempool) < BUSY_MIN_PENDING:
            return None
        checked_at, reason = self._busy
        if time.monotonic() - checked_at < BUSY_CHECK_S:
            return reason
        oldest = self.mempool.oldest_executable_ms(self.next_nonce)
        waited = (now_ms() if now is None else now) - oldest if oldest is not None else 0
        reason = (f"the oldest pending transaction has waited {waited} ms, above the "
                  f"limit of {self._max_pending_wait_ms} ms; retry later"
                  if waited > self._max_pending_wait_ms else None)
        self._busy = (time.monotonic(), reason)
        return reason

    async def _gossip_flusher(self) -> None:
        """Sends admitted client transactions to every peer in batches (full mesh: no relaying).

        A flush sends one message per peer, and every replica flushes: N * (N - 1) messages a
        period. The period grows with the peers so that 16 replicas fed small client batches
        do not spend their CPU on gossip messages (every 20 ms with 3 peers, 100 ms with 15).
        """
        period = GOSSIP_FLUSH_S * max(1.0, len(self.links) / 3)
        while True:
            await self._gossip_ready.wait()  # an idle replica does not wake every period
            await asyncio.sleep(period)
            self._gossip_ready.clear()
            batch, self._gossip_buffer = self._gossip_buffer, []
            self.broadcast(peer_pb.PeerMessage(txs=peer_pb.TxBatch(txs=batch)))

    def broadcast(self, message: peer_pb.PeerMessage) -> None:
        for link in self.links:
            link.send(message)

    def on_peer_txs(self, batch: Sequence[bytes]) -> None:
        """Queues gossiped transactions for admission and returns at once.

        The gossip stream also carries consensus messages or blocks: checking a batch of
        signatures inline would hold them up behind it (head-of-line blocking).
        """
        txs = [Transaction.decode(raw) for raw in batch]
        if self._admission_txs + len(txs) > ADMISSION_BACKLOG_TXS:
            self.metrics.rejected.labels("admission_backlog").inc(len(txs))
            return
        self._admission_txs += len(txs)
        self._admission.put_nowait(txs)

    async def _admission_worker(self) -> None:
        while True:
            txs = await self._admission.get()
            while not self._admission.empty() and len(txs) < ADMISSION_BATCH_TXS:
                txs += self._admission.get_nowait()
            self._admission_txs -= len(txs)
            await self.submit(txs, gossip=False)

    def sent_block_transactions(self, block_hash: bytes) -> Mapping[bytes, Transaction]:
        """The transactions of a block this replica sent by hash (a CMBC announcement, a CTBC
        proposal), by hash; empty if it sent no such block."""
        return {}

    def block_transactions(self, block_hash: bytes, hashes: Sequence[bytes]
                           ) -> list[Transaction]:
        """Transactions a peer lacks to rebuild a block we sent by hash, from that block or the
        mempool (GetBlockTransactions); unknown ones are left out."""
        known = self.sent_block_transactions(block_hash)
        out = []
        for h in hashes:
            tx = known.get(h) or self.mempool.get(h)
            if tx is not None:
                out.append(tx)
        return out

    # -- chain growth ----------------------------------------------------------------------------

    def _observe_committed(self, txs: Sequence[Transaction]) -> None:
        """Commit latency of the transactions this replica admitted itself."""
        now = time.monotonic()
        for tx in txs:
            admitted = self._admitted_at.pop(tx.hash, None)
            if admitted is not None:
                self.metrics.commit_latency.observe(now - admitted)
        if len(self._admitted_at) > len(self.mempool):  # evicted or expired meanwhile
            self._admitted_at = {h: t for h, t in self._admitted_at.items() if h in self.mempool}

    def _notify_grown(self) -> None:
        self.head_version += 1

        async def notify() -> None:
            async with self._grown:
                self._grown.notify_all()

        self._tasks.append(asyncio.create_task(notify()))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def wait_for_change(self, seen_version: int) -> None:
        """Returns once the head changed after ``head_version`` was ``seen_version``."""
        async with self._grown:
            await self._grown.wait_for(lambda: self.head_version != seen_version)
