"""A local CMBC testbed of real processes: proof-of-work chain daemons and miners on loopback.

    cluster = CmbcCluster(tmp_path, nodes=3, miners=2, pow=PowParams(...), proxied=True)
    await cluster.aopen()                       # proxies (if any), then every daemon, ready
    await cluster.start_miner(0, node=0, duty=0.3)
    await cluster.wait_height(1, 10, timeout=30)
    cluster.split([0, 1], [2]); ...; cluster.heal()
    await cluster.aclose()                      # kills every process (by PID), closes proxies

Daemons are ``dualchain chain --kind cmbc --config node-I.json`` and miners ``dualchain miner
--cmbc ADDR --key keys/miner-J.key --workers W --duty D``, each its own process started by the
cluster's supervisor (stderr to ``logs/``, stdout read for event lines, killed with its group).
Everything about daemons (readiness, restarts, SIGKILL, channels, SubscribeBlocks waits) is
``Cluster``'s; this module adds the testnet with its ``pow`` section, miners, optional TCP
proxies between the daemons (``netsplit``), and helpers to craft blocks by hand.

A miner's stdout is read by the supervisor for its whole life (its JSON ``ready`` and ``block``
lines), so a long-running miner never blocks on a full pipe. Stopping a miner kills its process
group: the miner and its hashing worker processes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from dualchain.chain import wire
from dualchain.chain.consensus.pow import (
    PowParams,
    difficulty_of,
    meets_target,
    seal_prefix,
    search_nonce,
    target_from_bytes,
    target_to_bytes,
)
from dualchain.chain.consensus.reward import Reward
from dualchain.chain.identity import Domain, Signer, load_key_file
from dualchain.chain.merkle import merkle_root
from dualchain.chain.types import Block, BlockHeader, Transaction, TxKind
from dualchain.deploy.processes import free_ports
from dualchain.deploy.testnet import TestnetPlan, make_testnet
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import miner_pb2 as miner_pb
from dualchain.proto.v1 import miner_pb2_grpc as miner_grpc
from dualchain.proto.v1 import peer_pb2 as peer_pb
from dualchain.runtime.supervisor import Child, Supervisor, SupervisorError
from tests.integration.cluster import (
    ALGORITHM,
    READY_TIMEOUT_S,
    RPC_TIMEOUT_S,
    Cluster,
    spawn_cli,
)
from tests.integration.netsplit import Partition, Proxy

MINER_READY_TIMEOUT_S = 60.0


def hash_rate(seconds: float = 0.2) -> float:
    """Hashes per second of one core of this machine (as it is loaded now), measured with the
    miners' own search loop; tests derive initial difficulties from it."""
    prefix, impossible = b"\x00" * 200, b"\x00" * 32
    count, began = 20_000, time.perf_counter()
    done = 0
    while time.perf_counter() - began < seconds:
        search_nonce(prefix, impossible, done, count)
        done += count
    return done / (time.perf_counter() - began)


class MinerProcess:
    """One ``dualchain miner`` process (a supervisor's child) and its JSON events."""

    def __init__(self, supervisor: Supervisor, child: Child, node: int) -> None:
        self.supervisor = supervisor
        self.child = child
        self.node = node

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.child.popen

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.child.events

    def alive(self) -> bool:
        return self.child.alive()

    def blocks(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "block"]

    def kill(self) -> None:
        self.supervisor.kill(self.child)


