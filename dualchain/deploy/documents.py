"""The documents a testbed writes besides its configs: a Prometheus scrape config of its
processes, and the YAML (the subset compose files need: maps, lists, scalars) they are written
in. ``up`` (with ``--metrics``), ``compose`` and ``swarm`` use them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from dualchain.deploy.plan import Proc

METRICS_PORT = 9100  # every process's metrics port inside its container
ROLE_ORDER = ("ctbc", "cmbc", "miner", "node", "client")


def prometheus_document(procs: list[Proc], target: Callable[[Proc], str | None] | None = None
                        ) -> dict[str, Any]:
    """Scrapes every process's metrics endpoint (``target``: its host:port, None for none; by
    default the container's); ``process`` and ``role`` label each series, which the Grafana
    dashboard's queries rely on."""
    def in_container(p: Proc) -> str:
        return f"{p.name}:{METRICS_PORT}"

    where = target or in_container
    jobs = []
    for role in ROLE_ORDER:
        group = [(p, where(p)) for p in procs if p.role == role]
        group = [(p, t) for p, t in group if t]
        if group:
            jobs.append({"job_name": role, "static_configs": [
                {"targets": [t], "labels": {"process": p.name, "role": role}}
                for p, t in group]})
    return {"global": {"scrape_interval": "5s", "scrape_timeout": "4s",
                       "evaluation_interval": "5s"},
            "scrape_configs": jobs}


# -- YAML (the subset compose files need: maps, lists, scalars) ----------------------------------

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_KEYWORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _KEYWORDS:
        return text
    return json.dumps(text)


def _lines(value: Any, indent: int) -> list[str]:
    pad = "  " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            head = f"{pad}{_scalar(key)}:"
            if isinstance(child, dict | list) and child:
                flow = _flow(child)
                if flow is not None:
                    out.append(f"{head} {flow}")
                else:
                    out.append(head)
                    out.extend(_lines(child, indent + 1))
            else:
                empty = "{}" if isinstance(child, dict) else "[]"
                out.append(f"{head} {empty if isinstance(child, dict | list) else _scalar(child)}")
    else:
        for item in value:
            if isinstance(item, dict) and item:
                inner = _lines(item, indent + 1)
                out.append(f"{pad}- {inner[0].lstrip()}")
                out.extend(inner[1:])
            else:
                out.append(f"{pad}- {_scalar(item)}")
    return out


def _flow(value: Any) -> str | None:
    """A short list of scalars on one line (commands, health checks), else None."""
    if not isinstance(value, list) or any(isinstance(v, dict | list) for v in value):
        return None
    text = "[" + ", ".join(_scalar(v) for v in value) + "]"
    return text if len(text) <= 96 else None


def render_yaml(document: dict[str, Any], header: str = "") -> str:
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + "\n".join(_lines(document, 0)) + "\n"
