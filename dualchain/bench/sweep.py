"""`dualchain bench paper --experiment fig9|fig10 --nodes 4,8,16,24,36`: seed 000's node sweeps.

Per committee size N, one ``bench consensus`` run (N CTBC daemons, the load generator, every
replica checking every signature) offered more than the chain can commit (admission control
levels it off), then, in the same sweep, an etcd cluster of N members (the Raft baseline,
``etcd.py``) under the same load generator, transactions and batches. fig9 is throughput against
N, fig10 the same runs' consensus latency; both print the same document:

    {"points": [{"nodes", "tps", "latency_p50_s", "latency_p99_s", "view_changes",
                 "view_changes_per_100_heights", "messages_per_tx", "bytes_per_tx",
                 "cpu_percent_per_replica", "offered_rate_tps"}],
     "baseline": {"name": "etcd", "points": [...]} (or "skipped": why)}

With ``hosts="netns"`` every replica runs in its own network namespace (optionally with netem),
as ``bench consensus --hosts netns``; the etcd members stay on loopback.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dualchain.bench.consensus import consensus_benchmark
from dualchain.bench.etcd import etcd_available, etcd_benchmark

SWEEPS = ("fig9", "fig10")


def offered_rate(nodes: int) -> float:
    """A rate near what N replicas on this machine commit (every replica checks every
    signature, so capacity falls about as 1/N): admission control levels any excess off.
    Above 16 replicas the machine itself is saturated (etcd too commits far less than 250
    writes/s with 24 members on 2 cores), so the rate falls faster."""
    return float(min(2000, max(60, 6000 // nodes if nodes <= 16 else 3000 // nodes)))


def timeouts_ms(nodes: int) -> tuple[int, int, int, int] | None:
    """Genesis timeouts (propose, prevote, precommit, delta) for N replicas on this machine:
    the defaults up to 16; above, each replica gets under a tenth of a core and a height's
    messages take longer than 1 s to go round, so the timeouts grow with N (100/50/50/25 ms
    per replica: 2.4 s to propose at N=24, 3.6 s at N=36)."""
    if nodes <= 16:
        return None
    return (100 * nodes, 50 * nodes, 50 * nodes, 25 * nodes)


def block_interval_ms(nodes: int) -> int:
    """Larger committees batch longer: the per-height vote work is paid per block."""
    return 250 if nodes <= 8 else 500


def _point(run: dict[str, Any]) -> dict[str, Any]:
    heights = run.get("heights") or 0
    return {
        "nodes": run["nodes"],
        "tps": run["tps"],
        "latency_p50_s": run["latency_p50_s"],
        "latency_p99_s": run["latency_p99_s"],
        "view_changes": run["view_changes"],
        "view_changes_per_100_heights": round(100 * run["view_changes"] / heights, 2)
        if heights else None,
        "heights": heights,
        "messages_per_tx": run["messages_per_tx"],
        "bytes_per_tx": run["bytes_per_tx"],
        "cpu_percent_per_replica": run["cpu_percent_per_replica_mean"],
        "offered_rate_tps": run["offered_rate_tps"],
        "refused_busy": run["refused_busy"],
        "block_interval_ms": run["block_interval_ms"],
        "timeouts_ms": run["timeouts_ms"],
    }


def node_sweep(name: str, nodes: Sequence[int], duration: float, out: Path,
               progress: Callable[[str], None], hosts: str = "local",
               netem: Mapping[str, Any] | None = None, linear_votes: bool = True,
               baseline: bool = True) -> dict[str, Any]:
    if name not in SWEEPS:
        raise ValueError(f"experiment {name!r}: one of {', '.join(SWEEPS)}")
    skipped = etcd_available() if baseline else "not asked for (--no-baseline)"
    points, etcd_points = [], []
    for n in nodes:
        rate = offered_rate(n)
        progress(f"N={n}: CTBC at {rate:.0f} tx/s offered for {duration:.0f} s")
        run = consensus_benchmark(nodes=n, duration=duration, rate=rate,
                                  block_interval_ms=block_interval_ms(n), hosts=hosts,
                                  netem=netem, linear_votes=linear_votes,
                                  timeouts_ms=timeouts_ms(n))
        points.append(_point(run))
        progress(f"N={n}: {json.dumps(points[-1])}")
        if skipped is None:
            progress(f"N={n}: etcd, {n} members, at {rate:.0f} writes/s offered")
            etcd_points.append(etcd_benchmark(n, rate, duration))
            progress(f"N={n}: {json.dumps(etcd_points[-1])}")
    document: dict[str, Any] = {
        "benchmark": f"paper/{name}",
        "figure": "throughput against nodes" if name == "fig9" else
        "consensus latency against nodes",
        "duration_s": duration, "hosts": hosts, "linear_votes": linear_votes,
        "points": points,
        "baseline": {"name": "etcd", "points": etcd_points} if skipped is None else
        {"name": "etcd", "skipped": skipped},
        "machine": {"cpus": os.cpu_count(), "note": "every replica and member on this machine"},
    }
    if points:
        document["cpu_percent_per_replica_mean"] = round(
            statistics.fmean(p["cpu_percent_per_replica"] for p in points), 2)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    with (out / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["system", *points[0]] if points else ["system"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows({"system": "ctbc", **p} for p in points)
        writer.writerows({"system": "etcd", **p} for p in etcd_points)
    return document
