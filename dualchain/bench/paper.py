"""`dualchain bench paper`: seed 000 §5's scheduling experiments, run on this machine.

- ``table3``: the same heterogeneous testbed (``dualchain up``, every role its own process) in
  each mode (fedasync, the BAFL-like baseline, on a single chain as BAFL has it); per mode the
  mean C_gmax (eq. 14) and the final accuracy, the ratios ddmlts / fedasync and ddmlts /
  semisync, and how the makespans of the task plans ddmlts put on CMBC compare with the OLAR
  optimum for the same measured client speeds.
- ``fig7``: accuracy against time at several straggler ratios, ddmlts against fedavg (testbed).
- ``fig4``: round time against the straggler ratio for alpha in {0.5, 1.0, 1.5}, clients
  grouped by Algorithm 1 (DDMLTS-B) or not (DDMLTS-A). This one is computed, not run: the
  training speed of this machine is measured with real torch training of the dataset's model,
  each client's speed is that divided by its emulated slowdown, and the round time is the
  makespan the scheduler's allocation gives under that time model (a testbed run per point
  would be 36 runs).

- ``table5``: single against dual chain (``--chains single``: the management transactions go on
  CTBC, no CMBC or miner) in ddmlts mode, each run for ``--duration-s`` with a random client's
  slowdown changing about every ``--state-change-s``: model versions committed (aggregations),
  group assignments that took effect (network adjustments: counted by replaying the chain's
  SQLite file through the management application after the run) and the average CPU of each
  chain's processes (CTBC daemons; CMBC daemons and miners).

- ``table4``: round time against ra, the fraction of a group's clients that work in small tasks
  (seed 000 Table 4). Our reading, as the paper does not define small tasks: a client on small
  tasks gets its share of the round as tasks of ``--small-batches`` batches and pays the
  per-task cost (rtt, model download, update upload: ``--task-overhead-s``, by default the
  median our clients reported on this machine) once per small task instead of once per round;
  DDMLTS gives every client one task sized to its speed (ra = 0). Computed like fig4, from the
  measured training speed: per ra, a seeded choice of clients on small tasks, the round's work
  split by OLAR for those costs, and the makespan.

- ``attacks`` and ``lazy`` (issue 15): attacks against defenses, and the PN watermark's
  detection of lazy clients (seed 004 Table I); in process, see ``bench/attacks.py``.
- ``poison`` (seed 003 Fig. 11): a poisoning aggregator on the live testbed, refused and
  excluded, against the run replayed with no check and a poisoned central aggregator
  (``bench/poison.py``); ``fig6`` (seed 000 Fig. 6): final accuracy against the number of
  dropped-out clients, fedavg against ddmlts, on testbeds (``bench/fig6.py``).

Each experiment writes NAME.json, NAME.csv and NAME.png under the output directory; the JSON is
also printed. Seed 000's
tables and figures on other datasets are not redone here.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dualchain.bench import attacks as attacks_bench
from dualchain.bench import fig6 as fig6_bench
from dualchain.bench import poison as poison_bench
from dualchain.deploy.up import Testbed, UpConfig, client_slowdowns

EXPERIMENTS = ("table3", "fig4", "fig7", "table5", "table4", "attacks", "lazy", "poison",
               "fig6")
# The median per-task transfer cost (completion - training - rtt, plus rtt) that clients
# reported in a digits testbed on our 2-core machine: 0.039 s + 0.005 s.
TASK_OVERHEAD_S = 0.044
Progress = Callable[[str], None]


def _after_warmup(versions: list[dict[str, Any]], warmup: int) -> list[dict[str, Any]]:
    kept = [v for v in versions if v["version"] > warmup]
    return kept or versions


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


# The baselines as seed 000 compares them: fedasync is the BAFL-like baseline, one chain.
BASELINE_CHAINS = {"fedasync": "single"}


def _run_mode(base: UpConfig, mode: str, workdir: Path, progress: Progress) -> dict[str, Any]:
    config = replace(base, mode=mode, workdir=str(workdir),
                     chains=BASELINE_CHAINS.get(mode, base.chains))
    return Testbed(config, progress=progress).run()


def plan_optimality(plans: list[dict[str, Any]]) -> dict[str, Any]:
    """Planned makespan over the OLAR optimum, per group of every plan (1.0: optimal)."""
    ratios = [g["planned_s"] / g["olar_s"] for p in plans for g in p["groups"] if g["olar_s"] > 0]
    equal = [g["equal_s"] / g["olar_s"] for p in plans for g in p["groups"] if g["olar_s"] > 0]
    return {"plans": len(plans), "mean_planned_over_olar": _mean(ratios),
            "max_planned_over_olar": round(max(ratios), 4) if ratios else None,
            "mean_equal_over_olar": _mean(equal)}


def table3(base: UpConfig, modes: Sequence[str], warmup: int, progress: Progress
           ) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-paper-") as tmp:
        for mode in modes:
            report = _run_mode(base, mode, Path(tmp) / mode, progress)
            versions = _after_warmup(report["versions"], warmup)
            results[mode] = {
                "versions": len(report["versions"]),
                "mean_c_gmax_s": _mean([v["c_gmax_s"] or 0.0 for v in versions]),
                "mean_round_s": _mean([v["round_s"] or 0.0 for v in versions]),
                "final_accuracy": report["final_accuracy"],
                "wall_s": report["time_to_final_s"],
            }
            if mode == "ddmlts":
                results[mode]["plans_vs_olar"] = plan_optimality(report["plans"])
    ratios = {}
    if "ddmlts" in results:
        d = results["ddmlts"]["mean_c_gmax_s"]
        for other in ("fedasync", "semisync", "fedavg"):
            o = results.get(other, {}).get("mean_c_gmax_s")
            if d is not None and o:
                ratios[f"ddmlts/{other}"] = round(d / o, 3)
        if "fedavg" in results:
            ratios["accuracy ddmlts-fedavg"] = round(
                results["ddmlts"]["final_accuracy"] - results["fedavg"]["final_accuracy"], 4)
    return {"modes": results, "c_gmax_ratios": ratios}


def fig7(base: UpConfig, ratios: Sequence[float], progress: Progress) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-paper-") as tmp:
        for ratio in ratios:
            for mode in ("ddmlts", "fedavg"):
                config = replace(base, stragglers=ratio)
                report = _run_mode(config, mode, Path(tmp) / f"{mode}-{ratio}", progress)
                curves[f"{mode}@{ratio:.2f}"] = {
                    "mode": mode, "stragglers": ratio,
                    "elapsed_s": [v["elapsed_s"] for v in report["versions"]],
                    "accuracy": [v["accuracy"] for v in report["versions"]],
                    "final_accuracy": report["final_accuracy"],
                    "wall_s": report["time_to_final_s"],
                }
    return {"curves": curves}


def measured_speed(dataset: str, data_dir: str | None, batch_size: int, batches: int = 60
                   ) -> float:
    """Batches per second of real local training of the dataset's model on this machine."""
    import torch

    from dualchain.learning.datasets import load_dataset
    from dualchain.learning.models import build_model
    from dualchain.learning.training import train_local

    torch.set_num_threads(1)
    data = load_dataset(dataset, Path(data_dir) if data_dir else None, seed=0)
    model = build_model(data.name, data.num_classes, 0)
    train_local(model, data.train_x, data.train_y, batches=5, batch_size=batch_size, lr=0.01,
                seed=0)  # warm-up
    stats = train_local(model, data.train_x, data.train_y, batches=batches,
                        batch_size=batch_size, lr=0.01, seed=1)
    return batches / stats.seconds


