"""`dualchain up` with plug-ins: the plan carries them to every process (genesis, client configs,
PYTHONPATH), and a wrong path or an unusable plug-in stops it before anything starts: exit 2,
one line."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from dualchain import cli
from dualchain.apps.genesis import Genesis
from dualchain.deploy.up import Testbed, UpConfig

PLUGIN = """
import numpy as np
from torch import nn

def load(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = (x.sum(axis=1) > 0).astype(np.int64)
    return {"train_x": x[:48], "train_y": y[:48], "test_x": x[48:], "test_y": y[48:]}

def make(input_shape, num_classes):
    return nn.Linear(input_shape[0], num_classes)

def mean(global_params, updates, current_version):
    return global_params + sum(u.delta for u in updates) / len(updates)

def short(global_params, updates, current_version):
    return global_params[:1]
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A package of the user's own, ``upplug.lib``, on the launcher's path."""
    root = tmp_path / "userpkgs"
    (root / "upplug").mkdir(parents=True)
    (root / "upplug" / "__init__.py").write_text("")
    (root / "upplug" / "lib.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(root))
    return str(root)


def test_the_plan_hands_the_plugins_to_every_process(tmp_path: Path, package: str) -> None:
    config = UpConfig(nodes=1, clients=2, workdir=str(tmp_path / "tb"),
                      dataset="upplug.lib:load", model="upplug.lib:make",
                      aggregator="upplug.lib:mean")
    tb = Testbed(config, progress=lambda line: None)
    tb.write()
    fl = Genesis.load(tb.workdir / "ctbc-genesis.json").fl
    assert fl is not None and (fl.dataset, fl.model, fl.aggregator) == (
        "upplug.lib:load", "upplug.lib:make", "upplug.lib:mean")
    client = json.loads((tb.workdir / "client-1.json").read_text())
    assert (client["dataset"], client["model"]) == ("upplug.lib:load", "upplug.lib:make")
    assert tb.env["PYTHONPATH"].split(os.pathsep)[0] == package


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "upplug.lib:load", "--model", "upplug.nothere:make"],
     "model 'upplug.nothere:make': cannot import upplug.nothere"),
    (["--model", "upplug.lib"], "model 'upplug.lib': not an import path"),
    (["--dataset", "upplug.lib:load"], "is a plug-in: name its model too (--model)"),
    (["--aggregator", "upplug.lib:short"], "aggregator 'upplug.lib:short' returned (1,)"),
    (["--dataset", "upplug.lib:load", "--model", "upplug.lib:mean"],
     "model 'upplug.lib:mean' raised TypeError"),
])
def test_a_wrong_plugin_is_one_line_and_exit_2(tmp_path: Path, package: str, capsys,
                                               flags: list[str], message: str) -> None:
    assert cli.main(["up", "--workdir", str(tmp_path / "tb"), "--nodes", "1", "--clients", "1",
                     *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dualchain: error: ") and message in err[0], err
    assert not (tmp_path / "tb" / "state.json").exists()  # nothing was started


def test_a_daemon_whose_genesis_names_an_unusable_rule_exits_2_with_one_line(
        tmp_path: Path, package: str, capsys) -> None:
    tb = Testbed(UpConfig(nodes=1, clients=1, workdir=str(tmp_path / "tb"),
                          aggregator="upplug.lib:mean"), progress=lambda line: None)
    tb.write()
    path = tb.workdir / "ctbc-genesis.json"
    genesis = json.loads(path.read_text())
    genesis["fl"]["aggregator"] = "upplug.lib:short"  # loads, but returns a wrong shape
    path.write_text(json.dumps(genesis))
    capsys.readouterr()
    assert cli.main(["chain", "--kind", "ctbc", "--config", str(tb.workdir / "ctbc-0.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dualchain: error: fl.aggregator: aggregator 'upplug.lib:short' returned (1,), "
                   "expected an array of shape (4,)"]
