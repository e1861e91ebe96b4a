"""`dualchain bench paper --experiment mining` (seed 004 Fig. 3): training loss against the number
of rounds K when clients split a fixed compute budget between training and mining.

Seed 004 §III-B: each of K rounds costs ``tau`` local epochs of ``t_T`` and one block of
``t_B``, within a budget ``K (tau t_T + t_B) <= T_sum``, and ``theta = t_T / t_B``. Few rounds
leave many local epochs per round (on non-IID data the clients drift apart); many rounds leave
less time for training (every round pays a block). The seed measures the loss for each K and
finds an optimum per theta; ``learning.mining_split`` plans the rounds, this module measures.

How the times are taken on this machine (one process, one torch thread, as a client trains):

- ``t_T``: the wall time of one local epoch (one pass over a client's part in batches of 64) of
  the testbed's digits model, timed for every client (the median of ``EPOCH_TIMINGS`` epochs
  each) and averaged over the clients.
- ``t_B``: a block takes ``difficulty / hash_rate`` on average. The hash rate is measured with
  the miners' own nonce search (``pow.search_nonce``, one core). For each theta, t_B = t_T /
  theta gives the difficulty a chain would set for that block time here; ``BLOCKS_MINED`` real
  blocks are then mined at that difficulty and their mean time is reported beside the plan
  (the block time is exponential: the mean of a few blocks is only near t_B).

The training is real (torch, FedAvg of the clients' models each round); the time budget is the
seed's model over the measured t_T and t_B, not the wall time of this run (the clients train
one after another in this process). T_sum is ``budget_blocks`` block times (seed §IV-A: t_B =
2, T_sum = 200, i.e. 100 blocks; we default to 40 so the sweep fits ~10 minutes on 2 cores).
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dualchain.learning.mining_split import RoundPlan, max_rounds, plan_round

THETAS: tuple[float, ...] = (0.2, 0.5, 0.8)
BUDGET_BLOCKS = 40  # T_sum / t_B
CLIENTS, ALPHA, BATCH, LR = 5, 0.5, 64, 0.05
EPOCH_TIMINGS, BLOCKS_MINED = 3, 10
# The K of each theta's curve, and its largest feasible K (all of them: ~80 trainings).
K_VALUES = (1, 2, 3, 5, 8, 12, 18, 25)
Progress = Callable[[str], None]


def hash_rate(count: int = 200_000) -> float:
    """Header hashes per second of one core with the miners' nonce search."""
    from dualchain.chain.consensus.pow import search_nonce

    began = time.perf_counter()
    search_nonce(b"mining-experiment", bytes(32), 0, count)
    return count / (time.perf_counter() - began)


def mine_blocks(difficulty: int, blocks: int, seed: int) -> list[float]:
    """Seconds each of ``blocks`` real proof-of-work searches at ``difficulty`` took."""
    from dualchain.chain.consensus.pow import search_nonce, target_for_difficulty

    target = target_for_difficulty(max(difficulty, 1)).to_bytes(32, "big")
    times = []
    for b in range(blocks):
        prefix = hashlib.sha256(f"block/{seed}/{b}".encode()).digest()
        began, start = time.perf_counter(), 0
        while search_nonce(prefix, target, start, 4096) is None:
            start += 4096
        times.append(time.perf_counter() - began)
    return times


def _setup() -> tuple[Any, list[np.ndarray]]:
    from dualchain.learning.datasets import load_dataset
    from dualchain.learning.partition import partition

    data = load_dataset("digits", seed=0)
    return data, partition(data.train_y, CLIENTS, "dirichlet", seed=0, alpha=ALPHA)


