"""Client partitions: determinism, disjointness, coverage, non-empty clients, label skew."""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.learning.partition import SCHEMES, partition

# Sorted by class on purpose: partitioning must not assume a shuffled input.
LABELS = np.repeat(np.arange(10), 50)


def check_valid(parts: list[np.ndarray], n: int, clients: int) -> None:
    assert len(parts) == clients
    assert all(p.dtype == np.int64 and p.size > 0 for p in parts)
    assert all(np.array_equal(p, np.sort(p)) for p in parts)
    joined = np.concatenate(parts)
    assert joined.size == np.unique(joined).size  # each index at most once
    assert np.array_equal(np.sort(joined), np.arange(n))  # and in fact exactly once


@pytest.mark.parametrize("scheme", SCHEMES)
def test_valid_and_deterministic(scheme: str) -> None:
    a = partition(LABELS, 8, scheme, seed=7)
    b = partition(LABELS, 8, scheme, seed=7)
    c = partition(LABELS, 8, scheme, seed=8)
    check_valid(a, LABELS.size, 8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_and_mixing() -> None:
    parts = partition(LABELS, 7, "iid", seed=0)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # Each IID client sees almost every class even though the input is sorted by class.
    assert all(np.unique(LABELS[p]).size >= 8 for p in parts)


def test_shards_give_few_classes() -> None:
    parts = partition(LABELS, 10, "shards", seed=0, shards_per_client=2)
    assert all(p.size == 50 for p in parts)
    assert all(np.unique(LABELS[p]).size <= 2 for p in parts)


def test_dirichlet_skew_follows_alpha() -> None:
    def mean_classes(alpha: float) -> float:
        parts = partition(LABELS, 10, "dirichlet", seed=1, alpha=alpha)
        return float(np.mean([np.unique(LABELS[p]).size for p in parts]))

    assert mean_classes(0.05) < 4 < 9 < mean_classes(100.0)


@pytest.mark.parametrize("seed", range(5))
def test_dirichlet_never_leaves_a_client_empty(seed: int) -> None:
    # Tiny alpha with as many clients as samples: empty draws are certain and must be repaired.
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    check_valid(partition(labels, 8, "dirichlet", seed=seed, alpha=0.01), 8, 8)
    check_valid(partition(LABELS, 40, "dirichlet", seed=seed, alpha=0.01), LABELS.size, 40)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clients": 0}, "at least 1"),
        ({"clients": 501}, "cannot give each of 501"),
        ({"scheme": "zipf"}, "known: iid, dirichlet, shards"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha must be positive"),
        ({"scheme": "shards", "shards_per_client": 0}, "at least 1"),
        ({"scheme": "shards", "clients": 300}, "300 x 2 non-empty shards"),
        ({"labels": LABELS.astype(np.float32)}, "integer"),
        ({"labels": LABELS.reshape(50, 10)}, "1-D"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"labels": LABELS, "clients": 4, "scheme": "iid", "seed": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        partition(**args)  # type: ignore[arg-type]
