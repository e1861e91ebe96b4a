"""Local training and evaluation: exact batch counts, seeded determinism, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualchain.learning.models import build_model, get_flat
from dualchain.learning.training import batch_order, evaluate, train_local


def toy_data(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, n)


def test_batch_order_cycles_with_fresh_permutations() -> None:
    batches = list(batch_order(10, 7, 4, seed=3))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]
    first_pass = np.concatenate(batches[:3])
    second_pass = np.concatenate(batches[3:6])
    assert sorted(first_pass) == sorted(second_pass) == list(range(10))
    assert not np.array_equal(first_pass, second_pass)
    again = list(batch_order(10, 7, 4, seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    with pytest.raises(ValueError):
        batch_order(10, 0, 4, seed=0)


def test_train_local_runs_exactly_the_batches_and_is_deterministic() -> None:
    x, y = toy_data()
    flats = []
    for _ in range(2):
        model = build_model("digits", 10, seed=1)
        stats = train_local(model, x, y, batches=5, batch_size=32, seed=9)
        assert stats.batches == 5 and stats.samples == 32 + 32 + 32 + 4 + 32
        assert np.isfinite(stats.mean_loss) and stats.seconds >= 0
        flats.append(get_flat(model))
    assert flats[0].tobytes() == flats[1].tobytes()
    other = build_model("digits", 10, seed=1)
    train_local(other, x, y, batches=5, batch_size=32, seed=10)
    assert not np.array_equal(get_flat(other), flats[0])
    assert not np.array_equal(flats[0], get_flat(build_model("digits", 10, seed=1)))


def test_train_local_leaves_inputs_and_mode_alone() -> None:
    x, y = toy_data()
    x_before = x.copy()
    model = build_model("digits", 10, seed=1).eval()
    train_local(model, x, y, batches=2, seed=0, momentum=0.9)
    assert np.array_equal(x, x_before) and not model.training


def test_evaluate_counts_correct_predictions() -> None:
    x, y = toy_data(50)
    model = build_model("digits", 10, seed=2)
    with torch.no_grad():
        predictions = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    acc, loss = evaluate(model, x, y, batch_size=7)
    assert acc == pytest.approx(float(np.mean(predictions == y)))
    assert loss > 0 and evaluate(model, x, y) == pytest.approx((acc, loss))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "learning rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"batches": 0}, "positive"),
        ({"y": np.zeros(3, np.int64)}, "shape"),
        ({"x": np.zeros((100, 1, 8, 8))}, "float32"),
    ],
)
def test_train_local_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    x, y = toy_data()
    args: dict[str, object] = {"x": x, "y": y, "batches": 1, "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train_local(build_model("digits", 10, seed=0), **args)  # type: ignore[arg-type]
