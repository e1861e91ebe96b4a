"""`kill -9` of `dualchain up` orphans nothing: once a model version is committed, SIGKILL of the
launcher leaves no process of the testbed running (daemons, nodes, the miner and its hashing
workers, clients), frees their ports, and the next `up` on the workdir is not refused.

The launcher is a real `dualchain up` subprocess on a small testbed. Whatever outlives it is
killed by PID at the end of the test (it would otherwise outlive the test run too).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dualchain.deploy import netns, status
from dualchain.deploy.state import busy_reason, read_state

VERSION_TIMEOUT_S = 240.0
# Each process stops cleanly within the supervisor's grace (10 s) once its lifeline breaks,
# then what is left of its group is SIGKILLed: 30 s covers both on a loaded machine.
GONE_BOUND_S = 30.0


def read_until_version(proc: subprocess.Popen[bytes], timeout: float) -> list[str]:
    """The launcher's output lines up to and including its first committed version line."""
    assert proc.stdout is not None
    lines: list[str] = []
    pending = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no version line within {timeout:.0f} s: {lines}"
            if not selector.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            assert chunk, f"dualchain up exited ({proc.wait()}) before a version: {lines}"
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                lines.append(line.decode(errors="replace"))
                if line.strip().startswith(b"version "):
                    return lines


def port_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


NETNS_REASON = netns.unavailable_reason()


@pytest.mark.parametrize("hosts", [
    "local",
    pytest.param("netns", marks=pytest.mark.skipif(
        NETNS_REASON is not None, reason=f"no network namespaces: {NETNS_REASON}")),
])
def test_sigkill_of_up_leaves_no_process_and_no_port(tmp_path: Path, hosts: str) -> None:
    """With ``netns`` every process runs through ``ip netns exec`` in a namespace of its own
    host: the lifeline crosses the exec."""
    workdir = tmp_path / "testbed"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "dualchain.cli", "up", "--workdir", str(workdir),
         "--nodes", "2", "--clients", "2", "--miners", "1", "--rounds", "50",
         "--batches", "2", "--timeout-s", "600", "--hosts", hosts],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    started: list[psutil.Process] = []
    try:
        read_until_version(launcher, VERSION_TIMEOUT_S)
        state = read_state(workdir)
        assert state is not None and state["launcher_pid"] == launcher.pid
        processes = state["processes"]
        assert all(p["pid"] for p in processes), processes
        # Every process it started and their own children (the miner's hashing workers).
        for pid in [p["pid"] for p in processes]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                started += [process, *process.children(recursive=True)]
        roles = {p["role"] for p in processes}
        assert roles == {"ctbc", "cmbc", "miner", "node", "client"}
        assert len(started) > len(processes), "the miner's workers were not found"

        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        _, alive = psutil.wait_procs(started, timeout=GONE_BOUND_S)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"outlived the SIGKILLed launcher: {alive}"
        if hosts == "local":  # a namespace's addresses cannot be bound from here
            busy = [p["address"] for p in processes
                    if p["role"] in ("ctbc", "cmbc", "node") and not port_free(p["address"])]
            assert not busy, f"ports still held: {busy}"
        assert status.testbed_status(workdir)["running"] is False
        assert busy_reason(workdir) is None  # a new `up` takes the workdir over
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait(10)
        for process in started:  # today's orphans, if any: by PID
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(started, timeout=10)
        if hosts == "netns":  # a SIGKILLed launcher leaves its namespaces to the next run
            netns.cleanup(netns.run_prefix(str(workdir.resolve())))