class CmbcCluster(Cluster):
    """A CMBC testnet under ``directory``; start it with ``await aopen()``.

    With ``proxied``, daemon I names a proxy per other daemon J as its peer (all of I's links
    to J run through it), so ``split`` and ``heal`` cut and restore their links for real."""

    kind = "cmbc"

    def __init__(
        self,
        directory: Path,
        nodes: int = 3,
        miners: int = 2,
        pow: PowParams | None = None,
        chain_id: str = "cmbc-it",
        proxied: bool = False,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.pow = pow or PowParams()
        self.miner_count = miners
        self.proxied = proxied
        self.partition = Partition({})
        super().__init__(directory, nodes=nodes, chain_id=chain_id, start=False,
                         ready_timeout=ready_timeout)
        self.miner_signers = [load_key_file(self.miner_key(j)) for j in range(miners)]
        self.miner_ids = [s.id for s in self.miner_signers]
        self.miners: list[MinerProcess | None] = [None] * miners

    def _write_testnet(self, consensus: Any, byzantine: dict[int, str]) -> list[Path]:
        configs = make_testnet(self.directory, TestnetPlan(
            kind="cmbc", nodes=self.nodes, miners=self.miner_count, pow=self.pow,
            algorithm=ALGORITHM, chain_id=self.chain_id, ports=tuple(self.ports)))
        if self.proxied:
            ports = iter(free_ports(self.nodes * (self.nodes - 1)))
            proxies: dict[tuple[int, int], Proxy] = {}
            for i, path in enumerate(configs):
                config = json.loads(path.read_text())
                peers = []
                for j in range(self.nodes):
                    if j != i:
                        proxies[(i, j)] = Proxy(next(ports), self.addresses[j])
                        peers.append(proxies[(i, j)].address)
                config["peers"] = peers
                path.write_text(json.dumps(config, indent=2) + "\n")
            self.partition = Partition(proxies)
        return configs

    def _node_ids(self) -> list[bytes]:
        # Proof of work has no validator set: the ids are those of the node keys.
        return [load_key_file(self.directory / "keys" / f"node-{i}.key").id
                for i in range(self.nodes)]

    def miner_key(self, j: int) -> Path:
        return self.directory / "keys" / f"miner-{j}.key"

    # -- processes -------------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Starts the proxies (if any), then every daemon, and waits for their ready lines."""
        try:
            await self.partition.start()
            await self.astart_many(range(self.nodes))
        except BaseException:
            await self.aclose()
            raise

    async def start_miner(self, j: int, node: int, workers: int = 1, duty: float = 1.0,
                          refresh_s: float = 1.0) -> dict[str, Any]:
        """Starts miner ``j`` on daemon ``node``; returns its ready event (its first template)."""
        current = self.miners[j]
        if current is not None and current.alive():
            raise RuntimeError(f"miner {j} is already running (pid {current.proc.pid})")
        child = spawn_cli(self.supervisor, f"miner-{j}",
                          ["miner", "--cmbc", self.addresses[node], "--key",
                           str(self.miner_key(j)), "--workers", str(workers), "--duty", str(duty),
                           "--refresh", str(refresh_s)],
                          self.miner_log_path(j), self.directory)
        self.miners[j] = MinerProcess(self.supervisor, child, node)
        try:
            (ready,) = await asyncio.to_thread(self.supervisor.wait_ready, [child],
                                               MINER_READY_TIMEOUT_S)
        except SupervisorError as exc:
            raise self.error(f"miner {j}: {exc}") from None
        return ready

    def kill_miner(self, j: int) -> None:
        """SIGKILL miner ``j`` and its workers (by PID): the hash power leaves at once."""
        miner = self.miners[j]
        if miner is None or not miner.alive():
            raise RuntimeError(f"miner {j} is not running")
        miner.kill()

    def kill_miners(self) -> None:
        for miner in self.miners:
            if miner is not None:
                miner.kill()

    def close(self) -> None:
        """Kills every miner and daemon this cluster started (by PID); safe to call twice."""
        for miner in getattr(self, "miners", []):
            if miner is not None:
                miner.kill()
        super().close()

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self.partition.close()

    # -- partitions ------------------------------------------------------------------------------

    def split(self, side_a: Sequence[int], side_b: Sequence[int]) -> None:
        if not self.proxied:
            raise RuntimeError("a split needs a cluster made with proxied=True")
        self.partition.split(side_a, side_b)

    def heal(self) -> None:
        self.partition.heal()

    # -- diagnostics -----------------------------------------------------------------------------

    def miner_log_path(self, j: int) -> Path:
        return self.logs_dir / f"miner-{j}.log"

    def log_tails(self, lines: int = 30) -> str:
        parts = [super().log_tails(lines)]
        for j, miner in enumerate(getattr(self, "miners", [])):
            if miner is None:
                continue
            state = "running" if miner.alive() else "down"
            try:
                text = self.miner_log_path(j).read_text(errors="replace")
            except OSError:
                text = "(no log)"
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"===== miner {j} on node {miner.node} ({state}) =====\n{tail}")
        return "\n".join(parts)

    # -- gRPC ------------------------------------------------------------------------------------

    def miner_service(self, i: int) -> miner_grpc.MinerServiceStub:
        return miner_grpc.MinerServiceStub(self.channel(i))

    async def template(self, i: int, signer: Signer) -> miner_pb.BlockTemplate:
        return await self.miner_service(i).GetBlockTemplate(
            miner_pb.BlockTemplateRequest(miner_public_key=signer.public_key),
            timeout=RPC_TIMEOUT_S)

    async def submit_block(self, i: int, template: miner_pb.BlockTemplate, header: BlockHeader,
                           reward: Transaction) -> miner_pb.SubmitBlockResponse:
        return await self.miner_service(i).SubmitBlock(miner_pb.SubmitBlockRequest(
            template_id=template.template_id, header=header.encoded,
            reward_tx=reward.encoded), timeout=RPC_TIMEOUT_S)

    async def gossip(self, i: int, blocks: Sequence[Block]) -> peer_pb.GossipSummary:
        """Sends ``blocks`` to node ``i`` over a peer Gossip stream, as a (made-up) peer would;
        returns the summary once the node has handled every message, or raises the stream's
        status when it refuses one."""
        hello = peer_pb.Hello(genesis_hash=self.genesis.hash, node_id=b"\x5a" * 32, height=0,
                              address="127.0.0.1:1")
        messages = [peer_pb.PeerMessage(hello=hello),
                    *(peer_pb.PeerMessage(block=b.encoded) for b in blocks)]

        async def stream():
            for message in messages:
                yield message

        return await self.peer(i).Gossip(stream(), timeout=RPC_TIMEOUT_S)

    async def difficulty(self, i: int) -> float:
        """Expected hashes for node ``i``'s next block (GetStatus.target)."""
        status = await self.status(i)
        return difficulty_of(target_from_bytes(status.target))

    async def canonical_hashes(self, i: int, first: int, last: int) -> list[bytes]:
        return [b.hash for b in await self.blocks(i, first, last)]

    async def record_final(self, i: int, into: list[tuple[int, bytes]]) -> None:
        """Appends (height, hash) of every block node ``i`` announces as final, until cancelled
        (a ``final_only`` SubscribeBlocks stream from height 1)."""
        stream = self.chain(i).SubscribeBlocks(
            chain_pb.SubscribeBlocksRequest(from_height=1, final_only=True))
        try:
            async for message in stream:
                block = wire.block_from_proto(message)
                into.append((block.height, block.hash))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise
        finally:
            stream.cancel()


