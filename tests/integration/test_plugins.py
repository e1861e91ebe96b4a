"""A real testbed (2 server nodes, 2 clients, a miner, all their own processes) running a model,
a dataset and an aggregation rule from a temporary package of the user's own on PYTHONPATH."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from dualchain.apps.genesis import Genesis
from dualchain.deploy.up import Testbed

EVENT_TIMEOUT_S = 180.0

PACKAGE = """
import numpy as np
from torch import nn

def blobs(seed):
    # Two Gaussian blobs in 6 dimensions, split by the seed.
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=200)
    x = rng.normal(size=(200, 6)) + 1.5 * (2 * y[:, None] - 1)
    return {"train_x": x[:160].astype(np.float32), "train_y": y[:160],
            "test_x": x[160:].astype(np.float32), "test_y": y[160:]}

def linear(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_classes))

def keep(global_params, updates, current_version):
    # A rule whose effect shows from outside: the model does not move.
    return global_params.copy()
"""


def test_a_testbed_trains_with_a_users_model_dataset_and_rule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        make_testbed: Callable[..., Testbed]) -> None:
    root = tmp_path / "site"
    (root / "userfl").mkdir(parents=True)
    (root / "userfl" / "__init__.py").write_text("")
    (root / "userfl" / "plug.py").write_text(textwrap.dedent(PACKAGE))
    monkeypatch.setenv("PYTHONPATH", str(root))  # every process the testbed starts inherits it
    monkeypatch.syspath_prepend(str(root))  # and this launcher plans with it
    tb = make_testbed(nodes=2, clients=2, miners=1, rounds=1, batches=5, min_updates=2,
                      dataset="userfl.plug:blobs", model="userfl.plug:linear",
                      aggregator="userfl.plug:keep")
    genesis = Genesis.load(tb.workdir / "ctbc-genesis.json")
    assert genesis.fl is not None and genesis.fl.aggregator == "userfl.plug:keep"
    # Clients trained the plug-in model on the plug-in data...
    task = tb.wait_for(lambda p, e: e["event"] == "task" and e.get("outcome") == "accepted",
                       EVENT_TIMEOUT_S)
    assert task["samples"] > 0
    # ...and version 1 was committed: both committee members re-executed the plug-in rule (the
    # built-in one moves the model, so a replica without the plug-in would refuse the commit),
    # whose result is the unchanged model.
    version = tb.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= 1,
                          EVENT_TIMEOUT_S)
    assert version["included"] >= 1
    assert version["hash"] == genesis.fl.model_hash
