"""`dualchain bench central`: the same model trained centrally on the same split, the baseline FL
accuracy is compared with (the whole training set in one process, test accuracy per epoch)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def central_benchmark(dataset: str, data_dir: Path | None, epochs: int, lr: float,
                      batch_size: int = 64, seed: int = 0, threads: int = 1) -> dict:
    import torch

    from dualchain.learning.datasets import load_dataset
    from dualchain.learning.training import train_central

    torch.set_num_threads(threads)
    data = load_dataset(dataset, data_dir, seed=0)  # the split the testbed's nodes evaluate on
    began = time.perf_counter()
    per_epoch = train_central(data, epochs, batch_size=batch_size, lr=lr, seed=seed)
    seconds = time.perf_counter() - began
    return {
        "benchmark": "central",
        "dataset": dataset,
        "train_samples": int(data.train_x.shape[0]),
        "test_samples": int(data.test_x.shape[0]),
        "epochs": epochs,
        "learning_rate": lr,
        "batch_size": batch_size,
        "accuracy_per_epoch": [round(a, 4) for a, _ in per_epoch],
        "best_accuracy": round(max(a for a, _ in per_epoch), 4),
        "final_accuracy": round(per_epoch[-1][0], 4),
        "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads},
    }
