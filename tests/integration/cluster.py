"""A local CTBC cluster of real chain daemon processes on loopback, for integration tests.

    cluster = Cluster(tmp_path, nodes=4, consensus=FAST)   # writes the testnet, starts every node
    try:
        await cluster.wait_height(0, 5, timeout=20)
        cluster.kill(1)                                     # SIGKILL, that PID only
        cluster.start(1)                                    # same config, same data dir
    finally:
        await cluster.aclose()                              # kills whatever is still running

Each node is ``dualchain chain --kind ctbc --config node-I.json`` in its own process, started
by the project's process supervisor (``dualchain.runtime``): stdout is read for its JSON event
lines (the daemon prints a ``ready`` line once it serves), stderr goes to ``logs/node-I.log``
(``log_tail`` reads it back for failure reports). Waiting for readiness waits for those lines
under a deadline; waiting for a height awaits the node's SubscribeBlocks stream. Nothing here
polls with sleeps.

Every process the harness starts is killed (SIGKILL of its process group, by id) by
``close``/``aclose``, and dies with the test process whatever ends it (its lifeline).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import grpc
import psutil

from dualchain.chain import wire
from dualchain.chain.genesis import ConsensusParams, Genesis
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.rpc import channel_options
from dualchain.chain.types import Block, Transaction, TxKind, VoteStep
from dualchain.chain.validation import sign_transaction
from dualchain.deploy.processes import free_ports
from dualchain.deploy.testnet import TestnetPlan, make_testnet
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from dualchain.proto.v1 import peer_pb2_grpc as peer_grpc
from dualchain.runtime.supervisor import Child, Supervisor, SupervisorError

# Fast timing for tests: a leader waits 100 ms before proposing; a missing leader costs one
# second (propose timeout) plus 300 ms more in each further round. An idle chain still makes an
# empty block after 100 ms of waiting: most tests follow heights, not transactions
# (test_ctbc_idle runs without empty blocks).
FAST = ConsensusParams(
    timeout_propose_ms=1000,
    timeout_prevote_ms=400,
    timeout_precommit_ms=400,
    timeout_delta_ms=300,
    block_interval_ms=100,
    empty_blocks_interval_ms=100,
)
ALGORITHM = Algorithm.ML_DSA_44
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
RPC_TIMEOUT_S = 10.0



def spawn_cli(supervisor: Supervisor, name: str, args: Sequence[str], log_path: Path,
              cwd: Path) -> Child:
    """Starts ``python -m dualchain.cli ARGS`` under ``supervisor`` with stderr appended
    to ``log_path`` (after a marker line: restarts share the log)."""
    with log_path.open("ab") as log:
        log.write(f"--- start {time.strftime('%H:%M:%S')} ---\n".encode())
    return supervisor.spawn(name, [sys.executable, "-m", "dualchain.cli", *args],
                            cwd=cwd, log=log_path)


def kill_tree(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGKILL ``proc`` (a process a test started itself, not through the supervisor) and every
    process it started (a miner's hashing workers), each by its PID, and reap ``proc``.
    Children are listed first: once their parent is gone they are re-parented and could not be
    found from it any more."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    psutil.wait_procs(children, timeout=timeout)
    reap(proc)


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Closes the stdout pipe of an exited process a test started itself."""
    if proc.stdout is not None and not proc.stdout.closed:
        proc.stdout.close()


class ClusterError(AssertionError):
    """The cluster did not do what a test waited for; the message carries the node log tails."""


