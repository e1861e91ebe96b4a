"""User plug-ins (docs/plugins.md): a model factory, a dataset loader and an aggregation rule by
import path; every way one can be wrong is a one-line error naming the path."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dualchain.learning.aggregation import Update, load_aggregator, plugin_aggregate
from dualchain.learning.datasets import DatasetError, load_dataset
from dualchain.learning.models import build_model, get_flat
from dualchain.learning.plugins import PluginError, load_object

_names = itertools.count()

GOOD = """
import numpy as np
from torch import nn

def load(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return {"train_x": x[:30], "train_y": y[:30], "test_x": x[30:], "test_y": y[30:]}

def make(input_shape, num_classes):
    return nn.Linear(input_shape[0], num_classes)

def half_sum(global_params, updates, current_version):
    return global_params + 0.5 * sum(u.delta for u in updates)
"""


def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """A fresh module (a new name each time: no import cache) on sys.path; its name."""
    name = f"userplug_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_plugin_dataset_model_and_rule_work_like_the_builtins(tmp_path, monkeypatch) -> None:
    mod = plugin(tmp_path, monkeypatch, GOOD)
    data = load_dataset(f"{mod}:load", None, seed=3)
    assert data.train_x.dtype == np.float32 and data.train_y.dtype == np.int64
    assert data.num_classes == 2 and data.input_shape == (3,) and len(data.test_y) == 10
    again = load_dataset(f"{mod}:load", None, seed=3)
    assert np.array_equal(data.train_x, again.train_x)
    # Version 0 is derived from the seed: the same in every process.
    a = get_flat(build_model(data.name, 2, 7, model=f"{mod}:make", input_shape=(3,)))
    b = get_flat(build_model(data.name, 2, 7, model=f"{mod}:make", input_shape=(3,)))
    c = get_flat(build_model(data.name, 2, 8, model=f"{mod}:make", input_shape=(3,)))
    assert a.size == 8 and np.array_equal(a, b) and not np.array_equal(a, c)
    rule = load_aggregator(f"{mod}:half_sum")
    base = np.zeros(4, np.float32)
    ups = [Update(bytes([i]) * 32, 0, 10, np.full(4, 1.0, np.float32)) for i in range(2)]
    result = plugin_aggregate(f"{mod}:half_sum", rule, base, ups, 0)
    assert result.params.dtype == np.float32 and np.array_equal(result.params, np.ones(4))
    assert result.weights == ((bytes(32), 0.5), (bytes([1]) * 32, 0.5))


@pytest.mark.parametrize("spec, message", [
    ("no_such_pkg.mod:load", "cannot import no_such_pkg.mod"),
    ("json:nothing_here", "json has no nothing_here"),
    ("json.decoder:JSONDecodeError.args", "is a getset_descriptor, not a callable"),
    ("json", "not an import path of the form pkg.module:name"),
    ("json:", "not an import path"),
])
def test_a_wrong_import_path_is_a_one_line_error(spec: str, message: str) -> None:
    with pytest.raises(PluginError, match=message) as caught:
        load_object(spec, "model")
    assert one_line_error(caught).startswith(f"model {spec!r}")


def test_a_module_that_fails_to_import_is_named(tmp_path, monkeypatch) -> None:
    mod = plugin(tmp_path, monkeypatch, "raise RuntimeError('no GPU\\nhere')\n")
    with pytest.raises(PluginError, match=r"importing .* raised RuntimeError: no GPU here") as e:
        load_object(f"{mod}:make", "model")
    one_line_error(e)


@pytest.mark.parametrize("body, message", [
    ("def make(s, n):\n    return 42\n", "returned a int, not a torch.nn.Module"),
    ("from torch import nn\ndef make(s, n):\n    return nn.ReLU()\n", "has no parameters"),
    ("from torch import nn\ndef make(s, n):\n    return nn.Linear(s[0], n + 1)\n",
     r"gave \(2, 3\), expected logits of shape \(2, 2\)"),
    ("def make(s, n):\n    raise ValueError('bad width')\n", "raised ValueError: bad width"),
])
def test_an_unusable_model_is_refused_with_its_reason(tmp_path, monkeypatch, body: str,
                                                     message: str) -> None:
    mod = plugin(tmp_path, monkeypatch, body)
    with pytest.raises(PluginError, match=message) as caught:
        build_model("x", 2, 0, model=f"{mod}:make", input_shape=(3,))
    one_line_error(caught)


@pytest.mark.parametrize("result, message", [
    ("[1, 2]", "returned a list; expected a Dataset or a mapping"),
    ("{'train_x': x, 'train_y': y[:5], 'test_x': x, 'test_y': y}", "must be \\(N, ...\\)"),
    ("{'train_x': x, 'train_y': y + 5, 'test_x': x, 'test_y': y, 'num_classes': 2}",
     "labels must lie in 0..num_classes-1"),
    ("{'train_x': x * np.nan, 'train_y': y, 'test_x': x, 'test_y': y}", "finite numbers"),
    ("{'train_x': x, 'train_y': y * 0.5, 'test_x': x, 'test_y': y}", "integer class labels"),
])
def test_an_unusable_dataset_is_refused_with_its_reason(tmp_path, monkeypatch, result: str,
                                                       message: str) -> None:
    mod = plugin(tmp_path, monkeypatch, f"""
        import numpy as np
        x = np.ones((10, 3), np.float32)
        y = np.arange(10) % 2
        def load(seed):
            return {result}
        """)
    with pytest.raises(DatasetError, match=message) as caught:
        load_dataset(f"{mod}:load", None, 0)
    one_line_error(caught)


@pytest.mark.parametrize("body, message", [
    ("def rule(g, u, v):\n    return g[:2]\n", r"returned \(2,\), expected an array of shape"),
    ("def rule(g, u, v):\n    return 'model'\n", "expected an array of shape"),
    ("import numpy as np\ndef rule(g, u, v):\n    return g * np.nan\n", "NaN or infinite"),
    ("def rule(g, u, v):\n    return 1 / 0\n", "raised ZeroDivisionError"),
])
def test_an_unusable_aggregator_fails_when_loaded(tmp_path, monkeypatch, body: str,
                                                 message: str) -> None:
    mod = plugin(tmp_path, monkeypatch, body)
    with pytest.raises(PluginError, match=message) as caught:
        load_aggregator(f"{mod}:rule")
    assert one_line_error(caught).startswith(f"aggregator '{mod}:rule'")
