"""`dualchain bench fl`: the same testbed in each FL mode, and what each mode costs.

For each mode it runs ``dualchain up`` (every role its own process) with the same configuration
and seed, and reports: the mean C_gmax (seed 000 eq. 14: per version, the longest completion
time among the tasks it includes), the final accuracy after ``rounds`` versions, the time from
the start of training to the first version at or above ``target`` accuracy (null if never), the
wall time, and the bytes the server nodes sent and received for FL (model downloads, update
uploads, relays between nodes). With ``base.hosts == "netns"`` each testbed runs across network
namespaces with ``base.netem``'s link specs (see ``dualchain.deploy.netns``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from dualchain.deploy.up import Testbed, UpConfig


def fl_benchmark(modes: Sequence[str], base: UpConfig, target: float,
                 progress: Callable[[str], None] | None = None) -> dict:
    progress = progress or (lambda line: None)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-fl-") as tmp:
        for mode in modes:
            config = replace(base, mode=mode, workdir=str(Path(tmp) / mode))
            report = Testbed(config, progress=progress).run()
            versions = report["versions"]
            reached = next((v["elapsed_s"] for v in versions if v["accuracy"] >= target), None)
            results[mode] = {
                "versions": len(versions),
                "mean_c_gmax_s": report["mean_c_gmax_s"],
                "final_accuracy": report["final_accuracy"],
                "time_to_target_s": reached,
                "wall_s": report["time_to_final_s"],
                "bytes_sent": report["bytes_sent"],
            }
    return {
        "benchmark": "fl",
        "dataset": base.dataset,
        "nodes": base.nodes,
        "clients": base.clients,
        "rounds": base.rounds,
        "target_accuracy": target,
        "batches_per_task": base.batches,
        "slowdowns": base.slowdowns,
        "hosts": base.hosts,
        "netem": base.netem,
        "modes": results,
        "machine": {"cpus": os.cpu_count()},
    }