def fig4(base: UpConfig, alphas: Sequence[float], ratios: Sequence[float], rtt_s: float,
         seed: int) -> dict[str, Any]:
    from dualchain.scheduler import (
        ClientState,
        Grouping,
        SchedulerParams,
        Worker,
        c_gmax,
        cluster,
        plan_tasks,
    )

    speed = measured_speed(base.dataset, base.data_dir, base.batch_size)
    points = []
    for ratio in ratios:
        slowdowns = client_slowdowns(replace(base, stragglers=ratio, slowdowns=[]))
        states = {bytes([j]) * 32: ClientState(bytes([j]) * 32, rtt_s,
                                               base.batches / (speed / s), speed / s, 0.0)
                  for j, s in enumerate(slowdowns)}
        grouped = cluster(list(states.values()), base.k_max, seed)
        for alpha in alphas:
            params = SchedulerParams(k_max=base.k_max, alpha=alpha,
                                     batches_per_client=base.batches, upper=base.batches * 8)
            row: dict[str, Any] = {"stragglers": ratio, "alpha": alpha}
            for name, grouping in (("ddmlts_b_s", grouped),
                                   ("ddmlts_a_s", Grouping((tuple(sorted(states)),)))):
                tasks = plan_tasks(grouping, states, params, seed)
                row[name] = round(c_gmax([
                    [Worker(states[c].speed, rtt_s).completion(tasks[c]) for c in members]
                    for members in grouping.groups]), 4)
            row["groups"] = grouped.k
            points.append(row)
    return {"measured_batches_per_s": round(speed, 2), "rtt_s": rtt_s, "points": points,
            "computed": "scheduler allocation under the measured-speed time model"}


