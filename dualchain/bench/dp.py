"""`dualchain bench paper --experiment dp` (seed 004 Fig. 2): accuracy against the privacy budget.

For epsilon in {1, 2, 4, 8} and each noise schedule (constant, adaptive), and once without noise
(epsilon inf), federated training on digits **in one process with real torch training**: every
client is a ``client.privacy.ClientPrivacy`` as in the client process (the same settings, the
same ledger refusing an overspend, the same per-task ``plan`` and noisy steps through
``client.privacy.dp_step``), and the global model is FedAvg of the clients' deltas. The adaptive
schedule sees what a client of the testbed sees: the test accuracy of the newest global model,
once per round. No chain, no processes: the live testbed (``tests/integration/test_dp.py``)
confirms one point end to end.

Setting (the one ``tests/unit/learning/test_dp_training.py`` measured): 5 IID clients, a linear
model (650 parameters), ``rounds`` rounds of ``steps`` full-batch noisy steps per client (each
step one release), clip 1, learning rate 2, delta 1e-5; without noise plain SGD (lr 0.1,
momentum 0.9) on the same steps. ``seeds`` noise seeds per point; the JSON gives their mean and
range. ``accounted_epsilon`` is the largest epsilon any client's accountant reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

EPSILONS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, math.inf)
SCHEDULES: tuple[str, ...] = ("constant", "adaptive")
CLIENTS, ROUNDS, STEPS = 5, 10, 5
CLIP, DP_LR, DELTA = 1.0, 2.0, 1e-5


def _linear() -> Any:
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def federate(data: Any, epsilon: float, schedule: str, seed: int, *, clients: int = CLIENTS,
             rounds: int = ROUNDS, steps: int = STEPS) -> dict[str, Any]:
    """One training run; the final accuracy, the accuracy per round, the largest spent epsilon."""
    from dualchain.client.privacy import ClientPrivacy, DpSettings, dp_step
    from dualchain.learning.aggregation import Update, fedavg
    from dualchain.learning.models import get_flat, set_flat
    from dualchain.learning.partition import partition
    from dualchain.learning.training import evaluate, train_local

    parts = partition(data.train_y, clients, "iid", seed=0)
    model = _linear()
    params = get_flat(model)
    private = math.isfinite(epsilon)
    privacy = [ClientPrivacy(DpSettings(epsilon=epsilon, delta=DELTA, clip=CLIP,
                                        schedule=schedule, tasks=rounds,
                                        learning_rate=DP_LR, seed=seed), bytes([c]) * 32)
               for c in range(clients)] if private else []
    curve = []
    for version in range(rounds):
        updates = []
        for c in range(clients):
            set_flat(model, params)
            x, y = data.train_x[parts[c]], data.train_y[parts[c]]
            batch_seed = version * clients + c
            if private:
                dp = privacy[c].plan(steps)  # accounted before any noise is drawn
                samples = 0
                for _ in range(steps):  # full batch: the batch order is the whole part
                    samples += dp_step(model, x, y, dp, DP_LR, batch_seed).samples
            else:
                samples = train_local(model, x, y, batches=steps, seed=batch_seed,
                                      batch_size=len(x), lr=0.1, momentum=0.9).samples
            updates.append(Update(bytes([c]) * 32, version, samples, get_flat(model) - params))
        params = fedavg(params, updates, version).params
        set_flat(model, params)
        accuracy = float(evaluate(model, data.test_x, data.test_y)[0])
        curve.append(accuracy)
        for p in privacy:  # the committed model's accuracy, once per version
            p.observe(version + 1, accuracy)
    return {"final_accuracy": curve[-1], "curve": curve,
            "accounted_epsilon": max((p.spent for p in privacy), default=None)}


def dp_experiment(seeds: int = 3, epsilons: Sequence[float] = EPSILONS,
                  progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    import torch

    from dualchain.learning.datasets import load_dataset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the client process trains
    try:
        data = load_dataset("digits", seed=0)
        points = []
        for epsilon in epsilons:
            for schedule in SCHEDULES if math.isfinite(epsilon) else ("none",):
                began = time.monotonic()
                runs = [federate(data, epsilon, schedule, 1000 + s) for s in range(seeds)]
                finals = [r["final_accuracy"] for r in runs]
                spent = [r["accounted_epsilon"] for r in runs]
                point = {
                    "epsilon": epsilon if math.isfinite(epsilon) else "inf",
                    "schedule": schedule,
                    "final_accuracy": round(float(np.mean(finals)), 4),
                    "final_accuracy_min": round(min(finals), 4),
                    "final_accuracy_max": round(max(finals), 4),
                    "accounted_epsilon": None if spent[0] is None else round(max(spent), 4),
                    "curve": [round(float(a), 4) for a in np.mean([r["curve"] for r in runs],
                                                                  axis=0)],
                    "seconds": round(time.monotonic() - began, 1),
                }
                points.append(point)
                progress(f"  epsilon {point['epsilon']} {schedule}: accuracy "
                         f"{point['final_accuracy']} (spent {point['accounted_epsilon']})")
    finally:
        torch.set_num_threads(threads)
    clean = next((p["final_accuracy"] for p in points if p["schedule"] == "none"), None)
    at8 = [p["final_accuracy"] for p in points if p["epsilon"] == 8.0]
    return {
        "setting": {"clients": CLIENTS, "rounds": ROUNDS, "steps_per_round": STEPS,
                    "clip": CLIP, "learning_rate": DP_LR, "delta": DELTA, "seeds": seeds,
                    "model": "linear 64-10", "dataset": "digits", "partition": "iid",
                    "where": "in process, real training"},
        "points": points,
        "target": {"epsilon_8_within_5_points": None if clean is None or not at8
                   else all(a >= clean - 0.05 for a in at8),
                   "within_budget": all(p["accounted_epsilon"] is None
                                        or p["accounted_epsilon"] <= p["epsilon"]
                                        for p in points)},
    }


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k != "curve"} for p in result["points"]]


def plot(result: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    finite = sorted({p["epsilon"] for p in result["points"] if p["epsilon"] != "inf"})
    for i, schedule in enumerate(SCHEDULES):
        pts = {p["epsilon"]: p["final_accuracy"] for p in result["points"]
               if p["schedule"] == schedule}
        ax.plot(finite, [pts[e] for e in finite], f"C{i}-o", label=f"{schedule} noise")
    clean = [p["final_accuracy"] for p in result["points"] if p["schedule"] == "none"]
    if clean:
        ax.axhline(clean[0], color="grey", linestyle="--", label="no noise")
        ax.set_ylim(top=max(ax.get_ylim()[1], clean[0] + 0.02))  # axhline does not autoscale
    ax.set_xscale("log", base=2)
    ax.set_xticks(finite, [f"{e:g}" for e in finite])
    ax.set_xlabel("privacy budget epsilon (delta 1e-5)")
    ax.set_ylabel("final test accuracy")
    ax.set_title("digits, 5 clients: accuracy against epsilon (seed 004 Fig. 2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_dp(out: Any, seeds: int = 3, progress: Callable[[str], None] = lambda line: None,
           epsilons: Sequence[float] = EPSILONS) -> dict[str, Any]:
    """Runs the experiment; writes dp.json, dp.csv and dp.png under ``out``; the document."""
    import csv
    import json
    import os
    from pathlib import Path

    started = time.monotonic()
    result = dp_experiment(seeds, epsilons, progress)
    document = {"benchmark": "paper/dp", **result,
                "seconds": round(time.monotonic() - started, 1),
                "machine": {"cpus": os.cpu_count()}}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dp.json").write_text(json.dumps(document, indent=2) + "\n")
    table = rows(result)
    with (out / "dp.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    plot(result, out / "dp.png")
    return document