# -- crafting blocks by hand ---------------------------------------------------------------------


def seal(header: BlockHeader, valid: bool = True) -> BlockHeader:
    """``header`` with a nonce whose hash meets its target (``valid``) or does not."""
    if valid:
        nonce = search_nonce(seal_prefix(header), header.pow_target, 0, 1 << 40)
        assert nonce is not None
        return replace(header, pow_nonce=nonce)
    for nonce in range(1 << 20):
        candidate = replace(header, pow_nonce=nonce)
        if not meets_target(candidate):
            return candidate
    raise AssertionError("every nonce meets the target: pick a harder one")


def sign_reward(signer: Signer, reward: Transaction) -> Transaction:
    return reward.with_signature(signer.sign(Domain.TRANSACTION, reward.signing_bytes))


def sign_header(signer: Signer, header: BlockHeader) -> BlockHeader:
    return header.with_signature(signer.sign(Domain.BLOCK, header.signing_bytes))


def solve_template(
    template: miner_pb.BlockTemplate, signer: Signer, *, valid_pow: bool = True,
    signed_by: Signer | None = None, **header_fields: Any,
) -> tuple[BlockHeader, Transaction]:
    """What a miner submits for ``template``: the sealed, signed header and its signed reward,
    built as ``dualchain.chain.miner`` builds them. ``header_fields`` override header fields
    (timestamp_ms, chain_id, pow_target, ...) before sealing; ``valid_pow=False`` picks a nonce
    above the target; ``signed_by`` signs the header with another key."""
    reward = sign_reward(signer, Transaction.decode(template.reward_tx))
    header = BlockHeader(
        chain_id=template.chain_id, height=template.height,
        parent_hash=bytes(template.parent_hash),
        tx_root=merkle_root([reward.hash, *(bytes(h) for h in template.tx_hashes)]),
        timestamp_ms=template.timestamp_ms, proposer=signer.id,
        app_hash=bytes(template.app_hash), pow_target=bytes(template.target),
    )
    header = seal(replace(header, **header_fields), valid_pow)
    return sign_header(signed_by or signer, header), reward


def block_from_template(template: miner_pb.BlockTemplate, signer: Signer,
                        **header_fields: Any) -> Block:
    """A whole block for ``template`` (which must name no mempool transactions)."""
    assert not template.tx_hashes, "the template carries mempool transactions"
    header, reward = solve_template(template, signer, **header_fields)
    return Block(header, (reward,))


def block_on(parent: BlockHeader, signer: Signer, reward_nonce: int, app_hash: bytes,
             target: int | None = None, timestamp_ms: int | None = None,
             block_reward: int = PowParams().block_reward) -> Block:
    """A reward-only block on ``parent`` mined and signed by ``signer`` (whose next nonce on
    that branch is ``reward_nonce``); the target defaults to the parent's (no retarget)."""
    timestamp = parent.timestamp_ms + 1 if timestamp_ms is None else timestamp_ms
    reward_record = Reward(parent.height + 1, parent.hash, block_reward, signer.id)
    unsigned = Transaction(parent.chain_id, TxKind.REWARD, signer.id, signer.public_key,
                           reward_nonce, timestamp, reward_record.encode())
    reward = sign_reward(signer, unsigned)
    header = BlockHeader(
        chain_id=parent.chain_id, height=parent.height + 1, parent_hash=parent.hash,
        tx_root=merkle_root([reward.hash]), timestamp_ms=timestamp, proposer=signer.id,
        app_hash=app_hash,
        pow_target=parent.pow_target if target is None else target_to_bytes(target),
    )
    return Block(sign_header(signer, seal(header)), (reward,))
