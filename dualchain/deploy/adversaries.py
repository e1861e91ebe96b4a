"""Attacks and defenses of a testbed (``up``'s flags and TOML keys; docs/threat-model.md).

UpConfig keys this reads:

- ``defense``: ``none``, ``pn`` (the PN watermark alone), ``cluster``, ``median``,
  ``trimmed_mean``, ``krum``, ``multi_krum``; ``watermark = true`` adds the PN watermark to any
  of them; ``defense_params``: a table of the genesis ``defense`` section's other fields
  (``cluster_eps``, ``krum_f``, ``watermark_snr_db``, ...).
- ``attack``: a client attack table (``{kind = "sign_flip", from_version = 2}``) run by the
  first ``attackers`` fraction of the clients; ``client_attacks``: a table of client index to
  attack table, for the clients it names (it wins over ``attack``); ``node_attacks``: node
  index to a node attack table (``{kind = "poison", versions = [20, 60]}`` or
  ``{kind = "lie_discard", mode = "drop_honest"}``).

``spec_table`` turns a flag such as ``scale:factor=5,from_version=2`` into such a table.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, fields
from typing import Any

from dualchain.adversary.client import AttackConfigError, make_client_attack
from dualchain.adversary.node import make_node_attack
from dualchain.apps.genesis_defense import DEFENSE_RULES, DefenseParams, DefenseParamsError
from dualchain.apps.genesis_defense import check_defense as _check

DEFENSES: tuple[str, ...] = ("none", "pn", *DEFENSE_RULES[1:])
WATERMARK_LENGTH = 4096  # learning.watermark.WatermarkParams' default


def spec_table(spec: str) -> dict[str, Any]:
    """``KIND[:key=value,...]`` as a table; values are JSON (numbers, true, [20, 60]) or text."""
    kind, _, rest = spec.partition(":")
    table: dict[str, Any] = {"kind": kind.strip()}
    for item in filter(None, _split(rest)):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{spec!r}: {item!r} is not key=value")
        try:
            table[key.strip()] = json.loads(value)
        except ValueError:
            table[key.strip()] = value.strip()
    return table


def _split(text: str) -> list[str]:
    """Commas outside brackets: ``versions=[20,60],rho=1`` is two items."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    return [*items, cur]


def defense_params(config: Any) -> DefenseParams | None:
    """The genesis ``defense`` section, or None when the testbed has no defense."""
    if config.defense == "none" and not config.watermark and not config.defense_params:
        return None
    names = {f.name for f in fields(DefenseParams)} - {"rule"}
    unknown = sorted(set(config.defense_params) - names)
    if unknown:
        raise ValueError(f"defense_params: unknown keys {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(names))}")
    values: dict[str, Any] = {"rule": "none" if config.defense == "pn" else config.defense}
    if config.defense == "pn" or config.watermark:
        values["watermark_length"] = WATERMARK_LENGTH
    values.update(config.defense_params)
    params = DefenseParams(**values)
    try:
        _check(params)
    except DefenseParamsError as exc:
        raise ValueError(str(exc)) from None
    return params


def watermark_table(params: DefenseParams | None) -> dict[str, Any] | None:
    """The clients' ``watermark`` config: the genesis's, for every client."""
    if params is None or not params.watermark_length:
        return None
    d = asdict(params)
    return {"length": d["watermark_length"], "snr_db": d["watermark_snr_db"],
            "threshold": d["watermark_threshold"]}


def client_attack(config: Any, j: int) -> dict[str, Any] | None:
    """The attack table of client ``j``, or None for an honest client."""
    table = config.client_attacks.get(str(j))
    if table is not None:
        return table
    if config.attack and j < attackers(config):
        return config.attack
    return None


def node_adversary(config: Any, i: int) -> dict[str, Any]:
    """Node ``i``'s config entry: ``{"adversary": {"strategy": kind, ...}}``, or nothing."""
    table = config.node_attacks.get(str(i))
    if table is None:
        return {}
    return {"adversary": {"strategy": table["kind"],
                          **{k: v for k, v in table.items() if k != "kind"}}}


def attackers(config: Any) -> int:
    return math.floor(config.attackers * config.clients + 1e-9)


def check(config: Any) -> None:
    """Raises ValueError (one line) for a bad defense or attack setting."""
    if config.defense not in DEFENSES:
        raise ValueError(f"defense {config.defense!r}: one of {', '.join(DEFENSES)}")
    if not 0 <= config.attackers <= 1:
        raise ValueError(f"attackers must be a fraction in [0, 1], got {config.attackers}")
    if config.attackers and not config.attack:
        raise ValueError("attackers needs attack (what they do)")
    defense_params(config)
    try:
        if config.attack:
            make_client_attack(config.attack)
        for key, table in config.client_attacks.items():
            if not str(key).isdigit() or int(key) >= config.clients:
                raise ValueError(f"client_attacks: {key!r} is not a client index")
            make_client_attack(table)
        for key, table in config.node_attacks.items():
            if not str(key).isdigit() or int(key) >= config.nodes:
                raise ValueError(f"node_attacks: {key!r} is not a node index")
            make_node_attack(table)
    except AttackConfigError as exc:
        raise ValueError(str(exc)) from None


def add_attack_options(parser: argparse.ArgumentParser) -> None:
    """``up``'s attack and defense flags (defaults None: a TOML config's keys stay)."""
    parser.add_argument("--defense", choices=DEFENSES, default=None,
                        help="what every committee replica re-runs on a commit's updates: pn "
                        "(PN watermark: copies and unmarked uploads), cluster (seed 002 DBSCAN, "
                        "discard), median, trimmed_mean, krum, multi_krum (default none)")
    parser.add_argument("--watermark", action="store_true", default=None,
                        help="add the PN watermark to the defense (clients mark every upload)")
    parser.add_argument("--attack", default=None, metavar="KIND[:K=V,...]",
                        help="client attack of the first --attackers of the clients: "
                        "sign_flip, scale, gaussian, label_flip, backdoor, lazy, free_rider, "
                        "dropout, e.g. scale:factor=5,from_version=2")
    parser.add_argument("--attackers", type=float, default=None,
                        help="fraction of the clients running --attack (default 0)")
    parser.add_argument("--node-attack", default=None, metavar="KIND[:K=V,...]",
                        help="node 0 as an adversary: poison:versions=[20,60],rho=1 or "
                        "lie_discard:mode=drop_honest (or keep_flagged)")


def attack_overrides(attack: str | None, node_attack: str | None) -> dict[str, Any]:
    """UpConfig keys from the ``--attack`` and ``--node-attack`` flags (absent: none)."""
    out: dict[str, Any] = {}
    if attack is not None:
        out["attack"] = spec_table(attack)
    if node_attack is not None:
        out["node_attacks"] = {"0": spec_table(node_attack)}
    return out
