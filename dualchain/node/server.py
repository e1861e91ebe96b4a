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

The parts are mixins of one job each: ``cmbc_follow`` (registrations, plans), ``joins`` (the
two-stage join of seed 000 §3.1), ``ctbc_follow`` (committed versions, anchors), ``aggregator``
(whose turn, the commit) and ``client_api`` (what the servicer calls); this module holds the
state they share, start-up and the model store.
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
from typing import Any

import grpc
import numpy as np

from dualchain.apps.cmbc.payloads import NodeJoinRequest
from dualchain.apps.ctbc.fl import FlRules, fl_rules
from dualchain.apps.genesis import Genesis
from dualchain.chain import wire
from dualchain.chain.clock import now_ms
from dualchain.chain.daemon.config import ConfigError
from dualchain.chain.identity import Signer
from dualchain.chain.outbox import Outbox
from dualchain.chain.rpc import channel_options, open_channel
from dualchain.chain.senders import admissible_nonce
from dualchain.chain.types import TxKind
from dualchain.chain.validation import sign_transaction
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.codec import decode_params, encode_params
from dualchain.node.aggregator import Aggregator
from dualchain.node.client_api import Arrival, ClientApi, IssuedTask
from dualchain.node.cmbc_follow import CmbcFollower
from dualchain.node.config import NodeConfig
from dualchain.node.ctbc_follow import CtbcFollower, commit_for_version, commits_in
from dualchain.node.gate import UpdateGate, UpdateRefused
from dualchain.node.intake import UploadIntake
from dualchain.node.joins import Joins
from dualchain.node.metrics import NodeMetrics
from dualchain.node.planner import Planner
from dualchain.node.pool import UpdatePool
from dualchain.node.standing import ClientStanding
from dualchain.node.uploads import CHUNK, upload_chunks
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc

# Re-exported: service.py and the tests import these from here.
__all__ = ["CHUNK", "ServerNode", "commit_for_version", "commits_in"]

log = logging.getLogger("dualchain.node")

MODELS_KEPT = 16
DAEMON_WAIT_S = 120.0  # a node started with its daemons waits this long for them to listen
CMBC_CATCH_UP_S = 60.0
RECORDS_FOLLOW_UP_S = 2.0  # how often the node asks CMBC about its records not final yet


class ServerNode(CmbcFollower, Joins, CtbcFollower, Aggregator, ClientApi):
    """One server node: the state its parts share (set up here), start-up and the model store;
    each job is a mixin of its own module (see the module docstring)."""

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
        self.intake: UploadIntake | None = None  # uploads admitted by their first chunk
        self.pool = UpdatePool(self.rules, config.aggregation)
        self.standing = ClientStanding()  # the chain's client records (standing.py)
        self._issued: dict[bytes, IssuedTask] = {}
        self._arrivals: dict[bytes, Arrival] = {}  # update digest -> Arrival (own clients)
        self._task_counter = 0
        self._commit_height = 0  # CTBC height that committed the current version
        # Per group, the longest completion among the last version's updates from this node's
        # clients (the launcher merges the nodes' figures into eq. 14's C_gmax).
        self._last_c_groups: dict[int, float] = {}
        self._last_update: dict[str, Any] | None = None  # the last version's latest Arrival
        # Single-chain mode: "cmbc" and its genesis name the CTBC daemon and genesis.
        self.planner = Planner(self.cmbc_genesis.sched,
                               plans=config.aggregation.policy == "plan",
                               single_chain=self.cmbc_genesis.single_chain,
                               block_reward=self.cmbc_genesis.pow.block_reward)
        self._planning = asyncio.Lock()
        self._version_time = time.monotonic()
        self._awaiting: tuple[int, float] | None = None  # (version submitted, when)
        self._version_changed = asyncio.Event()
        self._ctbc_height = 0
        self.excluded_nodes: set[bytes] = set()  # CTBC's: they may not commit model versions
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
        self._refresh_standing(status)  # a restarted node refuses an excluded client at once
        if status.model_version > 0:  # a restart mid-run: serve the newest version at once
            await self._adopt(status.model_version, bytes(status.model_hash), status.height,
                              status.model_height)
        self._ctbc_height = status.height
        self._note_excluded(status)
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

        from dualchain.learning.datasets import DatasetError, load_dataset
        from dualchain.learning.models import build_model, get_flat, param_shapes
        from dualchain.learning.plugins import PluginError

        torch.set_num_threads(1)
        try:
            dataset = load_dataset(self.fl.dataset, self.config.data_dir, seed=0)
            self._model = build_model(dataset.name, dataset.num_classes, self.fl.model_seed,
                                      model=self.fl.model, input_shape=dataset.input_shape)
        except (DatasetError, PluginError) as exc:  # one line, exit 2 (not a traceback)
            raise ConfigError(str(exc)) from None
        self.shapes = param_shapes(self._model)
        flat = get_flat(self._model)
        blob = encode_params(flat, self.shapes)
        if hashlib.sha256(blob).digest() != self.model_hash:
            raise ConfigError("the genesis model hash does not match the model this "
                              "node derives from the genesis seed (different code or dataset?)")
        self._remember(self.model_hash, blob)
        self.params = flat
        self._test = (dataset.test_x, dataset.test_y)
        self.gate = UpdateGate(self.rules, self.verifier, self.clients.get, flat.size,
                               self.standing.excluded)
        self.intake = UploadIntake(self.gate, len(blob))
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
                     included: int = 0, rewarded: int = 0) -> None:
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
        self._version_time, adopted = time.monotonic(), time.time()
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
            "ctbc_height": height, "included": included, "rewarded": rewarded,
            "dropped": len(dropped),
            "round_s": round(self._version_time - previous, 3), "time": time.time(),
            "adopted": round(adopted, 3), "last_update": self._last_update,
            "c_groups_s": {str(g): round(t, 3) for g, t in sorted(self._last_c_groups.items())},
        }), flush=True)

    async def _submit(self, stub: chain_grpc.ChainServiceStub, chain_id: str, kind: TxKind,
                      payload: bytes) -> bytes:
        nonce = await admissible_nonce(stub, self.signer.id, timeout=10)
        tx = sign_transaction(self.signer, chain_id, kind, payload, nonce, now_ms())
        await stub.SubmitTx(chain_pb.SubmitTxRequest(tx=wire.tx_to_proto(tx)), timeout=30)
        return tx.hash
