"""Models: architectures per dataset, seeded initialisation, flat parameter round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualchain.learning.models import (
    build_model,
    get_flat,
    input_shape,
    param_count,
    param_shapes,
    set_flat,
)


@pytest.mark.parametrize(
    ("name", "classes", "count"),
    [
        ("digits", 10, 38_282),
        ("mnist", 10, 1_663_370),
        ("fashion-mnist", 10, 1_663_370),
        ("cifar10", 10, 2_168_362),
        ("cifar100", 100, 2_214_532),
    ],
)
def test_architectures(name: str, classes: int, count: int) -> None:
    model = build_model(name, classes, seed=0)
    assert param_count(model) == count
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert (len(convs), len(linears)) == ((4, 2) if name.startswith("cifar") else (2, 2))
    with torch.no_grad():
        out = model(torch.zeros(2, *input_shape(name)))
    assert out.shape == (2, classes)


def test_same_seed_same_bits_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = get_flat(build_model("digits", 10, seed=5))
    b = get_flat(build_model("digits", 10, seed=5))
    assert torch.equal(torch.rand(3), expected_next)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, get_flat(build_model("digits", 10, seed=6)))


def test_flat_round_trip_and_layout() -> None:
    model = build_model("digits", 10, seed=0)
    shapes = param_shapes(model)
    assert [name for name, _ in shapes] == list(model.state_dict())
    flat = get_flat(model)
    assert flat.dtype == np.float32 and flat.shape == (param_count(model),)
    # The first tensor's values come first, in row-major order.
    first_name, first_shape = shapes[0]
    first = model.state_dict()[first_name].numpy().reshape(-1)
    assert np.array_equal(flat[: first.size], first) and first_shape == (16, 1, 3, 3)

    other = build_model("digits", 10, seed=1)
    set_flat(other, flat)
    assert get_flat(other).tobytes() == flat.tobytes()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


def test_set_flat_rejects_bad_vectors() -> None:
    model = build_model("digits", 10, seed=0)
    flat = get_flat(model)
    with pytest.raises(ValueError, match="has 38282"):
        set_flat(model, flat[:-1])
    with pytest.raises(ValueError, match="float32"):
        set_flat(model, flat.astype(np.float64))


def test_unknown_dataset_and_bad_classes() -> None:
    with pytest.raises(ValueError, match="no model for dataset 'svhn'"):
        build_model("svhn", 10, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        build_model("digits", 1, seed=0)
