"""Local SGD training, evaluation and the centralised baseline.

Seed 000 §5.1 trains with plain SGD, learning rate 0.01 and batch size 64; those are the defaults.
Mini-batch order comes from a numpy generator seeded by the caller, and the models have no random
layers, so a run is reproducible for a seed (on one machine with one torch thread count: CPU
kernels may split reductions differently across thread counts). Thread counts are the caller's
business; nothing here calls ``torch.set_num_threads``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dualchain.learning.datasets import Dataset
from dualchain.learning.models import build_model


@dataclass(frozen=True)
class TrainStats:
    """What one local training task did."""

    batches: int
    samples: int  # samples processed (a sample seen twice counts twice)
    mean_loss: float  # per-sample training loss averaged over the task
    seconds: float  # wall-clock compute time of the training loop


def _check_data(x: np.ndarray, y: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim < 2:
        raise ValueError("x must be a float32 numpy array of shape (N, ...)")
    if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != (x.shape[0],):
        raise ValueError(f"y must be an int64 numpy array of shape ({x.shape[0]},)")
    if x.shape[0] == 0:
        raise ValueError("no samples to train on")


def batch_order(n: int, batches: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Index arrays of ``batches`` mini-batches over ``n`` samples.

    Passes over the data in a fresh seeded permutation each time; each pass is cut into batches of
    ``batch_size`` with a smaller last batch when ``n`` is not a multiple (like a DataLoader
    without drop_last), and the next pass starts when one is used up.
    """
    if batches < 1 or batch_size < 1 or n < 1:
        raise ValueError(f"need positive batches, batch_size, n; got {batches}, {batch_size}, {n}")
    return _batches(n, batches, batch_size, seed)  # checked above, eagerly, not at first next()


def _batches(n: int, batches: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    done = 0
    while True:
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield perm[start : start + batch_size]
            done += 1
            if done == batches:
                return


def _sgd(model: nn.Module, lr: float, momentum: float) -> torch.optim.Optimizer:
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def _run(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    order: Iterator[np.ndarray],
) -> TrainStats:
    loss_fn = nn.CrossEntropyLoss()
    was_training = model.training
    model.train()
    batches = samples = 0
    loss_sum = 0.0
    start = time.perf_counter()
    try:
        for idx in order:
            # Fancy indexing copies, so from_numpy never aliases the caller's arrays.
            xb = torch.from_numpy(x[idx])
            yb = torch.from_numpy(y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            batches += 1
            samples += len(idx)
            loss_sum += float(loss.item()) * len(idx)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    return TrainStats(batches, samples, mean_loss=loss_sum / samples, seconds=seconds)


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    batches: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 0.01,
    momentum: float = 0.0,
) -> TrainStats:
    """Train ``model`` in place for exactly ``batches`` SGD steps on (x, y).

    A fresh optimizer each call: an FL task starts from the global model with no optimizer state.
    """
    _check_data(x, y)
    optimizer = _sgd(model, lr, momentum)
    return _run(model, optimizer, x, y, batch_order(x.shape[0], batches, batch_size, seed))


def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 1024
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss) of ``model`` on (x, y)."""
    _check_data(x, y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = model.training
    model.eval()
    correct = 0
    loss_sum = 0.0
    try:
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch_size):
                xb = torch.from_numpy(np.array(x[start : start + batch_size]))
                yb = torch.from_numpy(np.array(y[start : start + batch_size]))
                logits = model(xb)
                loss_sum += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
                correct += int((logits.argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    n = x.shape[0]
    return correct / n, loss_sum / n


def train_central(
    dataset: Dataset,
    epochs: int,
    batch_size: int = 64,
    lr: float = 0.01,
    seed: int = 0,
    momentum: float = 0.0,
) -> list[tuple[float, float]]:
    """Centralised baseline: train on the whole training set; test (accuracy, loss) per epoch."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    _check_data(dataset.train_x, dataset.train_y)
    model = build_model(dataset.name, dataset.num_classes, seed)
    optimizer = _sgd(model, lr, momentum)  # one optimizer: momentum carries across epochs
    n = dataset.train_x.shape[0]
    per_epoch = math.ceil(n / batch_size)
    history = []
    for epoch in range(epochs):
        epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
        order = batch_order(n, per_epoch, batch_size, epoch_seed)
        _run(model, optimizer, dataset.train_x, dataset.train_y, order)
        history.append(evaluate(model, dataset.test_x, dataset.test_y))
    return history
