"""The report of a testbed run: ``report.json``, ``metrics.csv`` and PNG plots.

Per model version: accuracy and loss on the held-out test set (the same on every node, which
evaluates the same committed model), the time since training started, the round time (since
the previous version), C_gmax of seed 000 eq. 14 (per client group, the longest task completion
among the updates the version includes, from handing out the task to receiving the update;
averaged over the groups: one group in the modes without groups), and the updates included and
dropped as too stale.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

COLUMNS = ("version", "elapsed_s", "accuracy", "loss", "round_s", "c_gmax_s", "included",
           "dropped", "ctbc_height")


def write_report(workdir: Path, config: dict[str, Any], versions: dict[int, dict[str, Any]],
                 heights: dict[str, Any], cpu: dict[str, float],
                 client_tasks: dict[str, int], interrupted: bool,
                 plans: list[dict[str, Any]] | None = None,
                 privacy: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = [{k: versions[v].get(k) for k in COLUMNS} for v in sorted(versions)]
    final = rows[-1] if rows else None
    report = {
        "config": config,
        "interrupted": interrupted,
        "versions": rows,
        "final_accuracy": final["accuracy"] if final else None,
        "time_to_final_s": final["elapsed_s"] if final else None,
        "mean_c_gmax_s": round(sum(r["c_gmax_s"] or 0 for r in rows) / len(rows), 3)
        if rows else None,
        "chain_heights": {k: v for k, v in heights.items() if k in ("ctbc", "cmbc")},
        "updates_refused": heights.get("refused"),
        # Model downloads, update uploads and node-to-node relays, as the server nodes counted
        # them (chain traffic not included).
        "bytes_sent": heights.get("bytes_sent"),
        "tasks_per_client": client_tasks,
        "cpu_seconds": cpu,
        # ddmlts: each task plan a node put on CMBC, with its groups' planned makespans and
        # the OLAR optimum for the same measured speeds.
        "plans": plans or [],
        # Local DP: each client's spent epsilon as it last reported it (null: no DP).
        "privacy": privacy,
        # Rewards: each identity's micro-units on CTBC and CMBC at the end (null: none paid).
        "balances": heights.get("balances"),
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with (workdir / "metrics.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if rows:
        _plots(workdir / "plots", rows)
    return report


def _plots(directory: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    directory.mkdir(exist_ok=True)
    versions = [r["version"] for r in rows]
    accuracy = [r["accuracy"] for r in rows]
    for name, x, label in (("accuracy_vs_time.png", [r["elapsed_s"] for r in rows],
                            "seconds since training started"),
                           ("accuracy_vs_version.png", versions, "model version")):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x, accuracy, marker="o", markersize=3)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(directory / name, dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(versions, [r["round_s"] or 0 for r in rows], label="round time")
    ax.plot(versions, [r["c_gmax_s"] or 0 for r in rows], color="C1", marker=".",
            label="C_gmax (longest included task)")
    ax.set_xlabel("model version")
    ax.set_ylabel("seconds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "round_times.png", dpi=100)
    plt.close(fig)
