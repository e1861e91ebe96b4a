"""A server node: the FL coordinator beside its CTBC and CMBC daemons.

What it does, each part one asyncio task or one method the gRPC servicer calls:

- follows CMBC's final blocks for client registrations (their keys), so an update is checked
  against a key no reorg can change;
- follows CTBC: when a block carries a model commit, it asks its CTBC daemon for the newest
  committed version (the daemon's application decided whether the commit applied), fetches that
  model, evaluates it on the held-out test set off the event loop, anchors it on CMBC when it
  was the commit's author, and prints a ``version`` event line;
- hands out tasks and models, checks uploaded updates (``gate``), stores them in its CTBC
  daemon's blob store and relays them to every other node, so each holds the pool;
- when it is the aggregator (below) and the pool is ready, computes the next version with the
  rule every committee member re-executes, stores the model blob and submits the commit.

A node joins a running testbed in two stages (seed 000 §3.1): with ``join`` set it puts a
NodeJoinRequest on CMBC; each committee member, once that request is final, votes the joiner in
as a CTBC validator (VALIDATOR_REGISTER naming the request); when CTBC has applied the change
the nodes record a NodeAdmission on CMBC. Only then does the joiner hand out tasks, take
aggregation turns and get a group in the next assignment.

The aggregator of the next version is the node that leads CTBC's next height after the commit
of the current one: with the server nodes in id order, node ``(h + 1) mod n`` for a commit at
height h (version 0: h = 0), the way the committee's leader rotates by height. Aggregation duty
therefore moves from node to node. When no new version arrives for ``aggregator_timeout_s`` the
next node takes over, and so on (a crashed aggregator costs one timeout). Any node may submit a
commit: CTBC accepts the first valid one for a version and refuses the rest as stale, so a
takeover cannot fork the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from dualchain.chain import wire
from dualchain.chain.cmbc.payloads import (
    Anchor,
    ClientRegistration,
    NodeAdmission,
    NodeJoinRequest,
    decode_payload,
)
from dualchain.chain.ctbc.fl import FlRules, ModelCommit, SignedUpdate, fl_rules
from dualchain.chain.ctbc.payloads import ValidatorRegister
from dualchain.chain.daemon.config import ConfigError
from dualchain.chain.errors import DecodeError, DualchainError
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import Signer, identity_id
from dualchain.chain.outbox import Outbox
from dualchain.chain.rpc import channel_options, open_channel
from dualchain.chain.senders import admissible_nonce
from dualchain.chain.types import Block, Transaction, TxKind
from dualchain.chain.validation import sign_transaction
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.codec import decode_params, encode_params
from dualchain.node.config import NodeConfig
from dualchain.node.gate import CheckedUpdate, UpdateGate, UpdateRefused
from dualchain.node.metrics import NodeMetrics
from dualchain.node.planner import Planner
from dualchain.node.pool import UpdatePool
from dualchain.node.uploads import upload_chunks
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from dualchain.proto.v1 import node_pb2 as node_pb
from dualchain.proto.v1 import node_pb2_grpc as node_grpc

log = logging.getLogger("dualchain.node")

CHUNK = 1 << 20
AGGREGATE_POLL_S = 0.1
COMMIT_WAIT_S = 15.0
MODELS_KEPT = 16
RETRY_S = 1.0
CATCH_UP_S = 5.0
CMBC_CATCH_UP_S = 60.0
RECORDS_FOLLOW_UP_S = 2.0  # how often the node asks CMBC about its records not final yet
DAEMON_WAIT_S = 120.0  # a node started with its daemons waits this long for them to listen


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def chunks(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, max(len(data), 1), size)]


@dataclass
class IssuedTask:
    task: int
    version: int
    issued: float


def commits_in(block: Block) -> list[tuple[Transaction, ModelCommit]]:
    """The model commits of a CTBC block, in block order (applied or refused alike)."""
    return [(tx, ModelCommit.decode(tx.payload)) for tx in block.transactions
            if tx.kind == TxKind.MODEL_VERSION]


def commit_for_version(block: Block, version: int) -> tuple[Transaction, ModelCommit] | None:
    """The first commit of ``version`` in ``block``, or None if the block has none."""
    return next(((tx, c) for tx, c in commits_in(block) if c.version == version), None)


class ServerNode:
    def __init__(self, config: NodeConfig, signer: Signer) -> None:
        self.config = config
        self.signer = signer
        self.ctbc_genesis = Genesis.load(config.ctbc_genesis)
        self.cmbc_genesis = Genesis.load(config.cmbc_genesis)
        if self.ctbc_genesis.fl is None:
            raise ConfigError(f"{config.ctbc_genesis} has no fl section")
        self.fl = self.ctbc_genesis.fl
        self.rules: FlRules = fl_rules(self.ctbc_genesis)
        self.verifier = SignatureVerifier()
        self.metrics = NodeMetrics()
        self.clients: dict[bytes, bytes] = {}  # client id -> registered public key
        self.version = 0
        self.model_hash = bytes.fromhex(self.fl.model_hash)
        self.params: np.ndarray | None = None
        self.shapes: list[tuple[str, tuple[int, ...]]] = []
        self._models: OrderedDict[bytes, bytes] = OrderedDict()  # hash -> blob
        self.gate: UpdateGate | None = None
        self.pool = UpdatePool(self.rules, config.aggregation)
        self._issued: dict[bytes, IssuedTask] = {}
        # update digest -> (client, completion seconds), for this node's own clients
        self._arrivals: dict[bytes, tuple[bytes, float]] = {}
        self._task_counter = 0
        self._commit_height = 0  # CTBC height that committed the current version
        # Per group, the longest completion among the last version's updates from this node's
        # clients (the launcher merges the nodes' figures into eq. 14's C_gmax).
        self._last_c_groups: dict[int, float] = {}
        # Single-chain mode: "cmbc" and its genesis name the CTBC daemon and genesis.
        self.planner = Planner(self.cmbc_genesis.sched,
                               plans=config.aggregation.policy == "plan",
                               single_chain=self.cmbc_genesis.single_chain)
        self._planning = asyncio.Lock()
        self._version_time = time.monotonic()
        self._awaiting: tuple[int, float] | None = None  # (version submitted, when)
        self._version_changed = asyncio.Event()
        self._ctbc_height = 0
        self.traffic = {"bytes_from_clients": 0, "bytes_to_clients": 0, "bytes_relayed": 0}
        self._cmbc_final = 0
        self._cmbc_read = asyncio.Event()  # set after each final CMBC block is read
        self.accuracy = 0.0
        self.loss = 0.0
        self._torch = ThreadPoolExecutor(1, thread_name_prefix="torch")
        self._model: Any = None
        self._test: tuple[Any, Any] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        options = channel_options()
        self._ctbc_channel = open_channel(config.ctbc, config.tls, options)
        self._cmbc_channel = open_channel(config.cmbc, config.tls, options)
        self.ctbc = chain_grpc.ChainServiceStub(self._ctbc_channel)
        self.cmbc = chain_grpc.ChainServiceStub(self._cmbc_channel)
        # This node's CMBC records, signed again if the chain drops them behind a refused one.
        self.records = Outbox(self.cmbc, signer, self.cmbc_genesis.chain_id, timeout_s=30)
        self._peers = {nid: open_channel(addr, config.tls, options)
                       for nid, addr in config.nodes.items() if nid != signer.id}
        self._announced_admission = False

    # -- start -----------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._torch, self._load_learning)
        # Containers start together: wait for the daemons to listen (not fail at once).
        for stub in (self.ctbc, self.cmbc):
            await stub.GetStatus(chain_pb.GetStatusRequest(), timeout=DAEMON_WAIT_S,
                                 wait_for_ready=True)
        try:
            await self._put_blob(self._models[self.model_hash])
        except grpc.aio.AioRpcError as exc:
            # A joining node is no validator yet; the chain's replicas hold version 0 already.
            if not (self.config.join and exc.code() == grpc.StatusCode.UNAUTHENTICATED):
                raise
        status = await self.ctbc.GetStatus(chain_pb.GetStatusRequest(), timeout=30)
        if status.model_version > 0:  # a restart mid-run: serve the newest version at once
            await self._adopt(status.model_version, bytes(status.model_hash), status.height,
                              status.model_height)
        self._ctbc_height = status.height
        # Serve only once the final CMBC blocks that exist now are read: a restarted node must
        # know the registered clients (and the task plan) before it answers them.
        cmbc_final = (await self.cmbc.GetStatus(chain_pb.GetStatusRequest(),
                                                timeout=30)).final_height
        self._tasks += [
            asyncio.create_task(self._follow_cmbc(), name="follow-cmbc"),
            asyncio.create_task(self._follow_ctbc(status.height + 1), name="follow-ctbc"),
            asyncio.create_task(self._aggregate_loop(), name="aggregate"),
            asyncio.create_task(self.records.run(RECORDS_FOLLOW_UP_S), name="records"),
        ]
        deadline = time.monotonic() + CMBC_CATCH_UP_S
        while self._cmbc_final < cmbc_final and time.monotonic() < deadline:
            self._cmbc_read.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cmbc_read.wait(), deadline - time.monotonic())
        if self._cmbc_final < cmbc_final:
            log.warning("serving before reading CMBC up to its final height %d (at %d)",
                        cmbc_final, self._cmbc_final)
        if self.config.join and self.planner.final.join_request(self.signer.id) is None:
            request = NodeJoinRequest(self.config.listen, self.config.ctbc)
            await self.records.submit(TxKind.NODE_JOIN_REQUEST, request.encode())
            print(json.dumps({"event": "join", "stage": "requested", "time": time.time()}),
                  flush=True)

    @property
    def admitted(self) -> bool:
        """A joiner only once CMBC recorded its admission; every genesis node always."""
        return not self.config.join or self.planner.final.admitted_at(self.signer.id) is not None

    def _load_learning(self) -> None:
        """Version 0 from the genesis seed (checked against the genesis hash) and the test set."""
        import torch

        from dualchain.learning.datasets import load_dataset
        from dualchain.learning.models import build_model, get_flat, param_shapes

        torch.set_num_threads(1)
        dataset = load_dataset(self.fl.dataset, self.config.data_dir, seed=0)
        self._model = build_model(dataset.name, dataset.num_classes, self.fl.model_seed)
        self.shapes = param_shapes(self._model)
        flat = get_flat(self._model)
        blob = encode_params(flat, self.shapes)
        if hashlib.sha256(blob).digest() != self.model_hash:
            raise ConfigError("the genesis model hash does not match the model this "
                              "node derives from the genesis seed (different code or dataset?)")
        self._remember(self.model_hash, blob)
        self.params = flat
        self._test = (dataset.test_x, dataset.test_y)
        self.gate = UpdateGate(self.rules, self.verifier, self.clients.get, flat.size)
        self.accuracy, self.loss = self._evaluate(flat)

    def _evaluate(self, flat: np.ndarray) -> tuple[float, float]:
        from dualchain.learning.models import set_flat
        from dualchain.learning.training import evaluate

        assert self._test is not None
        set_flat(self._model, flat)
        accuracy, loss = evaluate(self._model, self._test[0], self._test[1])
        return float(accuracy), float(loss)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in [self._ctbc_channel, self._cmbc_channel, *self._peers.values()]:
            await channel.close()
        self._torch.shutdown(wait=False, cancel_futures=True)
        self.verifier.close()

    # -- models ----------------------------------------------------------------------------------

    def _remember(self, model_hash: bytes, blob: bytes) -> None:
        self._models[model_hash] = blob
        while len(self._models) > MODELS_KEPT:
            self._models.popitem(last=False)

    def model_blob(self, model_hash: bytes) -> bytes | None:
        blob = self._models.get(model_hash)
        if blob is not None:
            self.traffic["bytes_to_clients"] += len(blob)
        return blob

    async def _put_blob(self, data: bytes) -> bytes:
        """Stores ``data`` in our CTBC replica's blob store as our signed upload (the node's
        key is its replica's validator key)."""
        parts = upload_chunks(self.signer, self.ctbc_genesis.chain_id, data)
        reply = await self.ctbc.PutBlob(iter(parts), timeout=60)
        return bytes(reply.hash)

    async def _get_blob(self, h: bytes) -> bytes:
        stream = self.ctbc.GetBlob(chain_pb.GetBlobRequest(hash=h), timeout=60)
        data = b"".join([bytes(c.data) async for c in stream])
        if hashlib.sha256(data).digest() != h:
            raise UpdateRefused("bad_blob", f"blob {h.hex()[:16]} from CTBC does not match")
        return data

    async def _adopt(self, version: int, model_hash: bytes, height: int, commit_height: int,
                     included: int = 0) -> None:
        """Takes version ``version`` as the current model and evaluates it."""
        blob = self._models.get(model_hash) or await self._get_blob(model_hash)
        self._remember(model_hash, blob)
        params = decode_params(blob).flat
        previous = self._version_time
        # All at once, with no await in between: the aggregation loop must never see the new
        # commit height with the old version (it would think it leads the wrong version).
        self.version, self.model_hash, self.params = version, model_hash, params
        self._commit_height = commit_height
        self._version_changed.set()
        self._version_time = time.monotonic()
        self._awaiting = None
        dropped = self.pool.prune(version)
        self.metrics.updates_dropped.inc(len(dropped))
        loop = asyncio.get_running_loop()
        self.accuracy, self.loss = await loop.run_in_executor(self._torch, self._evaluate, params)
        self.metrics.version.set(version)
        self.metrics.accuracy.set(self.accuracy)
        print(json.dumps({
            "event": "version", "version": version, "hash": model_hash.hex(),
            "accuracy": round(self.accuracy, 4), "loss": round(self.loss, 4),
            "ctbc_height": height, "included": included, "dropped": len(dropped),
            "round_s": round(self._version_time - previous, 3), "time": time.time(),
            "c_groups_s": {str(g): round(t, 3) for g, t in sorted(self._last_c_groups.items())},
        }), flush=True)

    # -- following the chains -------------------------------------------------------------------

    async def _follow_cmbc(self) -> None:
        """Registrations, group assignments and task plans from final CMBC blocks (a reorg can
        never take them back); after this node's anchor is final, the next plan."""
        next_height = 1
        while True:
            try:
                stream = self.cmbc.SubscribeBlocks(chain_pb.SubscribeBlocksRequest(
                    from_height=next_height, final_only=True))
                async for message in stream:
                    block = wire.block_from_proto(message)
                    applied: list[Transaction] = []
                    async with self._planning:
                        try:
                            applied = self.planner.apply_final(block)
                        except DualchainError as exc:  # would mean replicas disagree: loud
                            log.error("final CMBC block %d refused by the planner: %s",
                                      block.height, exc)
                            applied = list(block.transactions)
                    for tx in applied:
                        if tx.kind == TxKind.NODE_JOIN_REQUEST:
                            self._on_join_record(tx)
                        elif tx.kind == TxKind.CLIENT_REGISTER:
                            registration = ClientRegistration.decode(tx.payload)
                            self.clients[tx.sender] = tx.public_key
                            log.info("client %s registered (node %s)", tx.sender.hex()[:16],
                                     registration.node.hex()[:16])
                        elif tx.kind == TxKind.ANCHOR and tx.sender == self.signer.id:
                            version = Anchor.decode(tx.payload).version
                            self._tasks.append(asyncio.create_task(self._publish_plan(version)))
                    self._cmbc_final = block.height
                    self._cmbc_read.set()
                    next_height = block.height + 1
                    self.metrics.clients.set(len(self.clients))
            except grpc.aio.AioRpcError as exc:
                log.warning("CMBC stream broke: %s", exc.details())
                await asyncio.sleep(RETRY_S)

    # -- the two-stage join ----------------------------------------------------------------------

    def _on_join_record(self, tx: Transaction) -> None:
        """A final join record: a request from another node gets our CTBC vote; an admission
        adds the node (a relay channel to it) or, when it is this node, lets it serve."""
        record = decode_payload(tx.kind, tx.payload)
        if isinstance(record, NodeJoinRequest) and tx.sender != self.signer.id:
            self._tasks.append(asyncio.create_task(self._vote_join(tx, record)))
        elif isinstance(record, NodeAdmission) and record.node == self.signer.id:
            if not self._announced_admission:
                self._announced_admission = True
                print(json.dumps({"event": "join", "stage": "admitted",
                                  "ctbc_height": self.planner.final.admitted_at(record.node),
                                  "time": time.time()}), flush=True)
        elif isinstance(record, NodeAdmission) and record.node not in self._peers:
            joined = self.planner.final.join_request(record.node)
            if joined is not None:
                self._peers[record.node] = open_channel(
                    joined[2].node_address, self.config.tls, channel_options())
                log.info("node %s joined (%s)", record.node.hex()[:16], joined[2].node_address)

    async def _vote_join(self, tx: Transaction, request: NodeJoinRequest) -> None:
        """Stage 2: as a committee member, votes the joiner in as a CTBC validator (if this
        node's ``admit`` list names it: a request alone admits nobody)."""
        if self.planner.final.admitted_at(tx.sender) is not None:
            return  # (re-read after a restart)
        admit = self.config.admit
        if admit is not None and tx.sender not in admit:
            log.warning("join request from %s: not in this node's admit list, no vote",
                        tx.sender.hex()[:16])
            return
        try:
            status = await self.ctbc.GetStatus(chain_pb.GetStatusRequest(), timeout=30)
            if tx.sender in status.validators or self.signer.id not in status.committee:
                return
            change = ValidatorRegister(tx.public_key, request.ctbc_address, tx.hash)
            await self._submit(self.ctbc, self.ctbc_genesis.chain_id, TxKind.VALIDATOR_REGISTER,
                               change.encode())
            log.info("voted node %s in as a validator", tx.sender.hex()[:16])
        except grpc.aio.AioRpcError as exc:
            log.info("vote for node %s: %s", tx.sender.hex()[:16], exc.details())

    async def _admit_joiners(self, block: Block) -> None:
        """Stage 3: once CTBC applied a join's membership change, records it on CMBC."""
        joiners = []
        for tx in block.transactions:
            if tx.kind == TxKind.VALIDATOR_REGISTER:
                try:  # a refused transaction stays in a CTBC block, malformed or not
                    change = ValidatorRegister.decode(tx.payload)
                except DecodeError:
                    continue
                if change.join_request != bytes(32):
                    joiners.append(identity_id(change.public_key))
        final = self.planner.final
        if not joiners or not final.is_server_node(self.signer.id):
            return
        try:
            status = await self.ctbc.GetStatus(chain_pb.GetStatusRequest(), timeout=30)
            for joiner in joiners:
                if joiner in status.validators and final.pending(joiner):
                    await self.records.submit(TxKind.NODE_JOIN_REQUEST,
                                              NodeAdmission(joiner, block.height).encode())
                    log.info("recorded the admission of node %s", joiner.hex()[:16])
        except (grpc.aio.AioRpcError, DecodeError) as exc:
            log.info("admission at CTBC height %d: %s", block.height, exc)

    async def _publish_plan(self, version: int) -> None:
        """Submits the group assignment (if one is due) and task plan after ``version``."""
        if self.planner.sched is None:
            return
        async with self._planning:
            loop = asyncio.get_running_loop()
            try:
                records = await loop.run_in_executor(None, self.planner.records_after, version)
            except DualchainError as exc:
                log.warning("no plan after version %d: %s", version, exc)
                return
        if records is None:
            return
        try:
            if records.assignment is not None:
                await self.records.submit(TxKind.GROUP_ASSIGNMENT,
                                          records.assignment.encode())
            await self.records.submit(TxKind.TASK_PLAN, records.plan.encode())
        except grpc.aio.AioRpcError as exc:
            log.warning("plan after version %d refused: %s", version, exc.details())
            return
        print(json.dumps({
            "event": "plan", "version": version, "basis_height": records.plan.basis_height,
            "regrouped": None if records.assignment is None
            else records.assignment.reason.name.lower(),
            "batches": [b for _, b in records.plan.tasks], "groups": records.makespans,
            "time": time.time(),
        }), flush=True)

    async def _follow_ctbc(self, next_height: int) -> None:
        while True:
            try:
                stream = self.ctbc.SubscribeBlocks(
                    chain_pb.SubscribeBlocksRequest(from_height=next_height))
                async for message in stream:
                    block = wire.block_from_proto(message)
                    self._ctbc_height = block.height
                    next_height = block.height + 1
                    if any(tx.kind == TxKind.MODEL_VERSION for tx in block.transactions):
                        await self._on_commit_block(block)
                    if any(tx.kind == TxKind.VALIDATOR_REGISTER for tx in block.transactions):
                        self._tasks.append(asyncio.create_task(self._admit_joiners(block)))
            except grpc.aio.AioRpcError as exc:
                log.warning("CTBC stream broke: %s", exc.details())
                await asyncio.sleep(RETRY_S)
            except Exception:  # a bug must not end following for good: go on after this block
                log.exception("following CTBC failed at height %d", next_height - 1)
                await asyncio.sleep(RETRY_S)

    async def _on_commit_block(self, block: Block) -> None:
        status = await self.ctbc.GetStatus(chain_pb.GetStatusRequest(), timeout=30)
        if status.model_version <= self.version:
            return  # the commit did not apply (stale or refused)
        found = commit_for_version(block, status.model_version)
        if found is None:
            # The replica is already past this block: its latest version was committed in a
            # later block, which brings us to it. The updates this block's commits name are
            # done with either way.
            self.pool.remove([digest for _, commit in commits_in(block)
                              for digest, _ in commit.updates])
            return
        commit_tx, commit = found
        digests = [d for d, _ in commit.updates]
        groups: dict[int, float] = {}
        for digest in digests:
            arrival = self._arrivals.pop(digest, None)
            if arrival is not None:
                group = self.planner.group_of(arrival[0])
                groups[group] = max(groups.get(group, 0.0), arrival[1])
        self._last_c_groups = groups
        self.pool.remove(digests)
        self.metrics.updates_included.inc(len(digests))
        await self._adopt(status.model_version, bytes(status.model_hash), block.height,
                          status.model_height, len(digests))
        if commit_tx.sender == self.signer.id:
            await self._anchor(commit, block.height)

    async def _anchor(self, commit: ModelCommit, ctbc_height: int) -> None:
        payload = Anchor(commit.version, commit.model_hash, ctbc_height).encode()
        try:
            await self.records.submit(TxKind.ANCHOR, payload)
        except grpc.aio.AioRpcError as exc:
            log.warning("anchor of version %d refused: %s", commit.version, exc.details())

    async def _submit(self, stub: chain_grpc.ChainServiceStub, chain_id: str, kind: TxKind,
                      payload: bytes) -> bytes:
        nonce = await admissible_nonce(stub, self.signer.id, timeout=10)
        tx = sign_transaction(self.signer, chain_id, kind, payload, nonce, now_ms())
        await stub.SubmitTx(chain_pb.SubmitTxRequest(tx=wire.tx_to_proto(tx)), timeout=30)
        return tx.hash

    # -- aggregation -----------------------------------------------------------------------------

    def is_aggregator(self) -> bool:
        order = self.planner.serving_nodes(self.config.nodes)
        if self.signer.id not in order:
            return False
        turns = int((time.monotonic() - self._version_time) // self.config.aggregator_timeout_s)
        return order[(self._commit_height + 1 + turns) % len(order)] == self.signer.id

    async def _aggregate_loop(self) -> None:
        while True:
            await asyncio.sleep(AGGREGATE_POLL_S)
            if self._awaiting is not None:
                version, since = self._awaiting
                if version > self.version and time.monotonic() - since < COMMIT_WAIT_S:
                    continue
                self._awaiting = None
            expected = (self.planner.planned_clients()
                        or self.planner.active_clients(self.clients))
            if not self.is_aggregator() or not self.pool.ready(self.version, expected):
                continue
            log.info("aggregating version %d from %d pooled updates (commit height %d)",
                     self.version + 1, len(self.pool), self._commit_height)
            try:
                await self._propose_version()
            except (grpc.aio.AioRpcError, ValueError) as exc:
                # Stale (another node's commit won) or refused: the next turn decides afresh.
                self._awaiting = None
                log.warning("commit of version %d failed: %s", self.version + 1,
                            exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc)

    async def _propose_version(self) -> None:
        assert self.params is not None
        base_version = self.version
        params, commit, digests = self.pool.build(self.params, base_version)
        if not digests:
            return
        if self.config.test_tamper_model:  # test-only: a poisoned model the committee must refuse
            params = params + np.float32(0.01)
        blob = encode_params(params, self.shapes)
        model_hash = await self._put_blob(blob)
        self._remember(model_hash, blob)
        commit = ModelCommit(commit.version, commit.parent_version, model_hash, commit.updates)
        self._awaiting = (commit.version, time.monotonic())
        await self._submit(self.ctbc, self.ctbc_genesis.chain_id, TxKind.MODEL_VERSION,
                           commit.encode())
        log.info("submitted version %d with %d updates", commit.version, len(digests))

    # -- the client API (called by the servicer) ------------------------------------------------

    def task_for(self, client: bytes) -> node_pb.Task:
        if client not in self.clients:
            raise UpdateRefused("unknown_client", f"client {client.hex()[:16]} is not registered "
                                "on CMBC (or its registration is not final yet)")
        if not self.admitted:  # a joiner hands out no task before its admission
            return node_pb.Task(wait_ms=500)
        if self.rules.mode == "fedavg" or self.config.aggregation.policy != "window":
            issued = self._issued.get(client)
            if issued is not None and issued.version == self.version:
                return node_pb.Task(wait_ms=200)  # one task per client and round
        self._task_counter += 1
        self._issued[client] = IssuedTask(self._task_counter, self.version, time.monotonic())
        t = self.config.task
        batches = self.planner.batches_for(client) or t.batches  # the final plan's, if any
        return node_pb.Task(task_id=self._task_counter, version=self.version,
                            model_hash=self.model_hash, batches=batches,
                            batch_size=t.batch_size, learning_rate=t.learning_rate,
                            dataset=self.fl.dataset)

    async def accept_update(self, raw: bytes, relay: bool) -> CheckedUpdate:
        """Checks an update, stores its blob in CTBC and pools it; relays client uploads."""
        assert self.gate is not None
        await self._catch_up_for(raw)
        try:
            checked = self.gate.check(raw, self.version)
        except UpdateRefused as exc:
            self.metrics.updates_refused.labels(exc.code).inc()
            raise
        await self._put_blob(raw)
        issued = self._issued.get(checked.update.client)
        if issued is not None:
            self._arrivals[checked.update.digest] = (checked.update.client,
                                                     time.monotonic() - issued.issued)
        self.pool.add(checked)
        self.metrics.updates_accepted.inc()
        if relay:
            self.traffic["bytes_from_clients"] += len(raw)
            for nid, channel in self._peers.items():
                self._tasks.append(asyncio.create_task(self._relay(nid, channel, raw)))
            self._tasks = [t for t in self._tasks if not t.done()]
        return checked

    async def _catch_up_for(self, raw: bytes) -> None:
        """An update on a version this node has not adopted yet (its CTBC stream lags the
        client's node by a block or two) waits briefly instead of being refused."""
        try:
            base = SignedUpdate.decode(raw).base_version
        except DecodeError:
            return  # the gate refuses it with its reason
        deadline = time.monotonic() + CATCH_UP_S
        while base > self.version and time.monotonic() < deadline:
            self._version_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._version_changed.wait(),
                                       deadline - time.monotonic())

    async def _relay(self, nid: bytes, channel: grpc.aio.Channel, raw: bytes) -> None:
        stub = node_grpc.NodeServiceStub(channel)
        try:
            await stub.RelayUpdate(iter([node_pb.UpdateChunk(data=c) for c in chunks(raw)]),
                                   timeout=30)
            self.traffic["bytes_relayed"] += len(raw)
        except grpc.aio.AioRpcError as exc:
            log.info("relay to %s failed: %s", nid.hex()[:16], exc.details())

    def status(self) -> node_pb.NodeStatus:
        return node_pb.NodeStatus(
            node_id=self.signer.id, version=self.version, accuracy=self.accuracy, loss=self.loss,
            updates_accepted=int(self.metrics.accepted_count()),
            updates_refused=self.metrics.refused_counts(), aggregator=self.is_aggregator(),
            ctbc_height=self._ctbc_height, cmbc_final_height=self._cmbc_final,
            clients=len(self.clients), **self.traffic)
