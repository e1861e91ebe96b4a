"""`dualchain bench paper --experiment fig6`: accuracy against the number of bad clients (seed 000
Fig. 6), fedavg against ddmlts, on the live testbed.

Seed 000's "bad nodes" are clients that drop out ("as the dropped node increases, synchronous
FL experience a greater decrease in accuracy"). On the testbed they are the client attack
``dropout`` (``adversary.client``): from ``from_version`` on such a client neither trains nor
uploads, though it keeps asking for tasks, so the nodes still count it. The last ``bad`` of the
clients drop out. Each round then waits for them until its bound: ``fedavg_timeout_s`` in fedavg
(written into the nodes' configs here; the node's default is 60 s) and ``deadline_s`` in ddmlts
(the plan keeps a dropped client, whose last state report stays on CMBC), both set to
``wait_s`` so the two modes wait alike. Per point: the final accuracy after ``rounds`` versions,
the best accuracy, the wall time of training and the mean round time.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dualchain.deploy.up import Testbed, UpConfig

Progress = Callable[[str], None]
MODES = ("fedavg", "ddmlts")


class _Testbed(Testbed):
    """A testbed whose nodes give up on missing fedavg clients after ``fedavg_timeout_s``."""

    def __init__(self, config: UpConfig, fedavg_timeout_s: float, progress: Progress) -> None:
        super().__init__(config, progress=progress)
        self.fedavg_timeout_s = fedavg_timeout_s

    def write(self) -> None:
        super().write()
        for i in range(self.config.nodes):
            path = self.workdir / f"node-{i}.json"
            data = json.loads(path.read_text())
            data["aggregation"]["fedavg_timeout_s"] = self.fedavg_timeout_s
            path.write_text(json.dumps(data, indent=2))


def bad_client_attacks(clients: int, bad: int, from_version: int) -> dict[str, Any]:
    """The last ``bad`` clients drop out from ``from_version`` on."""
    if not 0 <= bad <= clients:
        raise ValueError(f"bad clients: 0 to {clients}, got {bad}")
    return {str(i): {"kind": "dropout", "from_version": from_version}
            for i in range(clients - bad, clients)}


def point(bad: int, mode: str, report: dict[str, Any]) -> dict[str, Any]:
    versions = report["versions"]
    rounds = [v["round_s"] for v in versions[1:] if v["round_s"] is not None]
    return {
        "bad_clients": bad, "mode": mode, "final_accuracy": report["final_accuracy"],
        "best_accuracy": max((v["accuracy"] for v in versions), default=None),
        "versions": len(versions), "wall_s": report["time_to_final_s"],
        "mean_round_s": round(sum(rounds) / len(rounds), 3) if rounds else None,
    }


def fig6(base: UpConfig, counts: Sequence[int], modes: Sequence[str], from_version: int,
         wait_s: float, progress: Progress) -> dict[str, Any]:
    points = []
    with tempfile.TemporaryDirectory(prefix="bench-fig6-") as tmp:
        for bad in counts:
            for mode in modes:
                config = replace(base, mode=mode, deadline_s=wait_s, stragglers=0.0,
                                 workdir=str(Path(tmp) / f"{mode}-{bad}"),
                                 client_attacks=bad_client_attacks(base.clients, bad,
                                                                   from_version))
                report = _Testbed(config, wait_s, progress).run()
                points.append(point(bad, mode, report))
                progress(f"fig6: {points[-1]}")
    return {"points": points, "stragglers": 0.0, "dropout_from_version": from_version,
            "wait_s": wait_s,
            "modes": list(modes), "bad_client_counts": list(counts)}


def plot(result: dict[str, Any], ax: Any) -> None:
    for i, mode in enumerate(result["modes"]):
        pts = [p for p in result["points"] if p["mode"] == mode]
        ax.plot([p["bad_clients"] for p in pts], [p["final_accuracy"] for p in pts],
                f"C{i}-o", label=mode)
    ax.set_xlabel("bad (dropped-out) clients")
    ax.set_ylabel("final test accuracy")
    ax.set_title(f"accuracy against bad clients (dropout from version "
                 f"{result['dropout_from_version']})")
    ax.legend(fontsize=7)