def table4(base: UpConfig, ratios: Sequence[float], small_batches: int, overhead_s: float,
           seed: int) -> dict[str, Any]:
    import random

    from dualchain.scheduler import Worker, makespan, olar

    speed = measured_speed(base.dataset, base.data_dir, base.batch_size)
    slowdowns = client_slowdowns(base)
    total = base.batches * len(slowdowns)
    order = list(range(len(slowdowns)))
    random.Random(f"table4/{seed}").shuffle(order)  # which clients go small first
    points = []
    for ra in ratios:
        small = set(order[: round(ra * len(slowdowns))])
        # A client on small tasks pays the per-task cost again every small_batches batches.
        workers = [Worker(speed / s, overhead_s,
                          overhead_s / small_batches if i in small else 0.0)
                   for i, s in enumerate(slowdowns)]
        points.append({"ra": ra, "small_clients": len(small),
                       "round_s": round(makespan(workers, olar(workers, total)), 4)})
    base_time = points[0]["round_s"] if points and points[0]["ra"] == 0 else None
    for point in points:
        point["over_ra0"] = round(point["round_s"] / base_time, 3) if base_time else None
    return {"measured_batches_per_s": round(speed, 2), "task_overhead_s": overhead_s,
            "small_batches": small_batches, "points": points,
            "computed": "OLAR split under the measured-speed time model"}


def adjustments(workdir: Path, chains: str) -> int:
    """Group assignments that took effect, replayed from node 0's chain file after the run:
    each assignment record the management application accepted and did not supersede."""
    from dualchain.apps.cmbc.app import CmbcApp
    from dualchain.apps.cmbc.payloads import MANAGEMENT_KINDS
    from dualchain.apps.genesis import Genesis
    from dualchain.chain.store import BlockStore

    single = chains == "single"
    kind = "ctbc" if single else "cmbc"
    genesis = Genesis.load(workdir / f"{kind}-genesis.json")
    app = CmbcApp(max_undo=1, sched=genesis.sched, block_reward=genesis.pow.block_reward)
    store = BlockStore(workdir / "data" / f"{kind}-0" / "chain.sqlite")
    changes, last = 0, None
    try:
        for height in range(1, store.height() + 1):
            block = store.canonical_block(height)
            if single:
                app.apply_transactions(height, [tx for tx in block.transactions
                                                if tx.kind in MANAGEMENT_KINDS], True)
            else:
                app.apply_block(block)
            current = app.assignment()
            digest = current.digest if current is not None else None
            if digest != last:
                changes, last = changes + 1, digest
    finally:
        store.close()
    return changes


