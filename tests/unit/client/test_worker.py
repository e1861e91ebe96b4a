"""The client loop against in-process fakes of the node's NodeService and CMBC's ChainService.

The fakes are plain grpc.aio servers on 127.0.0.1: the node refuses GetTask (UNAUTHENTICATED)
until the fake chain has the client's CLIENT_REGISTER, serves one model per version, checks
uploads like a node would (signature, shape, norm, one update per (client, base version, task))
and bumps its version per accepted update; it can be taken down (every call UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from dualchain.apps.cmbc.payloads import ClientRegistration, StateReport
from dualchain.apps.ctbc.fl import FlRules, SignedUpdate, check_update_signature, decode_delta
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import Transaction, TxKind
from dualchain.chain.verifier import SignatureVerifier
from dualchain.chain.wire import tx_from_proto
from dualchain.client.config import ClientConfig
from dualchain.client.mining import MiningTurns
from dualchain.client.worker import LOCAL_TASK_BIT, ClientWorker, Timing, load_client_data
from dualchain.learning.aggregation import StalenessRule
from dualchain.learning.codec import encode_params, params_hash
from dualchain.learning.models import build_model, get_flat, param_shapes
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from dualchain.proto.v1 import node_pb2 as node_pb
from dualchain.proto.v1 import node_pb2_grpc as node_grpc

ALG = Algorithm.ML_DSA_44
CTBC = "ctbc-test"
CMBC = "cmbc-test"
NODE_ID = bytes(range(32))
BATCHES, BATCH_SIZE = 2, 16
FAST = Timing(backoff_initial_s=0.05, backoff_max_s=0.2, register_poll_max_s=0.1,
              rpc_timeout_s=5.0, transfer_timeout_s=10.0)


class FakeChain(chain_grpc.ChainServiceServicer):
    def __init__(self) -> None:
        self.txs: list[Transaction] = []
        self.calls: list[float] = []

    def of_kind(self, kind: TxKind) -> list[Transaction]:
        return [tx for tx in self.txs if tx.kind == kind]

    async def GetNonce(self, request, context):
        self.calls.append(time.monotonic())
        return chain_pb.GetNonceResponse(
            next_nonce=sum(tx.sender == request.sender for tx in self.txs), admissible=64)

    async def SubmitTx(self, request, context):
        self.calls.append(time.monotonic())
        tx = tx_from_proto(request.tx)
        expected = sum(t.sender == tx.sender for t in self.txs)
        if tx.nonce != expected:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"nonce_gap: nonce {tx.nonce}, expected {expected}")
        self.txs.append(tx)
        return chain_pb.SubmitTxResponse(tx_hash=tx.hash)


    async def GetTxStatus(self, request, context):
        self.calls.append(time.monotonic())
        known = {tx.hash for tx in self.txs}  # every accepted record is final at once here
        return chain_pb.GetTxStatusResponse(statuses=[
            chain_pb.TxStatus(tx_hash=h, state=chain_pb.TX_STATE_COMMITTED, height=1, final=True)
            if h in known else chain_pb.TxStatus(tx_hash=h) for h in request.tx_hashes])


class FakeNode(node_grpc.NodeServiceServicer):
    def __init__(self, chain: FakeChain) -> None:
        self.chain = chain
        model = build_model("digits", 10, seed=0)
        self.shapes = param_shapes(model)
        self.version = 1
        self.blobs: dict[bytes, bytes] = {}
        self._publish(get_flat(model))
        self.rules = FlRules(CTBC, ALG, "fedasync", StalenessRule(), 1.0, 100.0)
        self.verifier = SignatureVerifier()
        self.down = False
        self.fail_next_upload = False
        self.down_at_next_ping = False
        self.waited = False
        self.task_counter = 0
        self.fetches: list[bytes] = []
        self.accepted: list[tuple[SignedUpdate, np.ndarray]] = []
        self.refusals: list[str] = []
        self.seen: set[tuple[bytes, int, int]] = set()
        self.calls: list[float] = []

    def _publish(self, params: np.ndarray) -> None:
        blob = encode_params(params, self.shapes)
        self.params = params
        self.model_hash = params_hash(blob)
        self.blobs[self.model_hash] = blob

    async def _gate(self, context) -> None:
        self.calls.append(time.monotonic())
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down: the fake node is down")

    async def Ping(self, request, context):
        if self.down_at_next_ping:  # gone between two tasks, not during one
            self.down_at_next_ping = False
            self.down = True
        await self._gate(context)
        return node_pb.PingReply(node_id=NODE_ID, version=self.version)

    async def GetTask(self, request, context):
        await self._gate(context)
        if not self.chain.of_kind(TxKind.CLIENT_REGISTER):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "unknown_client: not registered on CMBC")
        if not self.waited:  # the first answer after registration: "ask again later"
            self.waited = True
            return node_pb.Task(wait_ms=20)
        self.task_counter += 1
        return node_pb.Task(task_id=self.task_counter, version=self.version,
                            model_hash=self.model_hash, batches=BATCHES, batch_size=BATCH_SIZE,
                            learning_rate=0.05, dataset="digits")

    async def GetModel(self, request, context):
        await self._gate(context)
        blob = self.blobs.get(bytes(request.model_hash))
        if blob is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown_model: not here")
        self.fetches.append(bytes(request.model_hash))
        for start in range(0, len(blob), 4096):  # many chunks
            yield chain_pb.BlobChunk(data=blob[start : start + 4096])

    async def SubmitUpdate(self, request_iterator, context):
        await self._gate(context)
        raw = b"".join([bytes(c.data) async for c in request_iterator])
        if self.fail_next_upload:  # the connection drops during the upload
            self.fail_next_upload = False
            self.down = True
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down: connection lost")
        update = SignedUpdate.decode(raw)
        check_update_signature(update, self.rules, self.verifier)
        delta = decode_delta(update, self.params.size, self.rules.max_update_norm)
        slot = (update.client, update.base_version, update.task)
        if slot in self.seen:
            self.refusals.append("replay")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "replay: seen")
        self.seen.add(slot)
        self.accepted.append((update, delta))
        self.version += 1
        self._publish((self.params + delta).astype(np.float32))
        return node_pb.SubmitUpdateReply(update_digest=update.digest,
                                         current_version=self.version)


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # the worker's training thread sets 1


def make_client(tmp_path: Path, node_port: int, cmbc_port: int, **changes):
    signer = Signer.generate(ALG)
    signer.save(tmp_path / "client.key")
    data = {
        "key": "client.key", "node": f"127.0.0.1:{node_port}", "node_id": NODE_ID.hex(),
        "cmbc": f"127.0.0.1:{cmbc_port}", "ctbc_chain_id": CTBC, "cmbc_chain_id": CMBC,
        "dataset": "digits", "partition": {"scheme": "iid", "clients": 4, "index": 0},
        "label": "test-device", "max_buffered": 2, **changes,
    }
    config = ClientConfig.from_json(data, base=tmp_path)
    return config, signer


async def start_servers(node_class: type[FakeNode] | None = None
                        ) -> tuple[grpc.aio.Server, FakeChain, FakeNode, int]:
    """One server hosts both fakes; the client is given its port for both addresses."""
    chain = FakeChain()
    node = (node_class or FakeNode)(chain)
    server = grpc.aio.server()
    chain_grpc.add_ChainServiceServicer_to_server(chain, server)
    node_grpc.add_NodeServiceServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, chain, node, port


def check_upload(update: SignedUpdate, delta: np.ndarray, signer: Signer, rules: FlRules,
                 size: int) -> None:
    check_update_signature(update, rules, SignatureVerifier())
    decoded = decode_delta(update, size, rules.max_update_norm)
    np.testing.assert_array_equal(decoded, delta)
    assert update.client == signer.id and update.chain_id == CTBC
    assert np.isfinite(delta).all() and np.abs(delta).sum() > 0


async def test_register_train_report_and_flush_buffered_runs(tmp_path: Path,
                                                             one_torch_thread) -> None:
    server, chain, node, port = await start_servers()
    config, signer = make_client(tmp_path, port, port)
    events: list[dict] = []
    worker = ClientWorker(config, signer, load_client_data(config), emit=events.append,
                          timing=FAST)
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run_until(stop))

    def outcomes(name: str) -> list[dict]:
        return [e for e in events if e["event"] == name]

    try:
        # Phase A: registration, a task trained and accepted, a state report.
        await wait_until(lambda: node.accepted and chain.of_kind(TxKind.STATE_REPORT),
                         "a first accepted update and a state report")
        register = chain.of_kind(TxKind.CLIENT_REGISTER)
        assert len(register) == 1 and register[0].sender == signer.id
        assert ClientRegistration.decode(register[0].payload) == ClientRegistration(
            NODE_ID, "test-device")
        assert register[0].chain_id == CMBC
        assert outcomes("registered")
        for tx in chain.txs:  # every transaction is signed by the client
            assert SignatureVerifier().verify(ALG, tx.public_key, Domain.TRANSACTION,
                                              tx.signing_bytes, tx.signature)
        update, delta = node.accepted[0]
        check_upload(update, delta, signer, node.rules, node.params.size)
        assert (update.base_version, update.task, update.samples) == (1, 1, BATCHES * BATCH_SIZE)
        first_task = outcomes("task")[0]
        assert first_task["outcome"] == "accepted" and first_task["version"] == 1
        report = StateReport.decode(chain.of_kind(TxKind.STATE_REPORT)[0].payload)
        assert report.task == 1 and report.speed_milli > 0 and report.completion_ms > 0
        assert report.failures == 0 and report.disconnected_ms == 0
        assert report.samples == BATCHES * BATCH_SIZE

        # Phase B: the connection drops during an upload. That task starts a buffered run,
        # one more local task continues it (max_buffered 2), probes fail until the node is
        # back; then one update, the average of both, based on the failed task's version.
        accepted_before = len(node.accepted)
        node.fail_next_upload = True
        await wait_until(lambda: len([e for e in outcomes("task")
                                      if e["outcome"] == "buffered"]) >= 2, "two buffered tasks")
        failed = outcomes("task")[-2]
        assert failed["outcome"] == "buffered" and "local" not in failed
        await asyncio.sleep(0.3)  # a few failed probes
        assert len(worker.buffer) == 2 and len(node.accepted) == accepted_before
        node.down = False
        await wait_until(lambda: outcomes("flush"), "the flush of the buffered run")
        flush = outcomes("flush")[0]
        assert flush["outcome"] == "accepted" and flush["updates"] == 2
        assert flush["task"] == failed["task"] and flush["version"] == failed["version"]
        averaged, avg_delta = node.accepted[accepted_before]
        check_upload(averaged, avg_delta, signer, node.rules, node.params.size)
        assert averaged.base_version == failed["version"] and averaged.task == failed["task"]
        assert averaged.samples == 2 * BATCHES * BATCH_SIZE
        assert len(worker.buffer) == 0
        await wait_until(lambda: any(StateReport.decode(tx.payload).disconnected_ms > 0
                                     for tx in chain.of_kind(TxKind.STATE_REPORT)),
                         "a report of the disconnection")

        # Phase C: the node goes away between tasks (Ping fails): the run starts from the
        # client's own last local model and carries a task id of the client's own.
        await wait_until(lambda: len(node.accepted) > accepted_before + 1, "a fresh task")
        node.down_at_next_ping = True
        await wait_until(lambda: len(worker.buffer) == 2, "a second buffered run")
        node.down = False
        await wait_until(lambda: len(outcomes("flush")) == 2, "the second flush")
        second = outcomes("flush")[1]
        assert second["outcome"] == "accepted" and second["task"] & LOCAL_TASK_BIT
        [(averaged, avg_delta)] = [(u, d) for u, d in node.accepted if u.task == second["task"]]
        check_upload(averaged, avg_delta, signer, node.rules, node.params.size)
        # Based on the version of the client's last local model: the last task it uploaded.
        gone = [i for i, e in enumerate(events) if e["event"] == "disconnected"][1]
        last_uploaded = [e for e in events[:gone]
                         if e["event"] == "task" and e["outcome"] == "accepted"][-1]
        assert averaged.base_version == second["version"] == last_uploaded["version"]
        # A model is fetched only when its hash changed: once per version the client trained on.
        assert len(node.fetches) == len(set(node.fetches))
        assert not node.refusals
    finally:
        stop.set()
        await asyncio.wait_for(run, 20)
        await server.stop(grace=None)
    summary = worker.summary()
    assert summary["event"] == "stopped" and summary["flushes"] == 2
    assert summary["disconnections"] >= 2 and summary["accepted"] >= 4


async def test_offline_window_means_no_contact_and_drops_count_as_failures(
        tmp_path: Path, one_torch_thread) -> None:
    server, chain, node, port = await start_servers()
    config, signer = make_client(tmp_path, port, port, offline=[[0, 0.5]], drop_prob=1.0,
                                 max_tasks=1)
    events: list[dict] = []
    started = time.monotonic()
    worker = ClientWorker(config, signer, load_client_data(config), emit=events.append,
                          timing=FAST, started=started)
    try:
        await asyncio.wait_for(worker.run_until(asyncio.Event()), 20)  # ends after max_tasks
    finally:
        await server.stop(grace=None)
    assert min(chain.calls + node.calls) >= started + 0.5  # nothing inside the window
    tasks = [e for e in events if e["event"] == "task"]
    assert [e["outcome"] for e in tasks] == ["dropped"]
    assert not node.accepted
    report = StateReport.decode(chain.of_kind(TxKind.STATE_REPORT)[0].payload)
    assert report.failures == 1
    assert worker.summary()["dropped"] == 1


class _PausedDuringTraining:
    """A client's miner as MiningTurns sees it; records whether training ran while paused."""

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pause(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resume(self) -> None:
        self.paused = False
        self.calls.append("resume")


async def test_a_mining_client_stops_its_miner_while_it_trains(
        tmp_path: Path, one_torch_thread) -> None:
    server, _, _, port = await start_servers()
    config, signer = make_client(tmp_path, port, port, max_tasks=2)
    worker = ClientWorker(config, signer, load_client_data(config), emit=lambda e: None,
                          timing=FAST)
    miner = _PausedDuringTraining()
    worker.mining_turns = MiningTurns(miner, theta=4.0)
    trainer = worker.trainer
    train = trainer.train
    paused_while_training: list[bool] = []

    def recording_train(*args):  # the worker's training, observed in its executor thread
        paused_while_training.append(miner.paused)
        return train(*args)

    trainer.train = recording_train
    try:
        await asyncio.wait_for(worker.run_until(asyncio.Event()), 60)  # ends after max_tasks
    finally:
        await server.stop(grace=None)
    assert paused_while_training == [True, True]
    assert miner.calls == ["pause", "resume", "pause", "resume"] and not miner.paused
    totals = worker.mining_turns.totals()
    assert totals["training_s"] > 0 and totals["mining_s"] == pytest.approx(
        totals["training_s"] / 4.0, abs=0.002)


async def test_the_client_process_prints_events_and_stops_cleanly_on_sigterm(
        tmp_path: Path) -> None:
    server, chain, node, port = await start_servers()
    config, _ = make_client(tmp_path, port, port)
    data = {
        "key": "client.key", "node": config.node, "node_id": NODE_ID.hex(), "cmbc": config.cmbc,
        "ctbc_chain_id": CTBC, "cmbc_chain_id": CMBC, "dataset": "digits",
        "partition": {"scheme": "iid", "clients": 4, "index": 2}, "threads": 1,
    }
    (tmp_path / "client.json").write_text(json.dumps(data))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dualchain.cli", "client", "--config",
        str(tmp_path / "client.json"), "--slowdown", "1.5", "--log-level", "WARNING",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    events: list[dict] = []
    try:
        assert proc.stdout is not None
        while not any(e["event"] == "task" for e in events):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the client exited early"
            events.append(json.loads(line))
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        events += [json.loads(line) for line in rest.decode().splitlines()]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await server.stop(grace=None)
    assert proc.returncode == 0
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["ready", "registered", "task"] and kinds[-1] == "stopped"
    assert events[0]["slowdown"] == 1.5 and events[0]["partition"] == 2
    assert events[0]["samples"] > 0
    assert events[2]["outcome"] == "accepted"
    assert events[-1]["accepted"] == len(node.accepted) >= 1
    assert chain.of_kind(TxKind.CLIENT_REGISTER)[0].sender.hex() == events[0]["id"]
