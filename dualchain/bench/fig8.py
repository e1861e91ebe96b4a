"""`dualchain bench paper --experiment fig8 --nodes 4,8,16`: seed 000 Fig. 8, communication
time per model version against the number of server nodes, with and without CMBC.

Per N: a real ddmlts testbed (``deploy.up.Testbed``: N server nodes, each with its CTBC daemon
and, with the dual chain, its CMBC daemon; ``clients_per_node`` clients each; one miner) run
twice, dual chain and ``--chains single`` (management transactions on CTBC, no CMBC).

**Communication time of version v** is the round's wall time less the training on its critical
path, everything from the processes' own event lines (one machine, one clock):

- the round runs from ``adopted(v-1)`` to ``adopted(v)``, the first time any node took the
  version (the ``adopted`` field of the nodes' version events, taken before evaluation, which
  runs beside the next round);
- its critical task is the update the version waited for last: of the updates the version
  includes, the one received last (each node reports its own clients' latest as
  ``last_update``; the latest over the nodes);
- the training on the critical path is that task's training wall time (``train_s`` of the
  client's task event, emulated slowdown included, ending at ``trained_at``), clipped to the
  round (a stale update may have begun training before it).

communication_s = round_s - training_s. It holds, on the critical path, the task hand-out and
model download (``to_training_s``: from ``adopted(v-1)`` to the training's start), the upload,
signature and gate checks (``upload_s``: training end to the node's receipt), and the wait for
the relays, the aggregation, the CTBC commit and its propagation (``commit_s``: receipt to
``adopted(v)``): client uploads, chain interactions and DDMLTS operations, as seed 000 counts
them. Only versions every node reported are counted (the run stops at the last one), after
``warmup`` versions (version 1's round holds the registrations and the first plan).

Each testbed's workdir is kept under ``OUT/testbeds/CHAINS-N`` (logs and report.json; not
the chains' data). The machine is measured beside: the system-wide CPU busy share (psutil,
1-s samples) and the least available memory over the counted rounds.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from dualchain.deploy.up import Testbed, UpConfig, UpError

Event = dict[str, Any]
Progress = Callable[[str], None]
FIELDS = ("round_s", "training_s", "communication_s", "to_training_s", "upload_s", "commit_s")


def version_rounds(history: Iterable[tuple[str, Event]], nodes: int) -> list[dict[str, Any]]:
    """Per version (from 2 on), its round split as the module docstring defines, from the
    testbed's (process name, event) lines; ``communication_s`` None where a piece is missing."""
    client_ids: dict[str, str] = {}
    trained: dict[tuple[str, int], Event] = {}
    adopted: dict[int, float] = {}
    reports: dict[int, int] = {}
    last: dict[int, Event] = {}
    events = list(history)
    for name, event in events:
        if event.get("event") == "ready" and name.startswith("client-"):
            client_ids[name] = event["id"]
    for name, event in events:
        kind = event.get("event")
        if kind == "task" and "trained_at" in event and name in client_ids:
            trained[(client_ids[name], event["task"])] = event
        elif kind == "version" and "adopted" in event:
            v = event["version"]
            adopted[v] = min(adopted.get(v, event["adopted"]), event["adopted"])
            reports[v] = reports.get(v, 0) + 1
            update = event.get("last_update")
            if update and (v not in last or update["arrived"] > last[v]["arrived"]):
                last[v] = update
    rows = []
    for v in sorted(adopted):
        if v - 1 not in adopted:
            continue
        start, end = adopted[v - 1], adopted[v]
        row: dict[str, Any] = {"version": v, "adopted": end, "round_s": round(end - start, 3),
                               "nodes_reported": reports[v], "complete": reports[v] >= nodes,
                               **{k: None for k in FIELDS[1:]}}
        update = last.get(v)
        task = trained.get((update["client"], update["task"])) if update else None
        if task is not None:
            began = task["trained_at"] - task["train_s"]
            training = max(0.0, min(task["trained_at"], end) - max(began, start))
            row.update(training_s=round(training, 3),
                       communication_s=round(end - start - training, 3),
                       to_training_s=round(max(0.0, began - start), 3),
                       upload_s=round(update["arrived"] - task["trained_at"], 3),
                       commit_s=round(end - update["arrived"], 3))
        rows.append(row)
    return rows


def _p90(values: Sequence[float]) -> float:
    """Nearest rank: the smallest value with at least 90% of them at or below it (the
    largest of fewer than ten)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def summarise(rows: Sequence[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Median and p90 (nearest rank) of the counted versions: complete, measured and after
    ``warmup``."""
    counted = [r for r in rows if r["complete"] and r["communication_s"] is not None
               and r["version"] > warmup]
    out: dict[str, Any] = {"versions": len(counted)}
    for name in FIELDS:
        values = [r[name] for r in counted]
        out[f"{name}_median"] = round(statistics.median(values), 3) if values else None
    comm = [r["communication_s"] for r in counted]
    out["communication_s_p90"] = round(_p90(comm), 3) if comm else None
    return out