def chain_cpu(cpu_seconds: dict[str, float], seconds: float) -> dict[str, Any]:
    """Average CPU (% of one core) per process of each chain, and the chain's total."""
    out: dict[str, Any] = {}
    for chain, prefixes in (("ctbc", ("ctbc-",)), ("cmbc", ("cmbc-", "miner-"))):
        daemons = {n: s for n, s in cpu_seconds.items() if n.startswith(prefixes[0])}
        total = sum(s for n, s in cpu_seconds.items() if n.startswith(prefixes))
        if not total:
            continue
        out[chain] = {
            "per_daemon_pct": round(100 * sum(daemons.values()) / len(daemons) / seconds, 1),
            "total_pct": round(100 * total / seconds, 1),
        }
    return out


def table5(base: UpConfig, progress: Progress) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-paper-") as tmp:
        for chains in ("dual", "single"):
            workdir = Path(tmp) / chains
            config = replace(base, mode="ddmlts", chains=chains, workdir=str(workdir))
            report = Testbed(config, progress=progress).run()
            seconds = report["time_to_final_s"] or config.duration_s
            results[chains] = {
                "aggregations": len(report["versions"]),
                "network_adjustments": adjustments(workdir, chains),
                "plans": len(report["plans"]),
                "final_accuracy": report["final_accuracy"],
                "seconds": config.duration_s,
                "cpu": chain_cpu(report["cpu_seconds"], config.duration_s or seconds),
            }
    return {"duration_s": base.duration_s, "state_change_s": base.state_change_s,
            "chains": results}


# -- output -------------------------------------------------------------------------------------


