"""The processes of a testbed, one subcommand each: ``keygen``, ``chain`` (a CTBC or CMBC
daemon), ``miner``, ``node``, ``client``, and ``testnet`` (a chain testnet's configs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dualchain.chain.mldsa import BACKENDS, DEFAULT_BACKEND
from dualchain.cli.common import add_crypto_options


def cmd_keygen(args: argparse.Namespace) -> int:
    from dualchain.chain.identity import Signer, write_public_file

    directory: Path = args.dir
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_path = directory / f"{args.name}.key"
    pub_path = directory / f"{args.name}.pub.json"
    signer = Signer.generate(args.algorithm, args.backend)
    signer.save(key_path)
    write_public_file(pub_path, signer.public)
    print(signer.id.hex())
    print(f"wrote {key_path} (secret seed, mode 0600) and {pub_path}", file=sys.stderr)
    return 0


def cmd_chain(args: argparse.Namespace) -> int:
    from dualchain.apps.factory import run
    from dualchain.chain.daemon.config import DaemonConfig

    config = DaemonConfig.load(args.config)
    if config.kind != args.kind:
        print(f"dualchain: error: --kind {args.kind} but {args.config} is a {config.kind} config",
              file=sys.stderr)
        return 2
    return run(args.config, args.log_level)


def cmd_miner(args: argparse.Namespace) -> int:
    from dualchain.chain.miner import MinerConfig, parse_account, run
    from dualchain.chain.mldsa import resolve_backend
    from dualchain.chain.rpc import tls_from_paths

    try:
        config = MinerConfig(cmbc=args.cmbc, key=args.key, workers=args.workers, duty=args.duty,
                             refresh_s=args.refresh, backend=resolve_backend(args.backend),
                             reward_account=parse_account(args.reward_account),
                             metrics_port=args.metrics_port,
                             tls=tls_from_paths(args.tls_ca, args.tls_cert, args.tls_key))
    except ValueError as exc:
        print(f"dualchain: error: {exc}", file=sys.stderr)
        return 2
    return run(config, args.log_level)


def cmd_node(args: argparse.Namespace) -> int:
    from dualchain.node.main import run

    return run(args.config, args.log_level)


def cmd_client(args: argparse.Namespace) -> int:
    from dualchain.client.main import run

    return run(args.config, args.log_level, slowdown=args.slowdown, drop_prob=args.drop_prob)


def cmd_testnet(args: argparse.Namespace) -> int:
    from dualchain.chain.consensus.pow import PowParams
    from dualchain.deploy.testnet import TestnetPlan, make_testnet

    if args.kind == "ctbc" and args.miners:
        print("dualchain: error: --miners is for --kind cmbc", file=sys.stderr)
        return 2
    configs = make_testnet(args.dir, TestnetPlan(
        nodes=args.nodes, algorithm=args.algorithm, base_port=args.base_port,
        metrics_base_port=args.metrics_base_port, committee_size=args.committee_size,
        kind=args.kind, chain_id=f"{args.kind}-local", miners=args.miners,
        pow=PowParams(initial_difficulty=args.difficulty,
                      block_interval_ms=int(args.interval * 1000),
                      finality_depth=args.finality_depth),
    ))
    for path in configs:
        print(path)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    keygen = sub.add_parser(
        "keygen",
        help="create an ML-DSA identity and print its id",
        description="Writes DIR/NAME.key (the secret 32-byte seed, mode 0600) and "
        "DIR/NAME.pub.json (public key and id), and prints the id (SHA-256 of the public key).",
    )
    keygen.add_argument("--dir", type=Path, required=True, help="directory for the key files")
    keygen.add_argument("--name", default="identity", help="file name stem (default: identity)")
    add_crypto_options(keygen)
    keygen.set_defaults(func=cmd_keygen)

    chain = sub.add_parser(
        "chain",
        help="run a chain daemon (one replica)",
        description="Runs one replica of a chain until SIGTERM/SIGINT. CTBC replicas run "
        "committee BFT consensus with their peers; CMBC replicas follow the most-work proof-of-"
        "work chain, gossip blocks and serve block templates to miners. Prints a JSON 'ready' "
        "line on stdout once serving.",
    )
    chain.add_argument("--kind", choices=["ctbc", "cmbc"], required=True,
                       help="which chain: ctbc (the committee main chain) or cmbc (the "
                       "proof-of-work management chain)")
    chain.add_argument("--config", type=Path, required=True,
                       help="the daemon's JSON config (see 'dualchain testnet')")
    chain.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    chain.set_defaults(func=cmd_chain)

    miner = sub.add_parser(
        "miner",
        help="run a CMBC miner process",
        description="Asks a CMBC daemon for block templates, searches nonces on W worker "
        "processes and submits solutions; drops stale work as soon as the daemon's tip "
        "changes. Prints JSON lines (ready, block, stopped) on stdout.",
    )
    miner.add_argument("--cmbc", required=True, help="host:port of the CMBC daemon")
    miner.add_argument("--key", type=Path, required=True,
                       help="the miner's ML-DSA key file (it signs blocks and rewards)")
    miner.add_argument("--reward-account", default="",
                       help="64 hex digits: the identity id its block rewards credit (default: "
                       "the key's own id; a client that mines names its client identity)")
    miner.add_argument("--workers", type=int, default=1,
                       help="nonce-search worker processes (default 1)")
    miner.add_argument("--duty", type=float, default=1.0,
                       help="share of time each worker hashes, in (0, 1] (default 1.0): caps "
                       "the miner's CPU on a machine that also trains")
    miner.add_argument("--refresh", type=float, default=1.0,
                       help="seconds before asking for a fresh template with new "
                       "transactions (default 1.0)")
    miner.add_argument("--metrics-port", type=int, default=0,
                       help="serve Prometheus metrics on this port (default 0: off)")
    miner.add_argument("--backend", choices=[*sorted(BACKENDS), "auto"], default=DEFAULT_BACKEND,
                       help=f"ML-DSA implementation (default {DEFAULT_BACKEND}; auto: liboqs "
                       "where it works here, else cryptography)")
    for end in ("ca", "cert", "key"):
        miner.add_argument(f"--tls-{end}", type=Path, default=None,
                           help=f"mutual TLS to the daemon: the PEM {end} file (all three or "
                           "none; see 'dualchain certs')")
    miner.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    miner.set_defaults(func=cmd_miner)

    client = sub.add_parser(
        "client",
        help="run a federated learning client (one device)",
        description="Registers the client on CMBC, then asks its server node for tasks, "
        "trains on its part of the dataset, uploads ML-DSA signed updates (buffering and "
        "averaging them while its node is unreachable) and sends state reports to CMBC. "
        "Prints JSON lines (ready, registered, task, flush, report, stopped) on stdout.",
    )
    client.add_argument("--config", type=Path, required=True,
                        help="the client's JSON config (see dualchain/client/config.py)")
    client.add_argument("--slowdown", type=float, default=None,
                        help="override the config: emulate a device this many times slower "
                        "(>= 1; sleeps (slowdown-1) x each batch's compute time)")
    client.add_argument("--drop-prob", type=float, default=None,
                        help="override the config: probability in [0, 1] that a finished "
                        "update is not uploaded")
    client.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    client.set_defaults(func=cmd_client)

    node = sub.add_parser(
        "node",
        help="run a server node (FL coordinator beside its CTBC and CMBC daemons)",
        description="Serves clients (tasks, models, signed updates), checks every update, "
        "relays updates to the other nodes, aggregates when it is the aggregator and commits "
        "model versions to CTBC. Prints JSON lines: 'ready', then 'version' per committed "
        "model version with its test accuracy.",
    )
    node.add_argument("--config", type=Path, required=True, help="the node's JSON config")
    node.add_argument("--log-level", default="INFO",
                      choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    node.set_defaults(func=cmd_node)

    testnet = sub.add_parser(
        "testnet",
        help="write keys, genesis and configs of a local CTBC or CMBC testnet",
        description="Writes DIR/keys/node-I.key, DIR/genesis.json and DIR/node-I.json for N "
        "replicas on consecutive ports of 127.0.0.1 (and DIR/keys/miner-J.key for CMBC "
        "miners), and prints the config paths.",
    )
    testnet.add_argument("--kind", choices=["ctbc", "cmbc"], default="ctbc",
                         help="which chain (default ctbc)")
    testnet.add_argument("--miners", type=int, default=0,
                         help="CMBC: miner keys to write (default 0)")
    testnet.add_argument("--difficulty", type=int, default=1_000_000,
                         help="CMBC: expected hashes per block at genesis (default 1000000)")
    testnet.add_argument("--interval", type=float, default=2.0,
                         help="CMBC: target block interval in seconds (default 2.0)")
    testnet.add_argument("--finality-depth", type=int, default=6,
                         help="CMBC: blocks deep at which a block is final (default 6)")
    testnet.add_argument("--dir", type=Path, required=True, help="output directory")
    testnet.add_argument("--nodes", type=int, default=4, help="replicas (default 4)")
    testnet.add_argument("--committee-size", type=int, default=None,
                         help="committee members (default: every node)")
    testnet.add_argument("--base-port", type=int, default=7000,
                         help="port of node 0; node I listens on base+I (default 7000)")
    testnet.add_argument("--metrics-base-port", type=int, default=0,
                         help="Prometheus port of node 0, base+I for node I (default: off)")
    add_crypto_options(testnet)
    testnet.set_defaults(func=cmd_testnet)
