"""The Raft baseline of the node sweeps: a real etcd cluster driven by our load generator.

``etcd_benchmark(n, ...)`` starts ``n`` etcd members (Debian's ``etcd-server``, the binary on
PATH) on loopback, each its own process with its own data directory, waits until every member
reports healthy, then runs ``loadgen.py`` in its etcd mode with the same signed transactions,
pacing and batches as ``bench consensus``: each batch is one etcd transaction of puts (key: the
transaction hash, value: its encoded bytes), acknowledged once Raft committed it. Reported as
``bench consensus`` reports the chain: committed writes per second in the window, submit-to-
commit latency p50/p99, CPU per member. etcd checks no signatures and runs no application: it is
the cost of ordering and replicating the same bytes.

Where etcd is absent, ``etcd_available()`` says why and the sweeps leave the baseline out.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from dualchain.bench.loadgen import RECORD, LoadSpec
from dualchain.chain.clock import now_ms
from dualchain.deploy.processes import free_ports
from dualchain.runtime.supervisor import Child, Supervisor

ETCD = "etcd"
READY_TIMEOUT_S = 60.0
MAX_TXN_OPS = 1024  # a batch of up to 1,024 puts in one etcd transaction (default 128)


def etcd_available() -> str | None:
    """None when the etcd binary is on PATH, else why the baseline is skipped."""
    if shutil.which(ETCD) is None:
        return ("etcd is not installed (Debian: apt-get install etcd-server); the Raft "
                "baseline is skipped")
    return None


def _start_members(supervisor: Supervisor, tmp: Path, n: int) -> tuple[list[Child], list[str]]:
    ports = free_ports(2 * n)
    client = [f"127.0.0.1:{ports[i]}" for i in range(n)]
    peer = [f"http://127.0.0.1:{ports[n + i]}" for i in range(n)]
    cluster = ",".join(f"m{i}={peer[i]}" for i in range(n))
    members = [supervisor.spawn(
        f"etcd-{i}",
        [ETCD, "--name", f"m{i}", "--data-dir", str(tmp / f"m{i}"),
         "--listen-client-urls", f"http://{client[i]}",
         "--advertise-client-urls", f"http://{client[i]}",
         "--listen-peer-urls", peer[i], "--initial-advertise-peer-urls", peer[i],
         "--initial-cluster", cluster, "--initial-cluster-state", "new",
         "--initial-cluster-token", "dualchain-bench", "--max-txn-ops", str(MAX_TXN_OPS),
         "--max-request-bytes", str(16 * 1024 * 1024), "--logger", "zap",
         "--log-level", "error"],
        cwd=tmp, log=tmp / f"m{i}.log", foreign=True) for i in range(n)]
    return members, client


def _wait_healthy(addresses: list[str], members: list[Child]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = set(addresses)
    while pending:
        if time.monotonic() > deadline or not all(m.alive() for m in members):
            raise RuntimeError(f"etcd members not healthy within {READY_TIMEOUT_S:.0f} s: "
                               f"{sorted(pending)}")
        for address in sorted(pending):
            try:
                with urllib.request.urlopen(f"http://{address}/health", timeout=2) as reply:
                    if json.loads(reply.read()).get("health") == "true":
                        pending.discard(address)
            except OSError:
                pass
        time.sleep(0.2)  # polling a process we do not control: etcd has no ready pipe


def etcd_benchmark(n: int, rate: float, duration: float, senders: int = 512, batch: int = 256,
                   algorithm: str = "ML-DSA-44", directory: Path | None = None) -> dict[str, Any]:
    """One etcd cluster of ``n`` members under the chain benchmark's load."""
    with tempfile.TemporaryDirectory(dir=directory, prefix="bench-etcd-") as name:
        tmp = Path(name)
        supervisor = Supervisor()  # every process dies with the benchmark, whatever ends it
        try:
            procs, targets = _start_members(supervisor, tmp, n)
            _wait_healthy(targets, procs)
            times = tmp / "submit-times.bin"
            spec = LoadSpec("bench-etcd", algorithm, targets, int(rate * duration * 1.2) + batch,
                            senders, rate, batch, str(times), now_ms(),
                            etcd=True)
            loadgen = supervisor.spawn(
                "loadgen", [sys.executable, "-m", "dualchain.bench.loadgen",
                            json.dumps(spec.__dict__)], cwd=tmp, log=None, stdin=True)
            supervisor.wait_event(loadgen, "signed", 600)
            members = [psutil.Process(p.pid) for p in procs]
            cpu_before = [sum(m.cpu_times()[:2]) for m in members]
            assert loadgen.popen.stdin is not None
            start = time.time()
            loadgen.popen.stdin.write(b"go\n")
            loadgen.popen.stdin.flush()
            time.sleep(duration)  # the measurement window: the load generator runs meanwhile
            end = time.time()
            cpu = [round((sum(m.cpu_times()[:2]) - b) / (end - start) * 100, 1)
                   for m, b in zip(members, cpu_before, strict=True)]
            supervisor.stop([loadgen], grace=10)
        finally:
            supervisor.close()  # SIGKILL of every process group, by id
        submitted = dict(RECORD.iter_unpack(times.read_bytes())) if times.exists() else {}
        commit_file = Path(str(times) + ".commit")
        committed = dict(RECORD.iter_unpack(commit_file.read_bytes())) \
            if commit_file.exists() else {}
    in_window = [t for t in committed.values() if start <= t <= end]
    latencies = sorted(committed[h] - submitted[h] for h in committed if h in submitted)
    return {
        "name": "etcd",
        "nodes": n,
        "tps": round(len(in_window) / (end - start), 1),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3)
        if latencies else None,
        "view_changes": None,
        "cpu_percent_per_replica": round(statistics.fmean(cpu), 1),
        "offered_rate_tps": rate,
        "value_bytes": "the encoded signed transaction",
    }
