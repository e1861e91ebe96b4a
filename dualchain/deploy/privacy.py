"""The testbed's view of its clients' local differential privacy (``client.privacy``).

``dualchain up --dp-epsilon E ...`` gives every client a ``dp`` block; each client reports its
spent epsilon on its events (``report``, ``privacy_budget``, ``stopped``) and on its CMBC state
reports. The launcher keeps the latest figure per client in ``WORKDIR/privacy.json`` while the
testbed runs (``dualchain status`` reads it) and in ``report.json`` under ``privacy`` at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PRIVACY_FILE = "privacy.json"


def dp_problem(block: dict[str, Any] | None) -> str | None:
    """What is wrong with a ``dp`` setting, as the client config would say it (None: fine)."""
    from dualchain.chain.daemon.config import ConfigError
    from dualchain.client.privacy import DpSettings

    try:
        DpSettings.from_json({k: v for k, v in (block or {}).items() if k != "ledger"},
                             Path("."))
    except ConfigError as exc:
        return exc.reason
    return None


def privacy_entry(event: dict[str, Any]) -> dict[str, Any]:
    """A client's privacy figures from one of its events."""
    summary = event["privacy"] if isinstance(event.get("privacy"), dict) else event
    return {k: summary.get(k) for k in ("epsilon_spent", "epsilon_budget", "delta", "releases",
                                        "noise_multiplier", "mechanism", "schedule",
                                        "exhausted")}


def privacy_report(budget: float, clients: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The ``privacy`` section of report.json (None without DP)."""
    if not budget:
        return None
    spent = [c["epsilon_spent"] for c in clients.values() if c.get("epsilon_spent") is not None]
    return {"epsilon_budget": budget, "max_epsilon_spent": max(spent, default=0.0),
            "within_budget": all(s <= budget for s in spent),
            "clients": dict(sorted(clients.items()))}


def write_privacy(workdir: Path, clients: dict[str, dict[str, Any]]) -> None:
    path = Path(workdir) / PRIVACY_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(clients.items())), indent=2) + "\n")
    os.replace(tmp, path)


def read_privacy(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(workdir) / PRIVACY_FILE).read_text())
    except (OSError, ValueError):
        return None