class MachineSampler:
    """System-wide CPU busy percent every ``period`` s and available memory, in a thread."""

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self.samples: list[tuple[float, float, int]] = []  # (unix time, cpu %, available B)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fig8-sampler", daemon=True)

    def __enter__(self) -> MachineSampler:
        psutil.cpu_percent(None)  # the first call only starts the interval
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.samples.append((time.time(), psutil.cpu_percent(None),
                                 psutil.virtual_memory().available))

    def window(self, start: float, end: float) -> dict[str, Any]:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {"machine_busy_percent": None, "memory_available_min_gb": None}
        return {"machine_busy_percent": round(statistics.fmean(s[1] for s in inside), 1),
                "memory_available_min_gb": round(min(s[2] for s in inside) / 2**30, 2)}


def run_point(base: UpConfig, nodes: int, chains: str, clients_per_node: int, warmup: int,
              workdir: Path, progress: Progress) -> dict[str, Any]:
    config = replace(base, mode="ddmlts", nodes=nodes, clients=nodes * clients_per_node,
                     chains=chains, miners=max(base.miners, 1), workdir=str(workdir))
    testbed = Testbed(config, progress=progress)
    error = None
    with MachineSampler() as sampler:
        try:
            testbed.run()
        except UpError as exc:  # e.g. not ready in time: the point says so, the sweep goes on
            error = str(exc)  # (run() stopped every process it started)
    if any(p.child is not None for p in testbed.procs):  # (not a busy workdir it refused)
        # Logs and report.json stay; the chains' files (33 MB a replica at 24 nodes) do not.
        shutil.rmtree(workdir / "data", ignore_errors=True)
    rows = version_rounds(((p.name, e) for p, e in testbed.history), nodes)
    point: dict[str, Any] = {"nodes": nodes, "chains": chains, "clients": config.clients,
                             "processes": len(testbed.procs), **summarise(rows, warmup)}
    counted = [r for r in rows if r["complete"] and r["version"] > warmup]
    if counted:
        point.update(sampler.window(counted[0]["adopted"] - counted[0]["round_s"],
                                    counted[-1]["adopted"]))
    if error is not None:
        point["error"] = error
    point["per_version"] = rows
    return point


def fig8_sweep(base: UpConfig, nodes: Sequence[int], clients_per_node: int, warmup: int,
               out: Path, progress: Progress,
               chains: Sequence[str] = ("dual", "single")) -> dict[str, Any]:
    started = time.monotonic()
    document: dict[str, Any] = {
        "benchmark": "paper/fig8",
        "figure": "communication time per model version against nodes",
        "definition": "round wall time (first adoption of v-1 to first adoption of v) less "
        "the training wall time of the version's last-received included update, clipped to "
        "the round",
        "dataset": base.dataset, "clients_per_node": clients_per_node, "rounds": base.rounds,
        "warmup_versions": warmup, "stragglers": base.stragglers, "batches_per_task":
        base.batches, "points": [], "seconds": 0.0,
        "machine": {"cpus": os.cpu_count(),
                    "note": "every process of every node and client on this machine"},
    }
    for n in nodes:
        for kind in chains:
            progress(f"N={n}, {kind} chain: ddmlts testbed, {n * clients_per_node} clients, "
                     f"{base.rounds} versions")
            # Each testbed's workdir (logs, report.json) stays for a look after.
            point = run_point(base, n, kind, clients_per_node, warmup,
                              out / "testbeds" / f"{kind}-{n}", progress)
            document["points"].append(point)
            document["seconds"] = round(time.monotonic() - started, 1)
            write(document, out)  # after each point: a cut-short sweep keeps its points
            progress(f"N={n}, {kind}: " + json.dumps(
                {k: v for k, v in point.items() if k != "per_version"}))
    return document


def write(document: dict[str, Any], out: Path) -> None:
    """fig8.json (with each point's versions), fig8.csv (the points) and fig8.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "fig8.json").write_text(json.dumps(document, indent=2) + "\n")
    rows = [{k: v for k, v in p.items() if k != "per_version"} for p in document["points"]]
    columns = list(dict.fromkeys(k for r in rows for k in r)) or ["empty"]
    with (out / "fig8.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    plot(document["points"], out / "fig8.png")


def plot(points: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (kind, label) in enumerate((("dual", "DDMLTS + main-side chain (CTBC + CMBC)"),
                                       ("single", "DDMLTS, single chain (CTBC only)"))):
        pts = [p for p in points if p["chains"] == kind and p["communication_s_median"]]
        if not pts:
            continue
        xs = [p["nodes"] for p in pts]
        medians = [p["communication_s_median"] for p in pts]
        above = [max(0.0, p["communication_s_p90"] - p["communication_s_median"]) for p in pts]
        ax.errorbar(xs, medians, yerr=[[0] * len(pts), above], fmt=f"C{i}-o", capsize=3,
                    label=label)
    ax.set_xticks(sorted({p["nodes"] for p in points}))
    ax.set_xlabel("server nodes")
    ax.set_ylabel("communication time per version (s)\nmedian, bar to p90")
    ax.set_title("communication time per model version against nodes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