def _batches(part: np.ndarray) -> int:
    return -(-len(part) // BATCH)  # one epoch


def epoch_seconds(data: Any, parts: list[np.ndarray]) -> float:
    """t_T: the mean over the clients of the median time of one local epoch."""
    from dualchain.learning.models import build_model
    from dualchain.learning.training import train_local

    model = build_model("digits", 10, 0)
    per_client = []
    for c, part in enumerate(parts):
        x, y = data.train_x[part], data.train_y[part]
        train_local(model, x, y, batches=1, seed=c, lr=LR)  # warm-up: first-call costs
        per_client.append(statistics.median(
            train_local(model, x, y, batches=_batches(part), seed=c, lr=LR).seconds
            for _ in range(EPOCH_TIMINGS)))
    return sum(per_client) / len(per_client)


def federate(data: Any, parts: list[np.ndarray], plan: RoundPlan) -> dict[str, float]:
    """K rounds of ``tau`` local epochs per client and FedAvg; the global model's loss on the
    whole training split (the clients' data together) and its test accuracy."""
    from dualchain.learning.aggregation import Update, fedavg
    from dualchain.learning.models import build_model, get_flat, set_flat
    from dualchain.learning.training import evaluate, train_local

    model = build_model("digits", 10, 0)
    params = get_flat(model)
    for version in range(plan.rounds):
        updates = []
        for c, part in enumerate(parts):
            set_flat(model, params)
            stats = train_local(model, data.train_x[part], data.train_y[part],
                                batches=plan.local_steps(_batches(part)),
                                seed=version * CLIENTS + c, lr=LR)
            updates.append(Update(bytes([c]) * 32, version, stats.samples,
                                  get_flat(model) - params))
        params = fedavg(params, updates, version).params
    set_flat(model, params)
    _, train_loss = evaluate(model, data.train_x, data.train_y)
    accuracy, _ = evaluate(model, data.test_x, data.test_y)
    return {"train_loss": round(float(train_loss), 4), "test_accuracy": round(accuracy, 4)}


def mining_experiment(thetas: Sequence[float] = THETAS, budget_blocks: int = BUDGET_BLOCKS,
                      k_values: Sequence[int] = K_VALUES,
                      progress: Progress = lambda line: None) -> dict[str, Any]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a client process trains
    try:
        data, parts = _setup()
        t_train = epoch_seconds(data, parts)
        rate = hash_rate()
        progress(f"  t_T {t_train * 1000:.1f} ms per epoch, {rate:,.0f} H/s on one core")
        blocks, points = {}, []
        for theta in thetas:
            t_block = t_train / theta
            difficulty = round(t_block * rate)
            mined = mine_blocks(difficulty, BLOCKS_MINED, seed=int(theta * 1000))
            blocks[f"{theta:g}"] = {"t_B_s": round(t_block, 6), "difficulty": difficulty,
                                    "mined_mean_s": round(statistics.mean(mined), 6),
                                    "blocks_mined": len(mined)}
            total = budget_blocks * t_block
            most = max_rounds(total, theta, t_block)
            for k in sorted({*(k for k in k_values if k <= most), most}):
                plan = plan_round(total, k, theta, t_block)
                began = time.monotonic()
                point = {"theta": theta, "rounds": plan.rounds, "epochs": plan.epochs,
                         "mining_share": round(plan.mining_duty, 4),
                         "budget_s": round(total, 6), **federate(data, parts, plan),
                         "seconds": round(time.monotonic() - began, 1)}
                points.append(point)
                progress(f"  theta {theta:g} K {plan.rounds:2d} tau {plan.epochs:3d}: train "
                         f"loss {point['train_loss']:.4f}, accuracy {point['test_accuracy']}")
    finally:
        torch.set_num_threads(threads)
    best = {}
    for theta in thetas:
        mine = [p for p in points if p["theta"] == theta]
        if mine:
            top = min(mine, key=lambda p: p["train_loss"])
            best[f"{theta:g}"] = {"rounds": top["rounds"], "epochs": top["epochs"],
                                  "train_loss": top["train_loss"]}
    return {
        "setting": {"dataset": "digits", "model": "digits CNN (the testbed's)",
                    "clients": CLIENTS, "partition": f"dirichlet alpha {ALPHA}",
                    "batch_size": BATCH, "learning_rate": LR, "budget_blocks": budget_blocks,
                    "thetas": list(thetas), "k_values": list(k_values),
                    "where": "in process, real training; times from the seed's model over "
                             "measured t_T and t_B"},
        "measured": {"t_T_s": round(t_train, 6), "hash_rate_hs": round(rate),
                     "blocks": blocks},
        "points": points,
        "best": best,
    }


def plot(result: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, theta in enumerate(result["setting"]["thetas"]):
        pts = [p for p in result["points"] if p["theta"] == theta]
        ax.plot([p["rounds"] for p in pts], [p["train_loss"] for p in pts], f"C{i}-o",
                markersize=4, label=f"theta {theta:g}")
        best = result["best"].get(f"{theta:g}")
        if best is not None:
            ax.plot([best["rounds"]], [best["train_loss"]], f"C{i}*", markersize=12)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rounds K in the budget")
    ax.set_ylabel("training loss after K rounds")
    ax.set_title(f"digits, {CLIENTS} non-IID clients, T_sum = "
                 f"{result['setting']['budget_blocks']} t_B (seed 004 Fig. 3)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_settings(thetas: Sequence[float], budget_blocks: int) -> None:
    """ValueError with the reason when the sweep cannot run."""
    if not thetas or not all(math.isfinite(t) and t > 0 for t in thetas):
        raise ValueError("every theta must be a positive number")
    if budget_blocks < 2:
        raise ValueError("the budget must be at least 2 block times (a block and an epoch)")


def run_mining(out: Any, thetas: Sequence[float] = THETAS, budget_blocks: int = BUDGET_BLOCKS,
               progress: Progress = lambda line: None) -> dict[str, Any]:
    """Runs the experiment; writes mining.json, mining.csv and mining.png under ``out``."""
    import csv
    import json
    import os
    from pathlib import Path

    check_settings(thetas, budget_blocks)
    started = time.monotonic()
    result = mining_experiment(thetas, budget_blocks, progress=progress)
    document = {"benchmark": "paper/mining", **result,
                "seconds": round(time.monotonic() - started, 1),
                "machine": {"cpus": os.cpu_count()}}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mining.json").write_text(json.dumps(document, indent=2) + "\n")
    with (out / "mining.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result["points"][0]))
        writer.writeheader()
        writer.writerows(result["points"])
    plot(result, out / "mining.png")
    return document
