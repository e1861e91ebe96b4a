"""``dualchain compose``: the command line of ``deploy.compose`` and ``deploy.swarm``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from dualchain.deploy.compose import HOST_TESTBED, generate, write_testbed
from dualchain.deploy.plan import UpConfig, UpError
from dualchain.deploy.swarm import generate_swarm


def _parse_set(items: list[str]) -> dict[str, Any]:
    names = {f.name for f in fields(UpConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or key not in names:
            raise UpError(f"--set {item!r}: KEY=VALUE with KEY one of UpConfig's fields")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def config_from_args(args: argparse.Namespace) -> UpConfig:
    """The UpConfig of a ``dualchain compose`` command line (flags over --set over --config)."""
    overrides = {**_parse_set(args.set), **{k: v for k, v in (
        ("nodes", args.nodes), ("clients", args.clients), ("miners", args.miners),
        ("mode", args.mode)) if v is not None}}
    if args.config is not None:
        return UpConfig.from_toml(args.config, overrides)
    return UpConfig(**overrides)


def cmd_compose(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
        if args.testbed_only:
            testbed = write_testbed(config, args.out.resolve(), args.backend, args.if_missing)
            if testbed is None:
                print(f"dualchain compose: the testbed in {args.out} is kept")
            else:
                print(f"dualchain compose: planned {len(testbed.procs)} processes in {args.out} "
                      f"(ML-DSA backend {testbed.backend})")
            return 0
        if args.swarm:
            written = generate_swarm(config, args.out, args.backend, args.swarm_hosts)
        else:
            written = generate(config, args.out, args.keys, args.backend)
    except (UpError, TypeError, ValueError) as exc:  # TypeError: a --set value's wrong type
        print(f"dualchain compose: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    compose = sub.add_parser(
        "compose",
        help="write a docker-compose testbed (one container per process) like `dualchain up`",
        description="Writes OUT/docker-compose.yml and OUT/deploy/prometheus/prometheus.yml for "
        "the testbed `dualchain up` would run with the same settings (--set KEY=VALUE takes any "
        "UpConfig key, --config the same TOML file as `up --config`). Keys, genesis files and "
        "process configs are planned by the stack's testbed-init service into a volume "
        "(--keys init) or written now under OUT/deploy/compose/testbed (--keys host). "
        "--testbed-only plans just the testbed files into OUT (what testbed-init runs).",
    )
    compose.add_argument("--nodes", type=int, default=None, help="server nodes (default 4)")
    compose.add_argument("--clients", type=int, default=None, help="clients (default 8)")
    compose.add_argument("--miners", type=int, default=None, help="CMBC miners (default 1)")
    compose.add_argument("--mode", choices=["fedasync", "fedavg", "ddmlts", "semisync"],
                         default=None, help="as for `dualchain up` (default fedasync)")
    compose.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="any UpConfig key (VALUE is JSON or a string), repeatable")
    compose.add_argument("--config", type=Path, default=None,
                         help="a TOML file of UpConfig keys (as `dualchain up --config`)")
    compose.add_argument("--out", type=Path, default=Path("."),
                         help="output folder (default: the current one)")
    compose.add_argument("--keys", choices=["init", "host"], default="init",
                         help="init (default): the stack plans keys and configs into its "
                         "testbed volume at first start; host: write them now under "
                         f"OUT/{HOST_TESTBED}")
    compose.add_argument("--backend", choices=["auto", "cryptography", "liboqs"],
                         default="auto",
                         help="ML-DSA backend written into the configs; auto (default): liboqs "
                         "where it works (an image built with WITH_LIBOQS=1), else cryptography")
    compose.add_argument("--swarm", action="store_true",
                         help="write a Docker Swarm stack instead (OUT/dualchain-stack.yml, the "
                         "testbed planned now under OUT/deploy/swarm/testbed and handed to the "
                         "services as swarm configs and secrets; docs/deploy.md)")
    compose.add_argument("--swarm-hosts", type=int, default=1, metavar="H",
                         help="with --swarm: spread the processes over the swarm nodes labelled "
                         "dualchain.host=h0..h(H-1) (default 1)")
    compose.add_argument("--testbed-only", action="store_true",
                         help="write only the planned testbed (keys, genesis, configs) into OUT")
    compose.add_argument("--if-missing", action="store_true",
                         help="with --testbed-only: keep a testbed OUT already holds")
    compose.set_defaults(func=cmd_compose)
