"""What several subcommands share: the ML-DSA options, the hosts options, JSON printing."""

from __future__ import annotations

import argparse
import json

from dualchain.chain.mldsa import BACKENDS, DEFAULT_ALGORITHM, DEFAULT_BACKEND, Algorithm


def parse_algorithm(value: str) -> Algorithm:
    try:
        return Algorithm.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_crypto_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--algorithm",
        type=parse_algorithm,
        default=DEFAULT_ALGORITHM,
        help=f"ML-DSA parameter set: ML-DSA-44, ML-DSA-65 or ML-DSA-87 "
        f"(default {DEFAULT_ALGORITHM.label})",
    )
    parser.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default=DEFAULT_BACKEND,
        help=f"ML-DSA implementation (default {DEFAULT_BACKEND}); 'liboqs' needs the liboqs "
        "shared library and liboqs-python",
    )


def add_hosts_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """--hosts, --netem and --netem-backend (``defaults=False``: None, for TOML overrides)."""
    parser.add_argument("--hosts", choices=["local", "netns"], default="local" if defaults
                        else None,
                        help="local: every process on 127.0.0.1 (default); netns: each host in "
                        "a Linux network namespace of its own with its own 10.77.K.0/24 address "
                        "on one bridge (needs root and iproute2; torn down on exit)")
    parser.add_argument("--netem", action="append", default=None, metavar="HOST=SPEC",
                        help="netns: emulate HOST's link, e.g. node-1=delay=50ms or "
                        "'clients-*=delay=20ms,jitter=5ms,rate=10mbit,loss=0.1%%' or '*=...' "
                        "(every host); SPEC keys: delay, jitter, loss, rate, limit; it shapes "
                        "what HOST sends; repeatable, an exact host name wins over a glob")
    parser.add_argument("--netem-backend", choices=["auto", "tc", "userspace"],
                        default="auto" if defaults else None,
                        help="netns: tc netem, or a userspace link (TAP pair + pump) for kernels "
                        "without sch_netem; auto: tc where it works (default)")


def netem_table(args: argparse.Namespace) -> dict[str, str] | None:
    from dualchain.deploy.netem import parse_netem_options

    return parse_netem_options(args.netem) if args.netem else None


def print_result(result: dict, as_json: bool) -> None:
    """A benchmark's JSON document: one line with --json, indented without."""
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))
