"""`dualchain bench pow`: a real CMBC network on this machine: block intervals, forks, throughput.

D CMBC daemons and M miners run as separate processes on loopback; a load generator process
(``loadgen.py``) submits pre-signed management transactions (256-byte payloads) at an offered
rate, spread over the daemons. The difficulty starts from this machine's measured hash rate and
retargets every ``retarget`` blocks; the first ``warmup`` seconds are not measured.

Figures, over the canonical chain of daemon 0 at the end, for blocks whose timestamps fall in the
measurement window:

- ``blocks``, ``mean_interval_s`` and ``interval_cv`` (standard deviation / mean of the
  timestamp differences);
- ``orphan_rate``: stale blocks (valid blocks that ended off the canonical chain: stored on a side
  branch, or disconnected by a reorg, as daemon 0 counted them) over all blocks mined;
- ``reorgs`` and ``max_reorg_depth``: the most any daemon saw;
- ``tps``: management transactions (rewards excluded) in those blocks per second of window;
- ``hashrate_hs``: the sum of the miners' reported hash rates.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc

from dualchain.bench.loadgen import LoadSpec
from dualchain.chain.clock import now_ms
from dualchain.chain.consensus.pow import PowParams, search_nonce
from dualchain.chain.genesis import Genesis, LedgerLimits
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import TxKind
from dualchain.chain.wire import block_from_proto
from dualchain.deploy.processes import free_ports
from dualchain.deploy.testnet import TestnetPlan, make_testnet
from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc
from dualchain.runtime.supervisor import Child, Supervisor

CHAIN_ID = "bench-cmbc"


def _metrics(port: int) -> dict[str, float]:
    """Every sample of a daemon's metrics endpoint, summed over labels, and also by its full
    labelled name."""
    out: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("#") or " " not in line:
                continue
            labelled, value = line.rsplit(" ", 1)
            name = labelled.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
            if "{" in labelled:
                out[labelled] = float(value)
    return out


def _refusals(after: list[dict[str, float]], before: list[dict[str, float]]) -> dict[str, int]:
    """Inputs the daemons refused during the window, by reason (all daemons together)."""
    prefix = 'dualchain_chain_rejected_total{reason="'
    out: dict[str, int] = {}
    for a, b in zip(after, before, strict=True):
        for key, value in a.items():
            if key.startswith(prefix):
                reason = key[len(prefix):-2]
                out[reason] = out.get(reason, 0) + int(value - b.get(key, 0.0))
    return {k: v for k, v in out.items() if v}


def _mean_accept(after: list[dict[str, float]],
                 before: list[dict[str, float]]) -> dict[str, float | None]:
    """Mean time a daemon took per new block in the window, by stage (wait, process)."""
    out: dict[str, float | None] = {}
    for stage in ("wait", "process"):
        total = count = 0.0
        for a, b in zip(after, before, strict=True):
            label = '{stage="' + stage + '"}'
            total_key = "dualchain_pow_block_accept_seconds_sum" + label
            count_key = "dualchain_pow_block_accept_seconds_count" + label
            total += a.get(total_key, 0.0) - b.get(total_key, 0.0)
            count += a.get(count_key, 0.0) - b.get(count_key, 0.0)
        out[stage] = round(total / count, 3) if count else None
    return out


def _hash_rate() -> float:
    count = 200_000
    began = time.perf_counter()
    search_nonce(b"calibrate", bytes(32), 0, count)
    return count / (time.perf_counter() - began)


def pow_benchmark(
    daemons: int = 3,
    miners: int = 2,
    interval: float = 2.0,
    duration: float = 180.0,
    warmup: float = 30.0,
    rate: float = 1200.0,
    miner_workers: int = 1,
    miner_duty: float = 0.15,
    retarget: int = 10,
    finality_depth: int = 6,
    algorithm: Algorithm = Algorithm.ML_DSA_44,
    senders: int = 512,
    batch: int = 256,
    progress: Callable[[str], None] | None = None,
    keep: Path | None = None,
    log_level: str = "WARNING",
) -> dict:
    """Runs the benchmark in a temporary directory, or in ``keep`` (created; its configs and the
    daemons' and miners' logs stay there)."""
    progress = progress or (lambda line: None)
    args = (daemons, miners, interval, duration, warmup, rate, miner_workers, miner_duty,
            retarget, finality_depth, algorithm, senders, batch, progress, log_level)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return _run(keep, *args)
    with tempfile.TemporaryDirectory(prefix="bench-pow-") as tmp:
        return _run(Path(tmp), *args)


def _write_events(child: Child, path: Path) -> None:
    """What ``child`` printed (its JSON event lines), kept with the run's logs."""
    with path.open("w") as out:
        for event in child.events:
            if event["event"] != "exited":
                out.write(json.dumps(event) + "\n")


