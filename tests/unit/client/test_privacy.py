"""Local differential privacy on the client path: the settings, the per-client budget and its
persisted ledger, the adaptive schedule's accuracy signal, and the real client loop (against the
fakes of test_worker) stopping its uploads when the budget is spent."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from dualchain.apps.cmbc.payloads import StateReport
from dualchain.chain.daemon.config import ConfigError
from dualchain.chain.types import TxKind
from dualchain.client.privacy import BudgetExceeded, ClientPrivacy, DpSettings, DpStep
from dualchain.client.worker import ClientWorker, LocalTrainer, load_client_data
from dualchain.learning.models import get_flat
from dualchain.learning.privacy import accounted_epsilon
from dualchain.proto.v1 import node_pb2 as node_pb
from tests.unit.client.test_worker import (  # noqa: F401 (fixture)
    BATCHES,
    FAST,
    FakeNode,
    make_client,
    one_torch_thread,
    start_servers,
)

CLIENT = b"c" * 32
Z = 2.0


def budget_for(tasks: int, batches: int = BATCHES, z: float = Z) -> float:
    """An epsilon that ``tasks`` tasks of ``batches`` releases at z fit and one more does not."""
    fits = accounted_epsilon({("gaussian", z): tasks * batches}, 1e-5)
    over = accounted_epsilon({("gaussian", z): (tasks + 1) * batches}, 1e-5)
    return (fits + over) / 2


def test_settings_parse_and_refuse_bad_values(tmp_path: Path) -> None:
    s = DpSettings.from_json({"epsilon": 8, "mechanism": "laplace", "schedule": "adaptive",
                              "ledger": "l.json"}, tmp_path)
    assert (s.epsilon, s.delta, s.clip, s.mechanism, s.schedule) == (
        8.0, 1e-5, 1.0, "laplace", "adaptive")
    assert s.ledger == (tmp_path / "l.json").resolve()
    for bad, words in (({}, "needs 'epsilon'"), ({"epsilon": -1}, "positive"),
                       ({"epsilon": 1e6}, "epsilon must be in"),
                       ({"epsilon": 8, "delta": 2}, "delta must be in"),
                       ({"epsilon": 8, "mechanism": "cauchy"}, "not one of"),
                       ({"epsilon": 8, "schedule": "fast"}, "not one of"),
                       ({"epsilon": 8, "noise_multiplier": 1, "schedule": "adaptive"},
                        "needs schedule constant"),
                       ({"epsilon": 8, "tasks": 0}, "at least 1"),
                       ({"epsilon": 8, "steps": 0}, "at least 1"),
                       ({"epsilon": 8, "batch_size": -1}, "at least 0"),
                       ({"epsilon": 8, "learning_rate": 0}, "positive"),
                       ({"epsilon": 8, "colour": 1}, "unknown dp keys"), ([], "must be an object")):
        with pytest.raises(ConfigError) as err:
            DpSettings.from_json(bad, tmp_path)
        assert words in err.value.reason and "\n" not in err.value.reason


def test_the_budget_is_never_exceeded_and_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    settings = DpSettings(epsilon=budget_for(3), noise_multiplier=Z, ledger=tmp_path / "l.json")
    privacy = ClientPrivacy(settings, CLIENT)
    steps = [privacy.plan(BATCHES) for _ in range(3)]
    assert {s.noise_multiplier for s in steps} == {Z}
    # Each task draws its noise from a generator of its own (release index in the seed).
    assert len({s.rng.normal() for s in steps}) == 3
    with pytest.raises(BudgetExceeded):
        privacy.plan(BATCHES)
    assert privacy.exhausted and privacy.ledger.release_count(CLIENT) == 3 * BATCHES
    assert privacy.spent <= settings.epsilon
    # A restarted client reloads its releases: nothing more fits.
    again = ClientPrivacy(settings, CLIENT)
    assert again.ledger.release_count(CLIENT) == 3 * BATCHES
    with pytest.raises(BudgetExceeded):
        again.plan(BATCHES)
    (tmp_path / "l.json").write_text("{")
    with pytest.raises(ConfigError, match="unreadable"):
        ClientPrivacy(settings, CLIENT)


def test_calibrated_schedules_plan_for_tasks_times_the_first_tasks_batches() -> None:
    privacy = ClientPrivacy(DpSettings(epsilon=8, tasks=5, seed=1), CLIENT)
    for _ in range(5):
        privacy.plan(4)
    assert privacy.spent <= 8 and privacy.spent > 7.5  # the calibration spends the budget
    with pytest.raises(BudgetExceeded):
        privacy.plan(4)


def test_adaptive_noise_falls_on_a_plateau_of_the_committed_accuracy() -> None:
    privacy = ClientPrivacy(DpSettings(epsilon=8, tasks=10, schedule="adaptive", seed=1), CLIENT)
    assert privacy.observe(1, 0.5) is None  # no schedule before the first task
    start = privacy.plan(BATCHES).noise_multiplier
    assert privacy.observe(1, 0.50) is None  # the first round: nothing to compare with
    assert privacy.observe(2, 0.70) is None  # improving: the noise stays
    lower = privacy.observe(3, 0.705)  # stalled (under a point): the noise drops
    assert lower is not None and lower < start
    assert privacy.observe(3, 0.705) is None  # one observation per committed version
    assert privacy.plan(BATCHES).noise_multiplier == lower


class StatusNode(FakeNode):
    """The fake node, plus GetNodeStatus: a committed accuracy that stalls."""

    async def GetNodeStatus(self, request, context):
        return node_pb.NodeStatus(node_id=bytes(32), version=self.version, accuracy=0.5)


@pytest.mark.usefixtures("one_torch_thread")
async def test_the_client_stops_uploading_when_its_budget_is_spent(tmp_path: Path) -> None:
    server, chain, node, port = await start_servers()
    budget = budget_for(3)
    config, signer = make_client(tmp_path, port, port, dp={
        "epsilon": budget, "noise_multiplier": Z, "steps": BATCHES, "ledger": "privacy.json"})
    events: list[dict] = []
    worker = ClientWorker(config, signer, load_client_data(config), emit=events.append,
                          timing=FAST)
    try:  # run() ends by itself once the budget is spent
        await asyncio.wait_for(worker.run_until(asyncio.Event()), 60)
    finally:
        await server.stop(grace=None)
    assert len(node.accepted) == 3
    [spent] = [e for e in events if e["event"] == "privacy_budget"]
    assert spent["exhausted"] and spent["releases"] == 3 * BATCHES
    assert spent["epsilon_spent"] <= budget and "would spend" in spent["reason"]
    reports = [StateReport.decode(tx.payload) for tx in chain.of_kind(TxKind.STATE_REPORT)]
    assert reports and all(r.epsilon is not None and 0 < r.epsilon <= budget for r in reports)
    assert reports[-1].epsilon == pytest.approx(worker.privacy.spent, abs=1e-6)
    assert worker.summary()["privacy"]["epsilon_spent"] <= budget
    saved = json.loads((tmp_path / "privacy.json").read_text())["releases"]
    assert saved == [["gaussian", Z, 3 * BATCHES]]


@pytest.mark.usefixtures("one_torch_thread")
def test_a_private_task_takes_the_clients_noisy_full_batch_steps(tmp_path: Path) -> None:
    config, _ = make_client(tmp_path, 1, 1)
    data = load_client_data(config)
    trainer = LocalTrainer("digits", data)
    start = get_flat(trainer.model)
    cancel = threading.Event()
    plain = trainer.train(start, BATCHES, 16, 0.05, 7, cancel)
    privacy = ClientPrivacy(DpSettings(epsilon=8, noise_multiplier=Z, clip=0.5, steps=3, seed=3),
                            CLIENT)
    # The node's task (BATCHES batches of 16) gives way to 3 noisy steps on every example.
    noisy = trainer.train(start, BATCHES, 16, 0.05, 7, cancel, privacy.plan())
    assert plain is not None and noisy is not None
    assert (noisy.batches, noisy.samples) == (3, 3 * len(data.y))
    assert privacy.ledger.release_count(CLIENT) == 3
    assert not np.allclose(plain.params, noisy.params)
    # Without noise the same clipped steps move the model by at most lr * clip per step.
    quiet = DpStep(1e-9, 0.5, "gaussian", np.random.default_rng(0), 0.5, steps=3, batch_size=16)
    moved = trainer.train(start, BATCHES, 64, 0.05, 7, cancel, quiet)
    assert moved is not None and (moved.batches, moved.samples) == (3, 48)
    assert np.linalg.norm(moved.params - start) <= 3 * 0.5 * 0.5 + 1e-6


@pytest.mark.usefixtures("one_torch_thread")
async def test_adaptive_client_reads_the_committed_accuracy(tmp_path: Path) -> None:
    server, _, _, port = await start_servers(StatusNode)
    config, signer = make_client(tmp_path, port, port, max_tasks=4, dp={
        "epsilon": 8, "schedule": "adaptive", "tasks": 4})
    events: list[dict] = []
    worker = ClientWorker(config, signer, load_client_data(config), emit=events.append,
                          timing=FAST)
    try:
        await asyncio.wait_for(worker.run_until(asyncio.Event()), 60)
    finally:
        await server.stop(grace=None)
    noise = [e for e in events if e["event"] == "privacy_noise"]
    assert noise, "the stalled accuracy lowered the noise"
    zs = [e["noise_multiplier"] for e in noise]
    assert zs == sorted(zs, reverse=True) and all(e["accuracy"] == 0.5 for e in noise)
    assert worker.privacy.spent <= 8
