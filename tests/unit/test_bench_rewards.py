"""The rewards experiment's set-up (bench/rewards.py): the client roles, the unequal data shares
and the two partitions, and the Spearman correlation it reports."""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.bench.rewards import roles, sizes, spearman, split


def test_roles_and_unequal_shares() -> None:
    role_of = roles(10)
    assert role_of == ["honest"] * 6 + ["free_rider"] * 2 + ["malicious"] * 2
    counts = sizes(role_of, 2000)
    assert counts[:6] == sorted(counts[:6]) and counts[0] < counts[5]
    assert len(set(counts[6:])) == 1 and sum(counts) <= 2000
    with pytest.raises(ValueError, match="at least 4 clients"):
        roles(3)


@pytest.mark.parametrize("scheme", ["iid", "non_iid"])
def test_splits_are_disjoint_and_sized(scheme: str) -> None:
    labels = np.repeat(np.arange(10), 100)
    counts = [30, 60, 90, 120, 150, 75]
    parts = split(labels, counts, scheme, seed=3)
    assert [p.size for p in parts] == counts
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size
    mixes = [np.bincount(labels[p], minlength=10) / p.size for p in parts]
    spread = max(float(np.max(m)) for m in mixes)
    assert spread > 0.4 if scheme == "non_iid" else spread < 0.4


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == 0.8
    assert spearman([1, 2, 3], [5, 5, 5]) is None
