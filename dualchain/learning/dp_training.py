"""Local training with per-example privacy (the ``record`` unit of ``privacy``): noisy local steps.

Each local step takes a batch of the client's examples, computes every example's gradient
(``torch.func``: vmap over grad), clips each to norm C (L2 for Gaussian, L1 for Laplace noise),
sums them, adds noise of scale ``z * 2C`` per coordinate (replacing one example moves the clipped
sum by at most 2C), divides by the batch size and takes an SGD step. Each step is one release of
``privacy``'s accounting: the caller records ``steps`` releases at z in its ``PrivacyLedger``
before training. The update then built from the trained model is post-processing of those
releases and needs no further noise. Batches are drawn by the existing seeded ``batch_order``;
no privacy amplification by sampling is claimed, so the accounting holds whatever the batches.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from dualchain.learning.privacy import _check_mechanism, _check_multiplier, noise
from dualchain.learning.training import TrainStats, _check_data, batch_order


def train_local_dp(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
    mechanism: str = "gaussian",
    batch_size: int = 64,
    lr: float = 0.5,
    seed: int = 0,
) -> TrainStats:
    """Train ``model`` in place for ``steps`` noisy steps on (x, y); see the module docstring.

    ``rng`` draws the noise (keep its seed secret), ``seed`` the batch order. The learning rate is
    larger than plain SGD's default because the step averages clipped gradients.
    """
    _check_data(x, y)
    _check_mechanism(mechanism)
    _check_multiplier(noise_multiplier)
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise ValueError(f"clip norm must be positive and finite, got {clip_norm}")
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    names = [name for name, _ in model.named_parameters()]
    scale = noise_multiplier * 2.0 * clip_norm
    p = 1 if mechanism == "laplace" else 2

    def loss_one(params: tuple[torch.Tensor, ...], xi: torch.Tensor, yi: torch.Tensor):
        out = functional_call(model, dict(zip(names, params, strict=True)), (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    batches = samples = 0
    loss_sum = 0.0
    start = time.perf_counter()
    for idx in batch_order(x.shape[0], steps, batch_size, seed):
        xb = torch.from_numpy(x[idx])
        yb = torch.from_numpy(y[idx])
        params = tuple(t.detach() for t in model.parameters())
        grads = per_example(params, xb, yb)
        flat = torch.cat([g.reshape(len(idx), -1) for g in grads], dim=1).double()
        norms = flat.abs().sum(dim=1) if p == 1 else flat.norm(dim=1)
        factors = torch.clamp(clip_norm / norms.clamp_min(1e-12), max=1.0)
        total = (flat * factors.unsqueeze(1)).sum(dim=0)
        total += torch.from_numpy(noise(total.numel(), mechanism, scale, rng))
        step = (total / len(idx)).float()
        with torch.no_grad():
            loss_sum += float(loss_fn(model(xb), yb))
            offset = 0
            for t in model.parameters():
                t -= lr * step[offset : offset + t.numel()].view_as(t)
                offset += t.numel()
        batches += 1
        samples += len(idx)
    seconds = time.perf_counter() - start
    return TrainStats(batches, samples, mean_loss=loss_sum / samples, seconds=seconds)
