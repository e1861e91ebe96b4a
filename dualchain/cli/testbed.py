"""Whole testbeds: ``up`` (this host), ``compose`` (containers), ``health``, ``status``,
``readmit`` (an operator's re-admission of an excluded client) and ``certs``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dualchain.cli import compose
from dualchain.cli.common import add_hosts_options, netem_table
from dualchain.deploy import health_probe
from dualchain.deploy.adversaries import add_attack_options

DP_FLAGS = ("dp_epsilon", "dp_delta", "dp_clip", "dp_mechanism", "dp_schedule", "dp_tasks",
            "dp_steps", "dp_learning_rate")


def _add_dp_options(parser: argparse.ArgumentParser) -> None:
    """Local differential privacy of every client (docs/incentives.md); None: the TOML's."""
    parser.add_argument("--dp-epsilon", type=float, default=None,
                        help="local DP: each client's privacy budget epsilon; its tasks train "
                        "with per-example DP-SGD and it stops uploading when the budget is "
                        "spent (default 0: no noise)")
    parser.add_argument("--dp-delta", type=float, default=None,
                        help="local DP: the budget's delta (default 1e-5)")
    parser.add_argument("--dp-clip", type=float, default=None,
                        help="local DP: each example's gradient clipped to this L2 norm (L1 "
                        "with laplace; default 1)")
    parser.add_argument("--dp-mechanism", choices=["gaussian", "laplace"], default=None,
                        help="local DP: the noise (default gaussian)")
    parser.add_argument("--dp-schedule", choices=["constant", "adaptive"], default=None,
                        help="local DP: constant noise, or adaptive: lower noise when the "
                        "committed model's accuracy stops improving (default constant)")
    parser.add_argument("--dp-tasks", type=int, default=None,
                        help="local DP: tasks each client's budget is planned for (default "
                        "--rounds: one per version, the most a synchronous mode asks)")
    parser.add_argument("--dp-steps", type=int, default=None,
                        help="local DP: noisy steps per task, each on all of the client's "
                        "examples and each one release; a private task takes this shape, not "
                        "the node's batches (default 2)")
    parser.add_argument("--dp-learning-rate", type=float, default=None,
                        help="local DP: learning rate of the noisy steps (default 0.5)")


def cmd_up(args: argparse.Namespace) -> int:
    from dualchain.deploy.adversaries import attack_overrides
    from dualchain.deploy.up import Testbed, UpConfig, UpError

    overrides = {name: getattr(args, name) for name in (
        "nodes", "committee_size", "epoch_length", "clients", "miners", "dataset", "data_dir",
        "rounds", "mode", "workdir",
        "partition", "alpha", "seed", "batches", "learning_rate", "algorithm", "timeout_s",
        "stragglers", "quorum", "sched_alpha", "chains", "join_nodes", "join_clients",
        "join_after", "tls", "hosts", "netem_backend", "metrics", "model", "aggregator",
        "defense", "watermark", "attackers", "aggregation", "reward_base", "reward_weight",
        "client_mining",
        *DP_FLAGS)}
    if args.data_dir is not None:
        overrides["data_dir"] = str(args.data_dir)
    try:
        overrides["netem"] = netem_table(args)
        overrides.update(attack_overrides(args.attack, args.node_attack))
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


def _positive(value: str) -> float:
    number = float(value) if value.replace(".", "", 1).isdigit() else -1.0
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return number


def cmd_readmit(args: argparse.Namespace) -> int:
    from dualchain.deploy.operator import readmit
    from dualchain.deploy.status import operator_tls

    result = readmit(args.workdir, args.client, key=args.key, ctbc=args.ctbc,
                     tls=operator_tls(args.workdir), timeout_s=args.timeout_s)
    print(json.dumps(result))
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


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
    up.add_argument("--committee-size", type=int, default=None,
                    help="CTBC committee seats (default 0: every node); with fewer seats than "
                    "nodes, each epoch elects the committee by reputation, so a node with "
                    "misbehaviour on record loses its seat (docs/threat-model.md)")
    up.add_argument("--epoch-length", type=int, default=None,
                    help="CTBC blocks per epoch: the committee is fixed within one (default "
                    "100)")
    up.add_argument("--clients", type=int, default=None, help="clients (default 8)")
    up.add_argument("--miners", type=int, default=None, help="CMBC miners (default 1)")
    up.add_argument("--dataset", default=None,
                    help="digits (embedded, default), mnist, fashion-mnist, cifar10, cifar100, "
                    "or a loader of your own, pkg.module:loader (docs/plugins.md)")
    up.add_argument("--model", default=None, metavar="PKG.MODULE:FACTORY",
                    help="a model factory of your own (default: the dataset's built-in model; "
                    "needed with a dataset plug-in); docs/plugins.md")
    up.add_argument("--aggregator", default=None, metavar="PKG.MODULE:RULE",
                    help="an aggregation rule of your own, which every committee member "
                    "re-executes (default: the rule of --mode); docs/plugins.md")
    up.add_argument("--aggregation", choices=["staleness", "fair"], default=None,
                    help="the chain's rule: staleness (seed 000 eq. 2, default) or fair (seed "
                    "002 eq. II.4: weights from each update's contribution theta); "
                    "docs/incentives.md")
    up.add_argument("--reward-base", type=int, default=None, metavar="MICRO_UNITS",
                    help="micro-units each committed version pays its clients by contribution, "
                    "credited to CTBC balances (default 0: no rewards); docs/incentives.md")
    up.add_argument("--reward-weight", choices=["theta_samples", "theta"], default=None,
                    help="how a version's rewards weigh an update: theta_samples (contribution "
                    "theta times its samples, capped at 4x the pool's low median; default) or "
                    "theta (seed 002 as written); docs/incentives.md")
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
    up.add_argument("--client-mining", type=float, default=None, metavar="THETA",
                    help="every client also mines CMBC for its own identity's account, with a "
                    "miner process it owns hashing 1/(1+THETA) of the time (THETA = t_T/t_B, "
                    "seed 004; default 0: off)")
    add_hosts_options(up, defaults=False)
    add_attack_options(up)
    _add_dp_options(up)
    up.set_defaults(func=cmd_up)

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

    readmit = sub.add_parser(
        "readmit", help="re-admit a client the chain excluded (an operator's transaction)",
        description="Signs a CLIENT_READMIT transaction with the operator's key, submits it to "
        "a CTBC daemon of the testbed in WORKDIR, waits until it is committed and prints the "
        "client's standing as JSON. The CTBC state excludes a client after the genesis's "
        "defense.exclude_after discarded updates; only an operator the genesis names "
        "(operators; 'up' writes WORKDIR/keys/operator.key) may lift it, and only for an "
        "excluded client. See docs/threat-model.md.")
    readmit.add_argument("--workdir", type=Path, required=True, help="the testbed's workdir")
    readmit.add_argument("--client", required=True, metavar="ID|NAME",
                         help="the client: its identity id (64 hex digits) or its key's name "
                         "in WORKDIR/keys (client-3)")
    readmit.add_argument("--key", type=Path, default=None,
                         help="the operator's key file (default WORKDIR/keys/operator.key)")
    readmit.add_argument("--ctbc", default=None, metavar="HOST:PORT",
                         help="the CTBC daemon to submit to (default: the testbed's, in turn)")
    readmit.add_argument("--timeout-s", type=_positive, default=30.0,
                         help="how long to wait for the commit (default 30)")
    readmit.set_defaults(func=cmd_readmit)

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