def _run(tmp: Path, daemons: int, miners: int, interval: float, duration: float, warmup: float,
         rate: float, miner_workers: int, miner_duty: float, retarget: int, finality_depth: int,
         algorithm: Algorithm, senders: int, batch: int,
         progress: Callable[[str], None], log_level: str) -> dict:
    ports = free_ports(2 * daemons)
    # Start easy: the miners share the machine with the daemons and the load generator, so they
    # hash slower than the calibration measured; retargeting raises an easy difficulty in a
    # few fast blocks, while a hard start would take minutes of slow blocks to come down.
    difficulty = int(_hash_rate() * miners * miner_workers * miner_duty * interval / 3)
    configs = make_testnet(tmp, TestnetPlan(
        nodes=daemons, algorithm=algorithm, ports=tuple(ports[:daemons]), chain_id=CHAIN_ID,
        kind="cmbc", miners=miners,
        pow=PowParams(initial_difficulty=max(difficulty, 1000),
                      block_interval_ms=int(interval * 1000), retarget_interval=retarget,
                      finality_depth=finality_depth),
        limits=LedgerLimits(max_block_txs=20_000),
    ))
    for i, path in enumerate(configs):
        config = json.loads(path.read_text())
        config["metrics_port"] = ports[daemons + i]
        path.write_text(json.dumps(config))
    Genesis.load(tmp / "genesis.json")
    targets = [f"127.0.0.1:{p}" for p in ports[:daemons]]
    supervisor = Supervisor()  # every process dies with the benchmark, whatever ends it
    py = [sys.executable, "-m", "dualchain.cli"]
    outputs: dict[str, Path] = {}
    try:
        for i, path in enumerate(configs):
            (tmp / f"node-{i}.log").unlink(missing_ok=True)
            supervisor.spawn(f"node-{i}", [*py, "chain", "--kind", "cmbc", "--config", str(path),
                                           "--log-level", log_level],
                             cwd=tmp, log=tmp / f"node-{i}.log")
            outputs[f"node-{i}"] = tmp / f"node-{i}.out"
        supervisor.wait_ready(supervisor.children, 60)
        spec = LoadSpec(CHAIN_ID, algorithm.label, targets, int(rate * (duration + warmup) * 1.1),
                        senders, rate, batch, str(tmp / "submit-times.bin"),
                        now_ms(), int(TxKind.MEMO))
        loadgen = supervisor.spawn("loadgen", [sys.executable, "-m", "dualchain.bench.loadgen",
                                               json.dumps(spec.__dict__)],
                                   cwd=tmp, log=None, stdin=True)
        progress(f"{daemons} CMBC daemons ready; the load generator is signing")
        supervisor.wait_event(loadgen, "signed", 600)
        miner_procs = []
        for j in range(miners):
            (tmp / f"miner-{j}.log").unlink(missing_ok=True)
            miner_procs.append(supervisor.spawn(
                f"miner-{j}", [*py, "miner", "--cmbc", targets[j % daemons], "--key",
                               str(tmp / "keys" / f"miner-{j}.key"), "--workers",
                               str(miner_workers), "--duty", str(miner_duty), "--log-level",
                               log_level], cwd=tmp, log=tmp / f"miner-{j}.log"))
            outputs[f"miner-{j}"] = tmp / f"miner-{j}.out"
        supervisor.wait_ready(miner_procs, 60)
        assert loadgen.popen.stdin is not None
        loadgen.popen.stdin.write(b"go\n")
        loadgen.popen.stdin.flush()
        started = time.time()
        progress(f"{miners} miners mining, {rate:.0f} tx/s offered; warming up {warmup:.0f} s")
        time.sleep(warmup)
        before = [_metrics(ports[daemons + i]) for i in range(daemons)]
        window_start = time.time()
        while time.time() < window_start + duration:
            time.sleep(min(5.0, window_start + duration - time.time()))
            progress(f"t={time.time() - started:5.1f}s height {_height(targets[0])}")
        window_end = time.time()
        after = [_metrics(ports[daemons + i]) for i in range(daemons)]
        blocks = _canonical_window(targets[0], window_start, window_end)
    finally:
        supervisor.stop(grace=10.0)  # SIGTERM, then SIGKILL of what is left after 10 s
        for child in supervisor.children:
            if child.name in outputs:
                _write_events(child, outputs[child.name])

    def delta(i: int, name: str) -> float:
        return after[i].get(name, 0.0) - before[i].get(name, 0.0)

    stamps = [b.header.timestamp_ms / 1000 for b in blocks]
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    mean = statistics.mean(intervals) if intervals else None
    stale = delta(0, "dualchain_pow_side_blocks_total") + \
        delta(0, "dualchain_pow_reorg_depth_blocks_sum")
    txs = sum(len(b.transactions) - 1 for b in blocks)
    span = window_end - window_start
    return {
        "benchmark": "pow",
        "daemons": daemons,
        "miners": miners,
        "target_interval_s": interval,
        "blocks": len(blocks),
        "mean_interval_s": round(mean, 3) if mean else None,
        "interval_cv": round(statistics.pstdev(intervals) / mean, 3) if mean else None,
        "orphan_rate": round(stale / (len(blocks) + stale), 4) if blocks else None,
        "reorgs": int(max(delta(i, "dualchain_pow_reorgs_total") for i in range(daemons))),
        "max_reorg_depth": int(max(a.get("dualchain_pow_max_reorg_depth", 0) for a in after)),
        "tps": round(txs / span, 1),
        "hashrate_hs": round(sum(a.get("dualchain_pow_miner_hashrate", 0.0) for a in after), 1),
        "offered_rate_tps": rate,
        "compact_misses": int(sum(delta(i, "dualchain_pow_compact_misses_total")
                                  for i in range(daemons))),
        "refused_by_reason": _refusals(after, before),
        "block_accept_mean_s": _mean_accept(after, before),
        "duration_s": duration,
        "warmup_s": warmup,
        "miner_workers": miner_workers,
        "miner_duty": miner_duty,
        "retarget_interval": retarget,
        "payload_bytes": 256,
        "alg": algorithm.label,
        "every_daemon_verifies_signatures": True,
        "machine": {"cpus": os.cpu_count()},
    }


def _height(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        return chain_pb2_grpc.ChainServiceStub(ch).GetStatus(
            chain_pb2.GetStatusRequest(), timeout=10).height


def _canonical_window(target: str, start: float, end: float) -> list:
    """Canonical blocks of ``target`` with timestamps in [start, end], oldest first."""
    out = []
    with grpc.insecure_channel(target, options=[("grpc.max_receive_message_length",
                                                 256 * 1024 * 1024)]) as ch:
        stub = chain_pb2_grpc.ChainServiceStub(ch)
        height = stub.GetStatus(chain_pb2.GetStatusRequest(), timeout=10).height
        while height > 0:
            reply = stub.GetBlock(chain_pb2.GetBlockRequest(height=height), timeout=30)
            block = block_from_proto(reply.block)
            stamp = block.header.timestamp_ms / 1000
            if stamp < start:
                break
            if stamp <= end:
                out.append(block)
            height -= 1
    return out[::-1]