class Cluster:
    """Writes a testnet under ``directory`` and runs each of its nodes as a subprocess."""

    instances: ClassVar[list[Cluster]] = []  # live clusters, for failure reports (see conftest.py)
    kind = "ctbc"  # the daemons' --kind; a subclass for CMBC writes its own testnet

    def __init__(
        self,
        directory: Path,
        nodes: int = 4,
        byzantine: dict[int, str] | None = None,
        consensus: ConsensusParams = FAST,
        chain_id: str = "ctbc-it",
        start: bool = True,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.directory = Path(directory)
        self.nodes = nodes
        self.chain_id = chain_id
        self.ports = free_ports(nodes)
        self.addresses = [f"127.0.0.1:{port}" for port in self.ports]
        self.configs = self._write_testnet(consensus, byzantine or {})
        self.genesis = Genesis.load(self.directory / "genesis.json")
        self.ids: list[bytes] = self._node_ids()
        self.logs_dir = self.directory / "logs"
        self.logs_dir.mkdir(exist_ok=True)
        self.supervisor = Supervisor()
        self.children: list[Child | None] = [None] * nodes
        self.ready: list[dict[str, Any] | None] = [None] * nodes
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._stale: list[grpc.aio.Channel] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready_timeout = ready_timeout
        Cluster.instances.append(self)
        if start:
            try:
                self.start_all()
            except BaseException:
                self.close()
                raise

    def _write_testnet(self, consensus: ConsensusParams, byzantine: dict[int, str]) -> list[Path]:
        """Writes keys, genesis and node configs under ``directory``; returns the configs."""
        configs = make_testnet(
            self.directory,
            TestnetPlan(nodes=self.nodes, algorithm=ALGORITHM, consensus=consensus,
                        chain_id=self.chain_id, ports=tuple(self.ports)),
        )
        for index, mode in byzantine.items():
            config = json.loads(configs[index].read_text())
            config["adversary"] = {"strategy": mode}
            configs[index].write_text(json.dumps(config, indent=2) + "\n")
        return configs

    def _node_ids(self) -> list[bytes]:
        return [v.id for v in self.genesis.validators]

    # -- processes -------------------------------------------------------------------------------

    def _launch(self, i: int) -> None:
        current = self.children[i]
        if current is not None and current.alive():
            raise RuntimeError(f"node {i} is already running (pid {current.pid})")
        if current is not None:
            self.supervisor.forget(current)
        self.children[i] = spawn_cli(
            self.supervisor, f"node-{i}",
            ["chain", "--kind", self.kind, "--config", str(self.configs[i])],
            self.log_path(i), self.directory)
        self.ready[i] = None

    def _wait_ready(self, indices: Sequence[int], timeout: float) -> None:
        """Waits for the ready line of each node in ``indices`` (or fails with the logs)."""
        indices = list(indices)
        try:
            events = self.supervisor.wait_ready([self._child(i) for i in indices], timeout)
        except SupervisorError as exc:
            raise self.error(str(exc)) from None
        for i, event in zip(indices, events, strict=True):
            if bytes.fromhex(event["id"]) != self.ids[i]:
                raise self.error(f"node {i} reports id {event['id']}, genesis "
                                 f"gives {self.ids[i].hex()}")
            self.ready[i] = event

    def _child(self, i: int) -> Child:
        child = self.children[i]
        if child is None:
            raise RuntimeError(f"node {i} was never started")
        return child

    @property
    def procs(self) -> list[subprocess.Popen[bytes] | None]:
        """Each node's ``subprocess.Popen`` (None: never started)."""
        return [c.popen if c is not None else None for c in self.children]

    def start_all(self) -> None:
        self.start_many(range(self.nodes))

    def start(self, i: int, timeout: float | None = None) -> dict[str, Any]:
        """(Re)starts node ``i`` with its config and data dir; returns its ready event."""
        return self.start_many([i], timeout)[0]

    def start_many(
        self, indices: Sequence[int], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """(Re)starts several nodes at once; returns their ready events."""
        for i in indices:
            self._launch(i)
        self._wait_ready(indices, timeout or self.ready_timeout)
        return [self.ready[i] for i in indices]  # type: ignore[misc]

    async def astart(self, i: int, timeout: float | None = None) -> dict[str, Any]:
        """``start`` off the event loop, so open streams keep being served meanwhile."""
        return await asyncio.to_thread(self.start, i, timeout)

    async def astart_many(
        self, indices: Sequence[int], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.start_many, indices, timeout)

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (its process group, by id) and reap it."""
        if not self.alive(i):
            raise RuntimeError(f"node {i} is not running")
        self.supervisor.kill(self._child(i), STOP_TIMEOUT_S)
        self._reaped(i)

    def stop(self, i: int, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM node ``i`` and wait for it to exit; returns its exit code."""
        if not self.alive(i):
            raise RuntimeError(f"node {i} is not running")
        child = self._child(i)
        os.kill(child.pid, signal.SIGTERM)
        if not self.supervisor.wait_exit([child], time.monotonic() + timeout):
            self.supervisor.kill(child)
            self._reaped(i)
            raise self.error(f"node {i} ignored SIGTERM for {timeout:.0f} s")
        self._reaped(i)
        assert child.exit_code is not None
        return child.exit_code

    async def astop(self, i: int, timeout: float = STOP_TIMEOUT_S) -> int:
        return await asyncio.to_thread(self.stop, i, timeout)

    def alive(self, i: int) -> bool:
        child = self.children[i]
        return child is not None and child.alive()

    def running(self) -> list[int]:
        return [i for i in range(self.nodes) if self.alive(i)]

    def _reaped(self, i: int) -> None:
        channel = self._channels.pop(i, None)
        if channel is not None:  # a restarted node gets a fresh channel (no reconnect backoff)
            self._stale.append(channel)

    def close(self) -> None:
        """Kills every process this cluster started (SIGKILL by group id); safe to call twice."""
        self.supervisor.close()
        if self in Cluster.instances:
            Cluster.instances.remove(self)

    async def aclose(self) -> None:
        """Closes the gRPC channels, then kills every process (see ``close``)."""
        try:
            channels = [*self._channels.values(), *self._stale]
            self._channels, self._stale = {}, []
            for channel in channels:
                with contextlib.suppress(Exception):
                    await channel.close()
        finally:
            self.close()

    # -- diagnostics -----------------------------------------------------------------------------

    def log_path(self, i: int) -> Path:
        return self.logs_dir / f"node-{i}.log"

    def log_tail(self, i: int, lines: int = 30) -> str:
        try:
            text = self.log_path(i).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def log_tails(self, lines: int = 30) -> str:
        parts = []
        for i in range(self.nodes):
            state = "running" if self.alive(i) else "down"
            parts.append(f"===== node {i} ({self.ids[i].hex()[:16]}, {state}) =====\n"
                         f"{self.log_tail(i, lines)}")
        return "\n".join(parts)

    def grep_logs(self, needle: str) -> list[str]:
        """Every log line of every node containing ``needle``, prefixed with the node index."""
        found = []
        for i in range(self.nodes):
            with contextlib.suppress(OSError):
                for line in self.log_path(i).read_text(errors="replace").splitlines():
                    if needle in line:
                        found.append(f"[{i}] {line}")
        return found

    def error(self, message: str) -> ClusterError:
        return ClusterError(f"{message}\n{self.log_tails()}")

    def index_of(self, node_id: bytes) -> int:
        return self.ids.index(bytes(node_id))

    # -- gRPC ------------------------------------------------------------------------------------

    def channel(self, i: int) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new test loop: channels of another loop are unusable
            self._channels, self._stale = {}, []
            self._loop = loop
        channel = self._channels.get(i)
        if channel is None:
            channel = grpc.aio.insecure_channel(self.addresses[i], options=channel_options())
            self._channels[i] = channel
        return channel

    def chain(self, i: int) -> chain_grpc.ChainServiceStub:
        return chain_grpc.ChainServiceStub(self.channel(i))

    def peer(self, i: int) -> peer_grpc.PeerServiceStub:
        return peer_grpc.PeerServiceStub(self.channel(i))

    async def status(self, i: int) -> chain_pb.ChainStatus:
        return await self.chain(i).GetStatus(chain_pb.GetStatusRequest(), timeout=RPC_TIMEOUT_S)

    async def height(self, i: int) -> int:
        return (await self.status(i)).height

    async def submit(self, i: int, txs: Iterable[Transaction]) -> chain_pb.SubmitTxsResponse:
        request = chain_pb.SubmitTxsRequest(txs=[wire.tx_to_proto(tx) for tx in txs])
        return await self.chain(i).SubmitTxs(request, timeout=RPC_TIMEOUT_S)

    async def submit_one(self, i: int, tx: Transaction) -> bytes:
        request = chain_pb.SubmitTxRequest(tx=wire.tx_to_proto(tx))
        reply = await self.chain(i).SubmitTx(request, timeout=RPC_TIMEOUT_S)
        return bytes(reply.tx_hash)

    async def block(self, i: int, height: int) -> Block:
        reply = await self.chain(i).GetBlock(chain_pb.GetBlockRequest(height=height),
                                             timeout=RPC_TIMEOUT_S)
        return wire.block_from_proto(reply.block)

    async def blocks(self, i: int, first: int, last: int) -> list[Block]:
        """Blocks ``first..last`` (inclusive) of node ``i``'s canonical chain, via GetBlock."""
        return [await self.block(i, h) for h in range(first, last + 1)]

    async def wait_height(self, i: int, height: int, timeout: float) -> Block:
        """Awaits node ``i``'s SubscribeBlocks stream until it yields ``height``; that block."""
        return (await self.follow(i, height, height, timeout))[-1]

    async def follow(
        self, i: int, first: int, last: int, timeout: float, final_only: bool = False
    ) -> list[Block]:
        """The blocks ``first..last`` as node ``i`` announces them on SubscribeBlocks (at commit
        time; CMBC: once final with ``final_only``), awaiting the stream until ``last``."""
        blocks: list[Block] = []
        stream = self.chain(i).SubscribeBlocks(
            chain_pb.SubscribeBlocksRequest(from_height=first, final_only=final_only),
            timeout=timeout,
        )
        try:
            async for message in stream:
                blocks.append(wire.block_from_proto(message))
                if blocks[-1].height >= last:
                    return blocks
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise self.error(f"node {i} did not reach height {last} within "
                                 f"{timeout:.1f} s") from None
            raise self.error(f"node {i}: SubscribeBlocks failed: {exc.code().name} "
                             f"{exc.details()}") from exc
        finally:
            stream.cancel()
        raise self.error(f"node {i}: SubscribeBlocks ended before height {last}")

    async def wait_all(self, indices: Iterable[int], height: int, timeout: float) -> None:
        await asyncio.gather(*(self.wait_height(i, height, timeout) for i in indices))

    async def wait_txs(
        self, i: int, hashes: Iterable[bytes], timeout: float, from_height: int = 1,
        final_only: bool = False,
    ) -> dict[bytes, int]:
        """Follows node ``i``'s committed blocks (CMBC: final blocks with ``final_only``) from
        ``from_height`` until every transaction in ``hashes`` was in one; returns the height of
        each (its first occurrence)."""
        wanted = set(hashes)
        found: dict[bytes, int] = {}
        if not wanted:
            return found
        stream = self.chain(i).SubscribeBlocks(
            chain_pb.SubscribeBlocksRequest(from_height=from_height, final_only=final_only),
            timeout=timeout,
        )
        try:
            async for message in stream:
                block = wire.block_from_proto(message)
                for tx in block.transactions:
                    if tx.hash in wanted:
                        found.setdefault(tx.hash, block.height)
                if len(found) == len(wanted):
                    return found
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise self.error(f"node {i}: {len(wanted) - len(found)} of {len(wanted)} txs "
                                 f"not committed within {timeout:.1f} s") from None
            raise self.error(f"node {i}: SubscribeBlocks failed: {exc.code().name} "
                             f"{exc.details()}") from exc
        finally:
            stream.cancel()
        raise self.error(f"node {i}: SubscribeBlocks ended early")

    async def no_block_within(self, i: int, after: int, window: float) -> Block | None:
        """The first block above ``after`` that node ``i`` commits within ``window`` seconds,
        or None if none does (the stream stays silent for the whole window)."""
        stream = self.chain(i).SubscribeBlocks(
            chain_pb.SubscribeBlocksRequest(from_height=after + 1), timeout=window
        )
        try:
            async for message in stream:
                return wire.block_from_proto(message)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise self.error(f"node {i}: SubscribeBlocks failed: {exc.code().name} "
                                 f"{exc.details()}") from exc
        finally:
            stream.cancel()
        return None


# -- helpers for tests -----------------------------------------------------------------------------


def make_senders(count: int) -> list[Signer]:
    return [Signer.generate(ALGORITHM) for _ in range(count)]


def sign_memos(
    senders: Sequence[Signer], per_sender: int, chain_id: str, first_nonce: int = 0,
    tag: bytes = b"memo",
) -> list[list[Transaction]]:
    """``per_sender`` signed MEMO transactions of each sender, nonces from ``first_nonce`` on;
    one list per sender, in nonce order."""
    now = time.time_ns() // 1_000_000
    return [
        [
            sign_transaction(signer, chain_id, TxKind.MEMO, tag + b"-%d-%d" % (s, n), n, now)
            for n in range(first_nonce, first_nonce + per_sender)
        ]
        for s, signer in enumerate(senders)
    ]


async def assert_same_chain(cluster: Cluster, indices: Sequence[int], last: int) -> list[Block]:
    """Every node in ``indices`` holds the same block at each height 1..``last`` (via GetBlock);
    returns the blocks of the first."""
    chains = await asyncio.gather(*(cluster.blocks(i, 1, last) for i in indices))
    reference = chains[0]
    for i, chain in zip(indices, chains, strict=True):
        for a, b in zip(reference, chain, strict=True):
            assert a.hash == b.hash, (
                f"fork at height {a.height}: node {indices[0]} has {a.hash.hex()[:16]}, node {i} "
                f"has {b.hash.hex()[:16]}"
            )
    return reference


def assert_certified(cluster: Cluster, blocks: Sequence[Block]) -> None:
    """Each block at height >= 2 carries a commit certificate of its parent: a quorum of
    distinct members' precommits for the parent hash at the parent height."""
    quorum = 2 * cluster.nodes // 3 + 1
    for block in blocks:
        qc = block.header.parent_qc
        if block.height == 1:
            assert qc is None, "block 1 carries a parent certificate"
            continue
        assert qc is not None, f"block {block.height} has no parent certificate"
        assert qc.height == block.height - 1, f"block {block.height}: QC of height {qc.height}"
        assert qc.block_hash == block.header.parent_hash, f"block {block.height}: QC of another"
        assert qc.step == VoteStep.PRECOMMIT
        signers = [voter for voter, _ in qc.signatures]
        assert len(set(signers)) == len(signers) >= quorum, (
            f"block {block.height}: {len(signers)} signers, quorum {quorum}"
        )
        assert set(signers) <= set(cluster.ids), f"block {block.height}: QC signer not a member"
