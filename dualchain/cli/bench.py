"""``bench`` (benchmarks and experiments that print JSON) and ``demo``; the only importer of
``dualchain.bench``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dualchain.chain.mldsa import BACKENDS, Algorithm
from dualchain.cli.common import (
    add_crypto_options,
    add_hosts_options,
    netem_table,
    parse_algorithm,
    print_result,
)


def cmd_bench_crypto(args: argparse.Namespace) -> int:
    from dualchain.bench.crypto import crypto_benchmark

    result = crypto_benchmark(
        seconds=args.seconds,
        backends=args.backends,
        algorithms=args.algorithms,
        workers=args.workers,
    )
    print_result(result, args.json)
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
    print_result(result, args.json)
    return 0


def cmd_bench_consensus(args: argparse.Namespace) -> int:
    from dualchain.bench.consensus import consensus_benchmark

    result = consensus_benchmark(
        nodes=args.nodes, duration=args.duration, algorithm=args.alg, rate=args.rate,
        senders=args.senders, batch=args.batch, block_interval_ms=args.block_interval_ms,
        max_block_txs=args.max_block_txs, hosts=args.hosts, netem=netem_table(args),
        netem_backend=args.netem_backend, linear_votes=not args.all_to_all,
        progress=None if args.json else (lambda line: print(line, file=sys.stderr)),
    )
    print_result(result, args.json)
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
    print_result(result, args.json)
    return 0


def cmd_bench_fl(args: argparse.Namespace) -> int:
    from dualchain.bench.fl import fl_benchmark
    from dualchain.deploy.up import UpConfig

    base = UpConfig(nodes=args.nodes, clients=args.clients, rounds=args.rounds,
                    dataset=args.dataset, data_dir=str(args.data_dir) if args.data_dir else None,
                    slowdowns=[float(x) for x in args.slowdowns.split(",")] if args.slowdowns
                    else [], stragglers=args.stragglers, hosts=args.hosts,
                    netem=netem_table(args) or {}, netem_backend=args.netem_backend)
    progress = None if args.json else (lambda line: print(line, file=sys.stderr))
    print_result(fl_benchmark(args.modes.split(","), base, args.target, progress), args.json)
    return 0


def cmd_bench_paper(args: argparse.Namespace) -> int:
    from dualchain.bench.paper import run_experiment
    from dualchain.bench.sweep import SWEEPS, node_sweep
    from dualchain.deploy.up import UpConfig, UpError

    try:
        nodes = [int(x) for x in args.nodes.split(",")]
        if not nodes or min(nodes) < 1 or (args.experiment not in (*SWEEPS, "fig8")
                                           and len(nodes) != 1):
            raise ValueError
    except ValueError:
        print(f"dualchain bench paper: --nodes {args.nodes!r}: a positive number (fig8/fig9/"
              "fig10: a comma-separated list)", file=sys.stderr)
        return 2
    progress = None if args.json else (lambda line: print(line, file=sys.stderr))
    if args.experiment == "dp":
        from dualchain.bench.dp import run_dp

        if args.seeds < 1:
            print(f"dualchain bench paper: --seeds {args.seeds}: at least 1", file=sys.stderr)
            return 2
        print_result(run_dp(args.out, args.seeds, progress or (lambda line: None)), args.json)
        return 0
    if args.experiment == "rewards":
        from dualchain.bench.rewards import roles, run_rewards

        try:
            roles(args.clients)
            if args.rounds < 1 or args.live_versions < 0:
                raise ValueError("--rounds must be at least 1, --live-versions at least 0")
        except ValueError as exc:
            print(f"dualchain bench paper: {exc}", file=sys.stderr)
            return 2
        print_result(run_rewards(args.out, args.clients, args.rounds, args.live_versions,
                                 progress or (lambda line: None)), args.json)
        return 0
    if args.experiment == "mining":
        from dualchain.bench.mining import check_settings, run_mining

        try:
            thetas = [float(x) for x in args.thetas.split(",")]
            check_settings(thetas, args.budget_blocks)
        except ValueError as exc:
            print(f"dualchain bench paper: --thetas {args.thetas!r} / --budget-blocks "
                  f"{args.budget_blocks}: {exc}", file=sys.stderr)
            return 2
        print_result(run_mining(args.out, thetas, args.budget_blocks,
                                progress or (lambda line: None)), args.json)
        return 0
    if args.experiment in SWEEPS:
        print_result(node_sweep(args.experiment, nodes, args.sweep_duration_s, args.out,
                                 progress or (lambda line: None), hosts=args.hosts,
                                 netem=netem_table(args), linear_votes=not args.all_to_all,
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
    if args.experiment == "fig8":
        from dualchain.bench.fig8 import fig8_sweep

        chains = args.chains.split(",")
        if args.clients_per_node < 1 or args.warmup < 0 or not set(chains) <= {"dual", "single"}:
            print("dualchain bench paper: --clients-per-node must be at least 1, --warmup at "
                  "least 0, --chains dual and/or single", file=sys.stderr)
            return 2
        print_result(fig8_sweep(base, nodes, args.clients_per_node, args.warmup, args.out,
                                progress or (lambda line: None), chains), args.json)
        return 0
    ratios = [float(x) for x in args.ratios.split(",")] if args.ratios else None
    try:
        poison_versions = tuple(int(x) for x in args.poison_versions.split(","))
        bad_clients = tuple(int(x) for x in args.bad_clients.split(","))
        if (min(poison_versions) < 1 or args.rho <= 0 or args.wait_s <= 0
                or (args.experiment == "fig6"
                    and not all(0 <= b <= args.clients for b in bad_clients))):
            raise ValueError
    except ValueError:
        print("dualchain bench paper: --poison-versions: versions from 1, --rho and --wait-s "
              f"positive, --bad-clients: counts from 0 to --clients ({args.clients})",
              file=sys.stderr)
        return 2
    result = run_experiment(args.experiment, base, args.out, progress or (lambda line: None),
                            modes=args.modes.split(",") if args.modes else None, ratios=ratios,
                            small_batches=args.small_batches, poison_versions=poison_versions,
                            rho=args.rho, bad_clients=bad_clients,
                            dropout_from=args.dropout_from, wait_s=args.wait_s,
                            **({"overhead_s": args.task_overhead_s}
                               if args.task_overhead_s is not None else {}))
    print_result(result, args.json)
    return 0


def cmd_bench_central(args: argparse.Namespace) -> int:
    from dualchain.bench.central import central_benchmark

    print_result(central_benchmark(args.dataset, args.data_dir, args.epochs, args.learning_rate,
                                    threads=args.threads), args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dualchain.bench.demo import DemoConfig, run_demo

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


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
    add_crypto_options(demo)
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
    crypto.add_argument("--algorithm", dest="algorithms", action="append", type=parse_algorithm,
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
    consensus.add_argument("--alg", type=parse_algorithm, default=Algorithm.ML_DSA_44,
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
    add_hosts_options(consensus)
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
    pow_.add_argument("--alg", type=parse_algorithm, default=Algorithm.ML_DSA_44,
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
    add_hosts_options(fl)
    fl.set_defaults(func=cmd_bench_fl)

    paper = bench_sub.add_parser(
        "paper",
        help="seed 000 §5 experiments: table3, fig4, fig6, fig7, table4, table5, fig8, fig9, "
        "fig10; issue 15's attacks, lazy and poison; seed 004: dp, mining; seed 002: rewards",
        description="table3: C_gmax and accuracy per mode on one heterogeneous testbed, the "
        "ddmlts ratios and its plans against the OLAR optimum; fig7: accuracy against time at "
        "several straggler ratios, ddmlts and fedavg (testbeds); fig4: round time against the "
        "straggler ratio for alpha 0.5/1/1.5, grouped and ungrouped (computed from measured "
        "training speed); table4: round time against the fraction ra of clients on small "
        "tasks (computed likewise); table5: single against dual chain in ddmlts mode for "
        "--duration-s with random client state changes (aggregations, network adjustments, "
        "CPU per chain); fig8: communication time per model version (round time less the "
        "training on its critical path) against --nodes N1,N2,..., a ddmlts testbed per N "
        "with --clients-per-node clients each, dual and single chain; fig9/fig10: committed "
        "tx/s and consensus latency against --nodes N1,N2,... (a CTBC testnet per N under "
        "more load than it commits, and an etcd cluster of N members under the same load as "
        "the Raft baseline, skipped where etcd is not installed); attacks: an attack x defense "
        "table of final accuracy and per-update detection with 30% attackers, lazy: the PN "
        "watermark's detection at 9/6/3 dB and the accuracy with 30% lazy clients (both in "
        "process, bench/attacks.py); dp (seed 004 Fig. 2): final accuracy against epsilon "
        "1/2/4/8/inf, constant against adaptive noise, per-example DP-SGD clients in process "
        "with real training; poison (seed 003 Fig. 11): node 0 poisons the model at "
        "--poison-versions, accuracy per version of the live testbed (the committee refuses, "
        "the node is excluded) against the run replayed with no check and a central FedAvg "
        "aggregator; fig6 (seed 000 Fig. 6): final accuracy against --bad-clients dropped-out "
        "clients, fedavg against ddmlts (testbeds); rewards (seed 002 Fig. 9): detection rate "
        "and each client's reward with honest, free-riding and sign-flipping clients, IID and "
        "non-IID, in process (bench/rewards.py), and a live testbed's CTBC replicas' balances "
        "compared; mining (seed 004 Fig. 3): training loss against the rounds K in a budget "
        "of --budget-blocks block times, for each --thetas, clients that split their compute "
        "between epochs of measured t_T and blocks of t_B = t_T/theta (in process, real "
        "training, bench/mining.py). Writes NAME.json, NAME.csv (and NAME.png) under --out.",
    )
    paper.add_argument("--experiment", required=True,
                       choices=["table3", "fig4", "fig7", "table4", "table5", "fig8", "fig9",
                                "fig10", "attacks", "lazy", "dp", "poison", "fig6", "rewards",
                                "mining"])
    paper.add_argument("--live-versions", type=int, default=4,
                       help="rewards: versions of the live testbed whose CTBC replicas' "
                       "balances are compared (default 4; 0: no testbed)")
    paper.add_argument("--seeds", type=int, default=3,
                       help="dp: noise seeds per point (default 3)")
    paper.add_argument("--thetas", default="0.2,0.5,0.8",
                       help="mining: the training/mining ratios theta = t_T/t_B (default "
                       "0.2,0.5,0.8)")
    paper.add_argument("--budget-blocks", type=int, default=40,
                       help="mining: the compute budget T_sum in block times t_B (default 40)")
    paper.add_argument("--sweep-duration-s", type=float, default=20.0,
                       help="fig9/fig10: measurement window per run (default 20)")
    paper.add_argument("--all-to-all", action="store_true",
                       help="fig9/fig10: every vote to every replica (default: linear votes)")
    paper.add_argument("--no-baseline", action="store_true",
                       help="fig9/fig10: leave the etcd baseline out")
    add_hosts_options(paper)
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
    paper.add_argument("--modes", default="",
                       help="table3: modes to run (default ddmlts,fedasync,semisync,fedavg); "
                       "fig6: fedavg,ddmlts")
    paper.add_argument("--poison-versions", default="20,60",
                       help="poison: versions node 0 poisons (default 20,60)")
    paper.add_argument("--rho", type=float, default=0.1,
                       help="poison: the noise scale rho of w - rho q (default 0.1)")
    paper.add_argument("--bad-clients", default="0,2,4,6",
                       help="fig6: numbers of dropped-out clients (default 0,2,4,6)")
    paper.add_argument("--dropout-from", type=int, default=2,
                       help="fig6: the version bad clients drop out from (default 2)")
    paper.add_argument("--wait-s", type=float, default=5.0,
                       help="fig6: how long a round waits for missing clients, fedavg and "
                       "ddmlts alike (default 5)")
    paper.add_argument("--nodes", default="2",
                       help="server nodes (default 2); fig8/fig9/fig10: the node counts, "
                       "comma-separated (e.g. 4,8,16,24,36)")
    paper.add_argument("--clients", type=int, default=10, help="clients (default 10)")
    paper.add_argument("--clients-per-node", type=int, default=1,
                       help="fig8: clients per server node (default 1)")
    paper.add_argument("--warmup", type=int, default=2,
                       help="fig8: versions left out at the start (default 2)")
    paper.add_argument("--chains", default="dual,single",
                       help="fig8: the chain setups to run (default dual,single)")
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
    add_crypto_options(ledger)
    ledger.add_argument("--json", action="store_true", help="print one compact JSON document")
    ledger.set_defaults(func=cmd_bench_ledger)
