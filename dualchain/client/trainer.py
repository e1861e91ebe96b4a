"""The client's torch side: its part of the training set and the local trainer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from dualchain.client.config import ClientConfig
from dualchain.client.errors import ClientError
from dualchain.client.privacy import DpStep, dp_step
from dualchain.learning.plugins import PluginError


@dataclass(frozen=True, eq=False)
class ClientData:
    """This client's part of the training set."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int


def load_client_data(config: ClientConfig) -> ClientData:
    """Loads the dataset and keeps partition ``index`` (errors are ClientError)."""
    from dualchain.learning.datasets import DatasetError, load_dataset
    from dualchain.learning.partition import partition

    spec = config.partition
    try:
        dataset = load_dataset(config.dataset, config.data_dir, spec.seed)
        parts = partition(dataset.train_y, spec.clients, spec.scheme, spec.seed,
                          alpha=spec.alpha, shards_per_client=spec.shards_per_client)
    except DatasetError as exc:
        raise ClientError(str(exc), code="dataset") from exc
    except ValueError as exc:
        raise ClientError(f"partition: {exc}", code="partition") from exc
    idx = parts[spec.index]
    return ClientData(x=np.ascontiguousarray(dataset.train_x[idx]),
                      y=np.ascontiguousarray(dataset.train_y[idx]),
                      num_classes=dataset.num_classes)


@dataclass(frozen=True, eq=False)
class TrainResult:
    params: np.ndarray
    batches: int
    samples: int
    mean_loss: float
    compute_s: float
    wall_s: float  # compute plus emulated slowdown


def task_seed(client_seed: int, task_id: int, local_index: int) -> int:
    """The batch-order seed of one task: distinct per client, task and buffered repetition."""
    return int(np.random.SeedSequence([client_seed, task_id, local_index]).generate_state(1)[0])


class LocalTrainer:
    """The torch side: one model, used only on the single training thread."""

    def __init__(self, dataset: str, data: ClientData, slowdown: float = 1.0,
                 model: str = "") -> None:
        from dualchain.learning.models import build_model, param_shapes

        # A container: the parameters come from the node.
        try:
            self.model = build_model(dataset, data.num_classes, seed=0, model=model,
                                     input_shape=data.x.shape[1:])
        except PluginError as exc:
            raise ClientError(str(exc), code="model") from None
        self.shapes = tuple(param_shapes(self.model))
        self.data = data
        self.slowdown = slowdown

    def train(self, start: np.ndarray, batches: int, batch_size: int, lr: float, seed: int,
              cancel: threading.Event, dp: DpStep | None = None) -> TrainResult | None:
        """``batches`` SGD steps from ``start``; None when ``cancel`` is set (task abandoned).

        With ``dp`` the task takes the private shape instead (``client.privacy``): ``dp.steps``
        noisy per-example-clipped steps of ``dp.batch_size`` examples (0: all of them)."""
        from dualchain.learning.models import get_flat, set_flat
        from dualchain.learning.training import batch_order, train_local

        set_flat(self.model, start)
        x, y = self.data.x, self.data.y
        if dp is not None:
            batches, batch_size = dp.steps, dp.batch_size or x.shape[0]
        samples = 0
        loss_sum = compute = 0.0
        began = time.perf_counter()
        for idx in batch_order(x.shape[0], batches, batch_size, seed):
            if cancel.is_set():
                return None
            # One SGD step on exactly this mini-batch (plain SGD keeps no state between steps).
            if dp is not None:
                stats = dp_step(self.model, x[idx], y[idx], dp, lr, seed)
            else:
                stats = train_local(self.model, x[idx], y[idx], batches=1,
                                    batch_size=len(idx), lr=lr, seed=seed)
            samples += stats.samples
            loss_sum += stats.mean_loss * stats.samples
            compute += stats.seconds
            if self.slowdown > 1.0 and cancel.wait((self.slowdown - 1.0) * stats.seconds):
                return None  # emulated slowdown: see ``client.worker``
        return TrainResult(params=get_flat(self.model), batches=batches, samples=samples,
                           mean_loss=loss_sum / max(samples, 1), compute_s=compute,
                           wall_s=time.perf_counter() - began)


def init_training_thread(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
