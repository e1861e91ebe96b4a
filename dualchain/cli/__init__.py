"""The ``dualchain`` command line, one module per command group: ``processes`` (the roles a
testbed runs: keygen, chain, miner, node, client, testnet), ``testbed`` (up, health, status,
certs; ``compose`` in a module of its own) and ``bench`` (bench, demo); ``common`` holds the
options several share. Each subcommand parses its arguments and calls one
function that does the work, so the same functions serve the tests. Nothing but this package
imports ``dualchain.bench`` (import-linter checks it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dualchain import __version__
from dualchain.chain.errors import DualchainError
from dualchain.cli import bench, processes, testbed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dualchain",
        description="Blockchain-based asynchronous federated learning on a dual chain "
        "(CTBC + CMBC) with ML-DSA signatures.",
    )
    parser.add_argument("--version", action="version", version=f"dualchain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    processes.add_parsers(sub)
    testbed.add_parsers(sub)
    bench.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from dualchain.runtime.lifeline import watch_parent

    watch_parent()  # started by a supervisor: stop when the launcher dies (lifeline.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DualchainError as exc:
        print(f"dualchain: error: {exc.reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

