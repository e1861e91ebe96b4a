"""The ``dualchain`` command line.

Each subcommand parses its arguments here and calls one function that does the work, so the same
functions serve the tests. Subcommands appear here only once they do something real.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from dualchain import __version__
from dualchain.chain.errors import DualchainError
from dualchain.chain.mldsa import BACKENDS, DEFAULT_ALGORITHM, DEFAULT_BACKEND, Algorithm


def _algorithm(value: str) -> Algorithm:
    try:
        return Algorithm.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_crypto_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--algorithm",
        type=_algorithm,
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


def _add_hosts_options(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
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


def _netem_table(args: argparse.Namespace) -> dict[str, str] | None:
    from dualchain.deploy.netem import parse_netem_options

    return parse_netem_options(args.netem) if args.netem else None


def _print(result: dict, as_json: bool) -> None:
    print(json.dumps(result) if as_json else json.dumps(result, indent=2))


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


def cmd_bench_crypto(args: argparse.Namespace) -> int:
    from dualchain.bench.crypto import crypto_benchmark

    result = crypto_benchmark(
        seconds=args.seconds,
        backends=args.backends,
        algorithms=args.algorithms,
        workers=args.workers,
    )
    _print(result, args.json)
    return 0


def cmd_bench_ledger(args: argparse.Namespace) -> int:
    from dualchain.bench.ledger import ledger_benchmark

    result = ledger_benchmark(
        txs=args.txs,
        block_txs=args.block_txs,
        algorithm=args.algorithm,
        backend=args.backend,
        workers=args.workers,
        directory=args.dir,
    )
    _print(result, args.json)
    return 0


def cmd_bench_consensus(args: argparse.Namespace) -> int:
    from dualchain.bench.consensus import consensus_benchmark

    result = consensus_benchmark(
        nodes=args.nodes, duration=args.duration, algorithm=args.alg, rate=args.rate,
        senders=args.senders, batch=args.batch, block_interval_ms=args.block_interval_ms,
        max_block_txs=args.max_block_txs, hosts=args.hosts, netem=_netem_table(args),
        netem_backend=args.netem_backend, linear_votes=not args.all_to_all,
        progress=None if args.json else (lambda line: print(line, file=sys.stderr)),
    )
    _print(result, args.json)
    return 0


def cmd_bench_pow(args: argparse.Namespace) -> int:
    from dualchain.bench.pow import pow_benchmark

    result = pow_benchmark(
        daemons=args.daemons, miners=args.miners, interval=args.interval,
        duration=args.duration, warmup=args.warmup, rate=args.rate,
        miner_workers=args.miner_workers, miner_duty=args.miner_duty, retarget=args.retarget,
        algorithm=args.alg,
        progress=None if args.json else (lambda line: print(line, file=sys.stderr)),
        keep=args.keep, log_level=args.log_level,
    )
    _print(result, args.json)
    return 0


def cmd_bench_fl(args: argparse.Namespace) -> int:
    from dualchain.bench.fl import fl_benchmark
    from dualchain.deploy.up import UpConfig

    base = UpConfig(nodes=args.nodes, clients=args.clients, rounds=args.rounds,
                    dataset=args.dataset, data_dir=str(args.data_dir) if args.data_dir else None,
                    slowdowns=[float(x) for x in args.slowdowns.split(",")] if args.slowdowns
                    else [], stragglers=args.stragglers, hosts=args.hosts,
                    netem=_netem_table(args) or {}, netem_backend=args.netem_backend)
    progress = None if args.json else (lambda line: print(line, file=sys.stderr))
    _print(fl_benchmark(args.modes.split(","), base, args.target, progress), args.json)
    return 0


def cmd_bench_paper(args: argparse.Namespace) -> int:
    from dualchain.bench.paper import run_experiment
    from dualchain.bench.sweep import SWEEPS, node_sweep
    from dualchain.deploy.up import UpConfig, UpError

    try:
        nodes = [int(x) for x in args.nodes.split(",")]
        if not nodes or min(nodes) < 1 or (args.experiment not in SWEEPS and len(nodes) != 1):
            raise ValueError
    except ValueError:
        print(f"dualchain bench paper: --nodes {args.nodes!r}: a positive number (fig9/fig10: "
              "a comma-separated list)", file=sys.stderr)
        return 2
    progress = None if args.json else (lambda line: print(line, file=sys.stderr))
    if args.experiment in SWEEPS:
        _print(node_sweep(args.experiment, nodes, args.sweep_duration_s, args.out,
                          progress or (lambda line: None), hosts=args.hosts,
                          netem=_netem_table(args), linear_votes=not args.all_to_all,
                          baseline=not args.no_baseline), args.json)
        return 0
    try:
        base = UpConfig(nodes=nodes[0], clients=args.clients, rounds=args.rounds,
                        dataset=args.dataset,
                        data_dir=str(args.data_dir) if args.data_dir else None,
                        stragglers=args.stragglers, sched_alpha=args.sched_alpha,
                        batches=args.batches, timeout_s=args.timeout_s,
                        **({"duration_s": args.duration_s, "state_change_s": args.state_change_s}
                           if args.experiment == "table5" else {}))
    except UpError as exc:
        print(f"dualchain bench paper: {exc}", file=sys.stderr)
        return 2
    ratios = [float(x) for x in args.ratios.split(",")] if args.ratios else None
    result = run_experiment(args.experiment, base, args.out, progress or (lambda line: None),
                            modes=args.modes.split(","), ratios=ratios,
                            small_batches=args.small_batches,
                            **({"overhead_s": args.task_overhead_s}
                               if args.task_overhead_s is not None else {}))
    _print(result, args.json)
    return 0


def cmd_bench_central(args: argparse.Namespace) -> int:
    from dualchain.bench.central import central_benchmark

    _print(central_benchmark(args.dataset, args.data_dir, args.epochs, args.learning_rate,
                             threads=args.threads), args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dualchain.deploy.demo import DemoConfig, run_demo

    config = DemoConfig(
        out=args.out,
        senders=args.senders,
        txs_per_sender=args.txs_per_sender,
        block_txs=args.block_txs,
        algorithm=args.algorithm,
        backend=args.backend,
        ctbc_nodes=args.ctbc_nodes,
        ctbc_seconds=args.ctbc_seconds,
    )
    report = run_demo(config)
    ctbc_ok = report["ctbc"] is None or report["ctbc"]["committed"] > 0
    return 0 if report["consistent"] and ctbc_ok else 1


def cmd_chain(args: argparse.Namespace) -> int:
    from dualchain.chain.daemon.config import DaemonConfig
    from dualchain.chain.daemon.main import run

    config = DaemonConfig.load(args.config)
    if config.kind != args.kind:
        print(f"dualchain: error: --kind {args.kind} but {args.config} is a {config.kind} config",
              file=sys.stderr)
        return 2
    return run(args.config, args.log_level)


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


def cmd_miner(args: argparse.Namespace) -> int:
    from dualchain.chain.miner import MinerConfig, run
    from dualchain.chain.mldsa import resolve_backend
    from dualchain.chain.rpc import tls_from_paths

    try:
        config = MinerConfig(cmbc=args.cmbc, key=args.key, workers=args.workers, duty=args.duty,
                             refresh_s=args.refresh, backend=resolve_backend(args.backend),
                             metrics_port=args.metrics_port,
                             tls=tls_from_paths(args.tls_ca, args.tls_cert, args.tls_key))
    except ValueError as exc:
        print(f"dualchain: error: {exc}", file=sys.stderr)
        return 2
    return run(config, args.log_level)


def cmd_node(args: argparse.Namespace) -> int:
    from dualchain.node.main import run

    return run(args.config, args.log_level)


def cmd_up(args: argparse.Namespace) -> int:
    from dualchain.deploy.up import Testbed, UpConfig, UpError

    overrides = {name: getattr(args, name) for name in (
        "nodes", "clients", "miners", "dataset", "data_dir", "rounds", "mode", "workdir",
        "partition", "alpha", "seed", "batches", "learning_rate", "algorithm", "timeout_s",
        "stragglers", "quorum", "sched_alpha", "chains", "join_nodes", "join_clients",
        "join_after", "tls", "hosts", "netem_backend", "metrics")}
    if args.data_dir is not None:
        overrides["data_dir"] = str(args.data_dir)
    try:
        overrides["netem"] = _netem_table(args)
    except ValueError as exc:
        print(f"dualchain: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.config is not None:
            config = UpConfig.from_toml(args.config, overrides)
        else:
            config = UpConfig(**{k: v for k, v in overrides.items() if v is not None})
        if config.hosts == "netns":  # a kill unwinds like Ctrl-C: the namespaces go too
            from dualchain.deploy.netns import interrupt_on_sigterm

            interrupt_on_sigterm()
        report = Testbed(config).run()
    except UpError as exc:
        print(f"dualchain: error: {exc}", file=sys.stderr)
        return 2
    workdir = Path(config.workdir)
    print(f"final accuracy {report['final_accuracy']} after {report['time_to_final_s']} s; "
          f"report: {workdir / 'report.json'}, {workdir / 'metrics.csv'}, {workdir / 'plots'}/")
    return 130 if report["interrupted"] else 0


def cmd_status(args: argparse.Namespace) -> int:
    from dualchain.deploy.status import testbed_status

    try:
        print(json.dumps(testbed_status(args.workdir), indent=2))
    except FileNotFoundError as exc:
        print(f"dualchain: error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from dualchain.deploy.certs import CertsError, make_certs

    try:
        files = make_certs(args.dir, args.names, args.hosts, args.out, args.configure)
    except CertsError as exc:
        print(f"dualchain: error: {exc}", file=sys.stderr)
        return 2
    for tls in files.values():
        print(tls.cert)
    return 0


def cmd_client(args: argparse.Namespace) -> int:
    from dualchain.client.main import run

    return run(args.config, args.log_level, slowdown=args.slowdown, drop_prob=args.drop_prob)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dualchain",
        description="Blockchain-based asynchronous federated learning on a dual chain "
        "(CTBC + CMBC) with ML-DSA signatures.",
    )
    parser.add_argument("--version", action="version", version=f"dualchain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = sub.add_parser(
        "keygen",
        help="create an ML-DSA identity and print its id",
        description="Writes DIR/NAME.key (the secret 32-byte seed, mode 0600) and "
        "DIR/NAME.pub.json (public key and id), and prints the id (SHA-256 of the public key).",
    )
    keygen.add_argument("--dir", type=Path, required=True, help="directory for the key files")
    keygen.add_argument("--name", default="identity", help="file name stem (default: identity)")
    _add_crypto_options(keygen)
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
                       help="the miner's ML-DSA key file (rewards go to its id)")
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

    up = sub.add_parser(
        "up",
        help="run a whole local testbed (the main job) and write a report",
        description="Starts a CTBC and a CMBC daemon per server node, the miners, the server "
        "nodes and the clients, each its own process, on this host; prints one line per "
        "committed model version; stops everything after ROUNDS versions (or on Ctrl-C) and "
        "writes WORKDIR/report.json, metrics.csv and plots/*.png. Flags override the TOML "
        "config's keys (same names). With --hosts netns the hosts are network namespaces: "
        "node-I (node I's CTBC and CMBC daemons, the node, the miners mining on its CMBC) and "
        "clients-I (node I's clients); in TOML: hosts = \"netns\" and a [netem] table such as "
        "\"node-1\" = \"delay=50ms\" (see docs/deploy.md).",
    )
    up.add_argument("--config", type=Path, default=None, help="a TOML file of UpConfig keys")
    up.add_argument("--nodes", type=int, default=None, help="server nodes (default 4)")
    up.add_argument("--clients", type=int, default=None, help="clients (default 8)")
    up.add_argument("--miners", type=int, default=None, help="CMBC miners (default 1)")
    up.add_argument("--dataset", default=None,
                    help="digits (embedded, default), mnist, fashion-mnist, cifar10, cifar100")
    up.add_argument("--data-dir", type=Path, default=None,
                    help="where the dataset files are (not needed for digits)")
    up.add_argument("--rounds", type=int, default=None,
                    help="model versions to commit before stopping (default 20)")
    up.add_argument("--mode", choices=["fedasync", "fedavg", "ddmlts", "semisync"],
                    default=None,
                    help="fedasync (asynchronous, equal tasks; default), fedavg (synchronous "
                    "rounds), ddmlts (client groups and tasks sized per client by the CMBC "
                    "task plan), semisync (a round waits for --quorum of the clients)")
    up.add_argument("--stragglers", type=float, default=None,
                    help="fraction of clients emulated 8x slower; the others spread over "
                    "1x..2x (default 0)")
    up.add_argument("--quorum", type=float, default=None,
                    help="semisync: fraction of clients a round waits for (default 0.5)")
    up.add_argument("--sched-alpha", type=float, default=None,
                    help="ddmlts: eq. 13 balancing factor alpha (default 1.0)")
    up.add_argument("--chains", choices=["dual", "single"], default=None,
                    help="dual (CTBC + CMBC, default) or single: the management transactions "
                    "(registrations, state reports, plans) go on CTBC and no CMBC or miner "
                    "runs (seed 000 Table 5's baseline; with --mode fedasync, BAFL-like)")
    up.add_argument("--join-nodes", type=int, default=None,
                    help="server nodes that join the running testbed through the two stages "
                    "of seed 000 §3.1: a join request on CMBC, then a membership change on "
                    "CTBC (default 0)")
    up.add_argument("--join-clients", type=int, default=None,
                    help="clients attached to the joining nodes (default 0)")
    up.add_argument("--join-after", type=int, default=None,
                    help="the joining nodes start after this many versions (default 3)")
    up.add_argument("--metrics", action="store_true", default=None,
                    help="a Prometheus endpoint per process and WORKDIR/prometheus.yml that "
                    "scrapes them all (the labels the Grafana dashboard in deploy/grafana reads)")
    up.add_argument("--tls", action="store_true", default=None,
                    help="mutual TLS between every process: a testbed CA and a certificate "
                    "per process under WORKDIR/tls (see 'dualchain certs')")
    up.add_argument("--workdir", default=None, help="output directory, replaced (default "
                    "runs/default)")
    up.add_argument("--partition", choices=["iid", "dirichlet", "shards"], default=None,
                    help="how client data is split (default iid)")
    up.add_argument("--alpha", type=float, default=None, help="Dirichlet alpha (default 0.5)")
    up.add_argument("--seed", type=int, default=None, help="model and partition seed (0)")
    up.add_argument("--batches", type=int, default=None, help="batches per task (default 20)")
    up.add_argument("--learning-rate", type=float, default=None,
                    help="client SGD learning rate (default 0.05)")
    up.add_argument("--algorithm", default=None, help="ML-DSA parameter set (ML-DSA-44)")
    up.add_argument("--timeout-s", type=float, default=None,
                    help="stop after this many seconds of training (default 600)")
    _add_hosts_options(up, defaults=False)
    up.set_defaults(func=cmd_up)

    from dualchain.deploy import compose, health_probe

    compose.add_parser(sub)  # dualchain compose: a docker-compose testbed like up's
    health_probe.add_parser(sub)  # dualchain health: the containers' health check

    status = sub.add_parser(
        "status",
        help="summarise a running or finished testbed",
        description="Asks a running testbed's nodes and chain daemons for their state, or "
        "summarises the report of a finished one; prints JSON.",
    )
    status.add_argument("--workdir", type=Path, required=True, help="the testbed's workdir")
    status.set_defaults(func=cmd_status)

    certs = sub.add_parser(
        "certs", help="create a testbed CA and a TLS certificate per process",
        description="Writes OUT/ca.pem and a certificate and key per process, its identity id "
        "in the subject; the processes are DIR's configs and keys, or --names. See "
        "dualchain/deploy/certs.py.")
    certs.add_argument("--dir", type=Path, required=True,
                       help="a testbed directory (its process configs and keys/)")
    certs.add_argument("--names", nargs="+", default=None, metavar="NAME[=ID]",
                       help="these processes instead of DIR's (id: hex, or from keys/NAME.key)")
    certs.add_argument("--hosts", nargs="+", default=[], metavar="HOST",
                       help="extra DNS names or IP addresses in every certificate")
    certs.add_argument("--out", type=Path, default=None, help="output (default DIR/tls)")
    certs.add_argument("--configure", action="store_true",
                       help="also put the tls section into each process config in DIR")
    certs.set_defaults(func=cmd_certs)

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
    _add_crypto_options(testnet)
    testnet.set_defaults(func=cmd_testnet)

    demo = sub.add_parser(
        "demo",
        help="run the ledger and a local CTBC testnet end to end and print a report",
        description="Part 1: creates identities, signs transactions, admits them to a mempool, "
        "builds and validates signed blocks, appends them to a SQLite block store, reopens the "
        "store, checks its consistency and a Merkle inclusion proof. Part 2: runs a CTBC "
        "testnet (one daemon process per replica) fed by a load generator process, with "
        "progress every second. Writes a JSON report.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"),
                      help="output directory, replaced if it exists (default: runs/demo)")
    demo.add_argument("--senders", type=int, default=8, help="signing identities (default 8)")
    demo.add_argument("--txs-per-sender", type=int, default=50,
                      help="transactions each identity signs (default 50)")
    demo.add_argument("--block-txs", type=int, default=100,
                      help="transactions per block at most (default 100)")
    demo.add_argument("--ctbc-nodes", type=int, default=4,
                      help="CTBC replicas in part 2; 0 skips it (default 4)")
    demo.add_argument("--ctbc-seconds", type=float, default=10.0,
                      help="how long part 2 submits transactions (default 10)")
    _add_crypto_options(demo)
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks that print JSON")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")

    crypto = bench_sub.add_parser(
        "crypto",
        help="ML-DSA keygen/sign/verify rates per backend and parameter set",
        description="Keygen, sign and verify per second for every available backend and "
        "parameter set, on one core and on all cores, with the raw library's verify rate "
        "measured in the same run and the ratio of dualchain's verify path to it.",
    )
    crypto.add_argument("--seconds", type=float, default=1.0,
                        help="measuring time per case and round (default 1.0)")
    crypto.add_argument("--backend", dest="backends", action="append", choices=sorted(BACKENDS),
                        help="limit to this backend (repeatable; default: all known)")
    crypto.add_argument("--algorithm", dest="algorithms", action="append", type=_algorithm,
                        help="limit to this parameter set (repeatable; default: all three)")
    crypto.add_argument("--workers", type=int, default=None,
                        help="threads for the all-cores figures (default: CPU count)")
    crypto.add_argument("--json", action="store_true", help="print one compact JSON document")
    crypto.set_defaults(func=cmd_bench_crypto)

    consensus = bench_sub.add_parser(
        "consensus",
        help="throughput and latency of a real CTBC testnet (N daemon processes + load generator)",
        description="Starts N CTBC daemons as separate processes and a load generator process "
        "that submits pre-signed transactions (256-byte payloads) in batches at the offered "
        "rate; prints tps (committed per second as a subscriber sees them), submit-to-commit "
        "latency p50/p99, view changes and CPU percent per daemon. Every replica verifies every "
        "transaction's signature.",
    )
    consensus.add_argument("--nodes", type=int, default=4, help="replicas (default 4)")
    consensus.add_argument("--duration", type=float, default=20.0,
                           help="measurement window in seconds (default 20)")
    consensus.add_argument("--alg", type=_algorithm, default=Algorithm.ML_DSA_44,
                           help="ML-DSA parameter set (default ML-DSA-44)")
    consensus.add_argument("--rate", type=float, default=2500.0,
                           help="offered load in transactions per second (default 2500; 0: "
                                "no load, measures the idle chain: cpu_percent_per_replica_mean)")
    consensus.add_argument("--senders", type=int, default=512,
                           help="distinct signing accounts (default 512)")
    consensus.add_argument("--batch", type=int, default=256,
                           help="transactions per SubmitTxs call at most (default 256; "
                                "fewer when a replica's share of the rate is low: each gets "
                                "a call at least every 100 ms)")
    consensus.add_argument("--block-interval-ms", type=int, default=250,
                           help="leader's wait before proposing (default 250)")
    consensus.add_argument("--max-block-txs", type=int, default=5000,
                           help="transactions per block at most, in the genesis (default 5000)")
    consensus.add_argument("--all-to-all", action="store_true",
                           help="every vote to every replica (default: linear vote collection "
                           "through the round's collector)")
    consensus.add_argument("--json", action="store_true", help="print one compact JSON document")
    _add_hosts_options(consensus)
    consensus.set_defaults(func=cmd_bench_consensus)

    pow_ = bench_sub.add_parser(
        "pow",
        help="block intervals, forks and throughput of a real CMBC network (D daemons, M miners)",
        description="Starts D CMBC daemons and M miner processes and a load generator process "
        "that submits pre-signed management transactions (256-byte payloads); after a warm-up "
        "prints blocks, mean_interval_s, interval_cv, orphan_rate, reorgs, max_reorg_depth, tps "
        "and hashrate_hs over the measurement window. Every daemon verifies every signature.",
    )
    pow_.add_argument("--daemons", type=int, default=3, help="CMBC daemons (default 3)")
    pow_.add_argument("--miners", type=int, default=2, help="miner processes (default 2)")
    pow_.add_argument("--interval", type=float, default=2.0,
                      help="target block interval in seconds (default 2)")
    pow_.add_argument("--duration", type=float, default=180.0,
                      help="measurement window in seconds (default 180: a minute holds about "
                      "30 blocks, whose mean interval varies by 15-20%% from run to run)")
    pow_.add_argument("--warmup", type=float, default=30.0,
                      help="seconds before the window, for retargeting to settle (default 30)")
    pow_.add_argument("--rate", type=float, default=1200.0,
                      help="offered transactions per second (default 1200)")
    pow_.add_argument("--miner-workers", type=int, default=1,
                      help="worker processes per miner (default 1)")
    pow_.add_argument("--miner-duty", type=float, default=0.15,
                      help="share of time each miner worker hashes (default 0.15)")
    pow_.add_argument("--retarget", type=int, default=10,
                      help="blocks between difficulty changes (default 10; at least 3)")
    pow_.add_argument("--alg", type=_algorithm, default=Algorithm.ML_DSA_44,
                      help="ML-DSA parameter set (default ML-DSA-44)")
    pow_.add_argument("--keep", type=Path, default=None, metavar="DIR",
                      help="run in DIR and keep it: genesis, configs, keys, and each daemon's "
                      "and miner's log (node-I.log, miner-J.log) and output (.out) (default: a "
                      "temporary directory, removed)")
    pow_.add_argument("--log-level", default="WARNING",
                      choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                      help="log level of the daemons and miners (default WARNING); DEBUG logs "
                      "each block's outcome and the holds for blocks under validation")
    pow_.add_argument("--json", action="store_true", help="print one compact JSON document")
    pow_.set_defaults(func=cmd_bench_pow)

    fl = bench_sub.add_parser(
        "fl",
        help="FL modes compared on the same testbed: C_gmax, accuracy, time to target, bytes",
        description="Runs 'dualchain up' once per mode with the same configuration and prints, "
        "per mode, the mean C_gmax, final accuracy, time to the target accuracy and the bytes "
        "the server nodes moved for FL.",
    )
    fl.add_argument("--modes", default="fedasync,fedavg",
                    help="comma-separated modes: fedasync, fedavg, semisync, ddmlts (default "
                    "fedasync,fedavg)")
    fl.add_argument("--nodes", type=int, default=2, help="server nodes (default 2)")
    fl.add_argument("--clients", type=int, default=4, help="clients (default 4)")
    fl.add_argument("--rounds", type=int, default=15, help="versions per mode (default 15)")
    fl.add_argument("--dataset", default="digits", help="dataset (default digits)")
    fl.add_argument("--data-dir", type=Path, default=None, help="dataset files")
    fl.add_argument("--target", type=float, default=0.9,
                    help="accuracy for time-to-target (default 0.9)")
    fl.add_argument("--slowdowns", default="",
                    help="per-client slowdown factors, e.g. 1,1,2,4 (default: none)")
    fl.add_argument("--stragglers", type=float, default=0.0,
                    help="without --slowdowns: fraction of clients 8x slower, the rest spread "
                    "over 1x..2x (default 0)")
    fl.add_argument("--json", action="store_true", help="print one compact JSON document")
    _add_hosts_options(fl)
    fl.set_defaults(func=cmd_bench_fl)

    paper = bench_sub.add_parser(
        "paper",
        help="seed 000 §5 experiments: table3, fig4, fig7, table4, table5, fig9, fig10",
        description="table3: C_gmax and accuracy per mode on one heterogeneous testbed, the "
        "ddmlts ratios and its plans against the OLAR optimum; fig7: accuracy against time at "
        "several straggler ratios, ddmlts and fedavg (testbeds); fig4: round time against the "
        "straggler ratio for alpha 0.5/1/1.5, grouped and ungrouped (computed from measured "
        "training speed); table4: round time against the fraction ra of clients on small "
        "tasks (computed likewise); table5: single against dual chain in ddmlts mode for "
        "--duration-s with random client state changes (aggregations, network adjustments, "
        "CPU per chain); fig9/fig10: committed tx/s and consensus latency against --nodes "
        "N1,N2,... (a CTBC testnet per N under more load than it commits, and an etcd cluster "
        "of N members under the same load as the Raft baseline, skipped where etcd is not "
        "installed). Writes NAME.json, NAME.csv (and NAME.png) under --out.",
    )
    paper.add_argument("--experiment", required=True,
                       choices=["table3", "fig4", "fig7", "table4", "table5", "fig9", "fig10"])
    paper.add_argument("--sweep-duration-s", type=float, default=20.0,
                       help="fig9/fig10: measurement window per run (default 20)")
    paper.add_argument("--all-to-all", action="store_true",
                       help="fig9/fig10: every vote to every replica (default: linear votes)")
    paper.add_argument("--no-baseline", action="store_true",
                       help="fig9/fig10: leave the etcd baseline out")
    _add_hosts_options(paper)
    paper.add_argument("--small-batches", type=int, default=2,
                       help="table4: batches per small task (default 2)")
    paper.add_argument("--task-overhead-s", type=float, default=None,
                       help="table4: per-task cost, rtt + model download + upload (default "
                       "0.044 s, the median our digits clients reported)")
    paper.add_argument("--duration-s", type=float, default=300.0,
                       help="table5: seconds each chain setup runs (default 300)")
    paper.add_argument("--state-change-s", type=float, default=40.0,
                       help="table5: a random client's slowdown changes about this often "
                       "(default 40)")
    paper.add_argument("--modes", default="ddmlts,fedasync,semisync,fedavg",
                       help="table3: modes to run (default ddmlts,fedasync,semisync,fedavg)")
    paper.add_argument("--nodes", default="2",
                       help="server nodes (default 2); fig9/fig10: the committee sizes, "
                       "comma-separated (e.g. 4,8,16,24,36)")
    paper.add_argument("--clients", type=int, default=10, help="clients (default 10)")
    paper.add_argument("--rounds", type=int, default=15, help="versions per run (default 15)")
    paper.add_argument("--stragglers", type=float, default=0.2,
                       help="fraction of clients 8x slower, the rest over 1x..2x (default 0.2)")
    paper.add_argument("--ratios", default="",
                       help="fig4/fig7: comma-separated straggler ratios (defaults: "
                       "0,.2,.4,.6,.8,1 and 0,.2,.4); table4: ra values (0,.25,.5,.75,1)")
    paper.add_argument("--sched-alpha", type=float, default=1.0,
                       help="ddmlts alpha for table3/fig7 (default 1.0)")
    paper.add_argument("--batches", type=int, default=20,
                       help="batches per task on average (default 20)")
    paper.add_argument("--dataset", default="digits", help="dataset (default digits)")
    paper.add_argument("--data-dir", type=Path, default=None, help="dataset files")
    paper.add_argument("--timeout-s", type=float, default=600.0,
                       help="per-run training time limit (default 600)")
    paper.add_argument("--out", type=Path, default=Path("runs/paper"),
                       help="where NAME.json/csv/png go (default runs/paper)")
    paper.add_argument("--json", action="store_true", help="print one compact JSON document")
    paper.set_defaults(func=cmd_bench_paper)

    central = bench_sub.add_parser(
        "central",
        help="the FL model trained centrally on the same split (the accuracy baseline)",
        description="Trains the dataset's model on the whole training split in one process "
        "and prints the test accuracy per epoch: what 'dualchain up' is compared with.",
    )
    central.add_argument("--dataset", default="digits", help="dataset (default digits)")
    central.add_argument("--data-dir", type=Path, default=None, help="dataset files")
    central.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    central.add_argument("--learning-rate", type=float, default=0.05,
                         help="SGD learning rate (default 0.05, as the testbed's clients)")
    central.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    central.add_argument("--json", action="store_true", help="print one compact JSON document")
    central.set_defaults(func=cmd_bench_central)

    ledger = bench_sub.add_parser(
        "ledger",
        help="transaction validation, block append and Merkle proof rates",
        description="Transactions validated per second (signatures included, one core and as "
        "batches on all cores), blocks appended per second to a SQLite store with fsync, and "
        "Merkle proofs generated and verified per second.",
    )
    ledger.add_argument("--txs", type=int, default=2000, help="signed transactions (default 2000)")
    ledger.add_argument("--block-txs", type=int, default=100,
                        help="transactions per appended block (default 100)")
    ledger.add_argument("--workers", type=int, default=None,
                        help="threads for batch verification (default: CPU count)")
    ledger.add_argument("--dir", type=Path, default=None,
                        help="where to put the store (default: a temporary directory)")
    _add_crypto_options(ledger)
    ledger.add_argument("--json", action="store_true", help="print one compact JSON document")
    ledger.set_defaults(func=cmd_bench_ledger)
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


if __name__ == "__main__":
    sys.exit(main())