def _rows(name: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    if name == "table3":
        return [{"mode": m, **{k: v for k, v in r.items() if not isinstance(v, dict)}}
                for m, r in result["modes"].items()]
    if name == "attacks":
        return result["rows"]
    if name in ("fig4", "lazy", "fig6"):
        return result["points"]
    if name == "poison":
        return poison_bench.rows(result)
    if name == "table4":
        return result["points"]
    if name == "table5":
        return [{"chains": k, **{f: v for f, v in r.items() if not isinstance(v, dict)},
                 **{f"cpu_{c}_total_pct": v["total_pct"] for c, v in r["cpu"].items()}}
                for k, r in result["chains"].items()]
    return [{"curve": k, "elapsed_s": t, "accuracy": a}
            for k, c in result["curves"].items()
            for t, a in zip(c["elapsed_s"], c["accuracy"], strict=True)]


def _plot(name: str, result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if name in ("attacks", "lazy"):
        attacks_bench.plot(name, result, ax)
    elif name == "poison":
        poison_bench.plot(result, ax)
    elif name == "fig6":
        fig6_bench.plot(result, ax)
    elif name == "table3":
        modes = list(result["modes"])
        ax.bar(modes, [result["modes"][m]["mean_c_gmax_s"] or 0 for m in modes], color="C0")
        ax.set_ylabel("mean C_gmax (s)")
        ax.set_title("C_gmax per mode (eq. 14)")
    elif name == "table5":
        names = list(result["chains"])
        xs = range(len(names))
        ax.bar([x - 0.2 for x in xs], [result["chains"][n]["aggregations"] for n in names],
               width=0.4, label="aggregations")
        ax.bar([x + 0.2 for x in xs],
               [result["chains"][n]["network_adjustments"] for n in names], width=0.4,
               label="network adjustments")
        ax.set_xticks(list(xs), names)
        ax.set_title(f"single vs dual chain over {result['duration_s']:.0f} s")
        ax.legend(fontsize=7)
    elif name == "table4":
        pts = result["points"]
        ax.plot([100 * p["ra"] for p in pts], [p["round_s"] for p in pts], "C0-o")
        ax.set_xlabel("clients on small tasks, ra (%)")
        ax.set_ylabel("round time (s)")
        ax.set_title(f"round time against ra (small tasks of {result['small_batches']} batches)")
    elif name == "fig4":
        for i, alpha in enumerate(sorted({p["alpha"] for p in result["points"]})):
            pts = [p for p in result["points"] if p["alpha"] == alpha]
            xs = [100 * p["stragglers"] for p in pts]
            ax.plot(xs, [p["ddmlts_b_s"] for p in pts], f"C{i}-o", label=f"B alpha={alpha}")
            ax.plot(xs, [p["ddmlts_a_s"] for p in pts], f"C{i}--x", label=f"A alpha={alpha}")
        ax.set_xlabel("stragglers (%)")
        ax.set_ylabel("round time (s)")
        ax.legend(fontsize=7)
    else:
        for i, (key, curve) in enumerate(result["curves"].items()):
            style = "-" if curve["mode"] == "ddmlts" else "--"
            ax.plot(curve["elapsed_s"], curve["accuracy"], style, color=f"C{i // 2}", label=key)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_experiment(name: str, base: UpConfig, out: Path, progress: Progress,
                   modes: Sequence[str] | None = None,
                   ratios: Sequence[float] | None = None,
                   alphas: Sequence[float] = (0.5, 1.0, 1.5), warmup: int = 3,
                   small_batches: int = 2, overhead_s: float = TASK_OVERHEAD_S,
                   poison_versions: Sequence[int] = (20, 60), rho: float = 0.1,
                   bad_clients: Sequence[int] = (0, 2, 4, 6), dropout_from: int = 2,
                   wait_s: float = 5.0) -> dict[str, Any]:
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment {name!r}: one of {', '.join(EXPERIMENTS)}")
    started = time.monotonic()
    if name == "table3":
        result = table3(base, modes or ("ddmlts", "fedasync", "semisync", "fedavg"), warmup,
                        progress)
    elif name == "poison":
        result = poison_bench.poison(base, poison_versions, rho, progress)
    elif name == "fig6":
        result = fig6_bench.fig6(base, bad_clients, modes or fig6_bench.MODES, dropout_from,
                                 wait_s, progress)
    elif name == "table5":
        result = table5(base, progress)
    elif name == "table4":
        result = table4(base, ratios if ratios is not None else (0.0, 0.25, 0.5, 0.75, 1.0),
                        small_batches, overhead_s, base.seed)
    elif name == "fig7":
        result = fig7(base, ratios if ratios is not None else (0.0, 0.2, 0.4), progress)
    elif name == "attacks":
        result = attacks_bench.attacks(tuple(attacks_bench.ATTACKS), attacks_bench.DEFENSE_NAMES,
                                       0.3, base.clients, base.rounds, base.batches, progress,
                                       base.seed)
    elif name == "lazy":
        result = attacks_bench.lazy(base.clients, base.rounds, base.batches, progress,
                                    seed=base.seed)
    else:
        result = fig4(base, alphas,
                      ratios if ratios is not None else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                      rtt_s=0.01, seed=base.seed)
    document = {
        "benchmark": f"paper/{name}", "dataset": base.dataset, "nodes": base.nodes,
        "clients": base.clients, "rounds": base.rounds, "stragglers": base.stragglers,
        "straggler_slowdown": base.straggler_slowdown, "batches_per_task": base.batches,
        "warmup_versions": warmup if name == "table3" else None, **result,
        "seconds": round(time.monotonic() - started, 1), "machine": {"cpus": os.cpu_count()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    rows = _rows(name, result)
    with (out / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)
    _plot(name, result, out / f"{name}.png")
    return document
