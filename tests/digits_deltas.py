"""Real client updates for detector tests: digits clients training a few SGD steps from one model.

Deltas come from the project's own model, partition and training code (real torch on real data),
so the detectors are tested on updates with the layer structure and spread of the real system.
A pre-trained start model (``warmup`` steps centrally) makes the honest deltas agree more, as they
do after a few versions of FL. Cached per argument tuple: several tests share one set.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dualchain.learning.datasets import Dataset, load_dataset
from dualchain.learning.models import build_model, get_flat, set_flat
from dualchain.learning.partition import partition
from dualchain.learning.training import train_local


@functools.lru_cache(maxsize=2)
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


@functools.lru_cache(maxsize=8)
def start_model(warmup: int = 30) -> np.ndarray:
    """Flat parameters of the digits model after ``warmup`` central SGD steps (momentum 0.9)."""
    data = digits()
    model = build_model("digits", data.num_classes, seed=0)
    if warmup:
        train_local(model, data.train_x, data.train_y, batches=warmup, seed=99, momentum=0.9)
    return get_flat(model)


@functools.lru_cache(maxsize=8)
def client_deltas(
    clients: int = 10,
    batches: int = 5,
    warmup: int = 30,
    scheme: str = "iid",
    round_seed: int = 0,
    flip_labels: bool = False,
) -> tuple[np.ndarray, ...]:
    """One float32 delta per client: ``batches`` SGD steps (lr 0.01, momentum 0.9) on its part,
    with labels ``y -> 9 - y`` when ``flip_labels`` (every client: pick the attackers from it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared 2-core machine: threads only contend
    try:
        return _train(clients, batches, warmup, scheme, round_seed, flip_labels)
    finally:
        torch.set_num_threads(threads)


def _train(
    clients: int, batches: int, warmup: int, scheme: str, round_seed: int, flip: bool
) -> tuple[np.ndarray, ...]:
    data = digits()
    parts = partition(data.train_y, clients, scheme, seed=0)
    base = start_model(warmup)
    model = build_model("digits", data.num_classes, seed=0)
    out = []
    for c, idx in enumerate(parts):
        set_flat(model, base.copy())
        labels = data.train_y[idx]
        train_local(
            model,
            data.train_x[idx],
            (data.num_classes - 1 - labels) if flip else labels,
            batches=batches,
            seed=1000 * round_seed + c,
            momentum=0.9,
        )
        delta = (get_flat(model) - base).astype(np.float32)
        delta.setflags(write=False)
        out.append(delta)
    return tuple(out)
