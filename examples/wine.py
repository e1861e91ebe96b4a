"""A dataset, a model and an aggregation rule of one's own, plugged into a dualchain testbed.

    dualchain up --dataset examples.wine:load --model examples.wine:mlp \
                 --aggregator examples.wine:median --nodes 2 --clients 4 --rounds 3

Run from the repository root (``dualchain up`` finds a package in the folder it starts in and
hands that folder to every process it launches), or put ``examples``' parent on PYTHONPATH.

- ``load``: scikit-learn's wine recognition data (178 samples, 13 features, 3 classes; shipped
  inside scikit-learn, nothing is downloaded), standardised, split 80/20 by the seed.
- ``mlp``: a 13-32-3 perceptron.
- ``median``: the coordinate-wise median of the clients' deltas added to the global model, a
  rule that shrugs off a minority of wild updates (Yin et al., 2018). Pure numpy on its inputs,
  so every committee member computes the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn


def load(seed: int) -> dict[str, np.ndarray]:
    """The wine data as train and test arrays; the same seed gives the same split."""
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)  # statistics of the whole table: fixed
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    train, test = order[:cut], order[cut:]
    return {"train_x": x[train].astype(np.float32), "train_y": y[train],
            "test_x": x[test].astype(np.float32), "test_y": y[test], "num_classes": 3}


def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A small perceptron for samples of ``input_shape`` (torch's RNG is seeded by dualchain)."""
    (features,) = input_shape
    return nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, num_classes))


def median(global_params: np.ndarray, updates: Sequence, current_version: int) -> np.ndarray:
    """``global + median_i(delta_i)``, coordinate by coordinate."""
    deltas = np.stack([u.delta for u in updates]).astype(np.float64)
    return (global_params.astype(np.float64) + np.median(deltas, axis=0)).astype(np.float32)
