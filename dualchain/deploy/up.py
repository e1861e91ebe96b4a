"""`dualchain up`: a whole testbed on this host, every role its own process.

    dualchain up --nodes 4 --clients 8 --miners 1 --dataset digits --rounds 20 \\
                 --mode fedasync --workdir runs/NAME

1. Plans the testbed (``UpConfig``, from flags or a TOML file with the same keys) and writes its
   files under the workdir: keys, the CTBC genesis (validators = the server nodes, the ``fl``
   section with version 0's hash derived from the model seed), the CMBC genesis (proof-of-work
   difficulty calibrated to this machine's measured hash rate), one JSON config per process.
2. Starts, each as a subprocess with its log in ``logs/`` (through ``dualchain.runtime``'s
   supervisor: they die with the launcher, whatever kills it), in three stages, each waiting
   for its processes' ``ready`` lines: a CTBC daemon and a CMBC daemon per server node; the
   miners and the server nodes; the clients. A workdir whose ``state.json`` names a live process is
   refused.
3. Prints progress per committed model version (accuracy, round time, chain heights, refused
   updates) until ``rounds`` versions are committed (or the timeout, or Ctrl-C).
4. Stops every process it started (SIGTERM, then SIGKILL by PID after a grace period) and writes
   ``report.json``, ``metrics.csv`` and PNG plots (``plots/``).

With ``join_nodes`` > 0, that many more server nodes (each with its CTBC and CMBC replica and
``join_clients`` / ``join_nodes`` clients) are written but left out of the CTBC genesis; they
start once ``join_after`` versions are committed and join through the two stages of seed 000
§3.1 (see ``dualchain.node.server``).

With ``hosts = "netns"`` (``--hosts netns``) each server node's host (its daemons, the node and
the miners on its CMBC) and each node's clients run in Linux network namespaces of their own, on
addresses of their own, with optional link emulation per host (``netem``); see ``netns.py``.

``state.json`` in the workdir names the processes while the testbed runs; ``dualchain status
--workdir D`` reads it (see ``status.py``).
"""

from __future__ import annotations

import contextlib
import queue
import time
from dataclasses import asdict
from typing import Any

import psutil

from dualchain.chain.rpc import open_blocking_channel
from dualchain.deploy.balances import identity_balances
from dualchain.deploy.files import TestbedFiles
from dualchain.deploy.plan import (
    CMBC_CHAIN,
    CTBC_CHAIN,
    MODES,
    Proc,
    UpConfig,
    UpError,
    client_node,
    client_slowdowns,
)
from dualchain.deploy.privacy import privacy_entry, privacy_report, write_privacy
from dualchain.deploy.state import write_state
from dualchain.runtime.supervisor import STOP_GRACE_S
from dualchain.scheduler.plan import c_gmax

# Re-exported: the plan's names were importable from here before the split.
__all__ = ["CMBC_CHAIN", "CTBC_CHAIN", "MODES", "Proc", "Testbed", "UpConfig", "UpError",
           "client_node", "client_slowdowns"]

READY_TIMEOUT_S = 180.0
# Roles started together, stage after stage: the chain daemons first (everyone else talks to
# them), then miners and nodes, then the clients (whose torch import comes after their ready
# line, while they register: started with the nodes it took the nodes' CPU). Within a stage
# the interpreters, imports and dataset loads overlap on the machine's cores.
STAGES = (("ctbc", "cmbc"), ("miner", "node"), ("client",))
ROLE_TITLES = {"ctbc": "CTBC daemons", "cmbc": "CMBC daemons", "miner": "miners",
               "node": "server nodes", "client": "clients"}


def c_gmax_of_groups(groups: dict[str, float]) -> float:
    """Seed 000 eq. 14 for one version from each group's longest completion time."""
    return round(c_gmax([[t] for t in groups.values()]), 3)


class Testbed(TestbedFiles):
    """Runs the planned testbed: starts its processes stage by stage under the supervisor,
    follows their event lines, stops them and reports."""

    # -- processes -------------------------------------------------------------------------------

    def _launch(self, proc: Proc) -> None:
        """Starts ``proc`` under the supervisor: its event lines arrive in ``self.events``, it
        dies with this launcher (see dualchain.runtime)."""
        if proc.child is not None:
            self.supervisor.forget(proc.child)  # a restart: the last run has exited
        proc.child = self.supervisor.spawn(
            proc.name, [*self._exec_prefix(proc), *proc.argv], cwd=self.workdir,
            log=self.workdir / "logs" / f"{proc.name}.log", key=proc, env=self.env)

    def _start_stage(self, roles: tuple[str, ...], late: bool = False,
                     announce: Any = None) -> None:
        """Starts every process of ``roles`` at once and waits for their ready lines;
        ``announce(role)`` is called as each role's processes are all ready."""
        group = [p for p in self.procs if p.role in roles and p.late == late]
        for proc in group:
            self._launch(proc)
        waiting = [r for r in roles if any(p.role == r for p in group)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while waiting:
            proc, event = self._next_event(deadline)
            if event["event"] == "ready" and proc in group:
                proc.ready = event
            for role in [r for r in waiting
                         if all(p.ready is not None for p in group if p.role == r)]:
                waiting.remove(role)
                if announce is not None:
                    announce(role)
        self._write_state(running=True)

    def _next_event(self, deadline: float) -> tuple[Proc, dict[str, Any]]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = [p.name for p in self.procs if p.popen and p.ready is None]
                raise UpError(f"timed out waiting (not ready: {missing}); see "
                              f"{self.workdir / 'logs'}")
            try:
                proc, event = self.events.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if event["event"] == "exited" and proc.popen is not None and \
                    event["pid"] != proc.popen.pid:
                continue  # an earlier run of a restarted process
            if event["event"] == "exited" and proc.ready is None:
                raise UpError(f"{proc.name} exited with code {event['code']} before it was "
                              f"ready; see {self.workdir / 'logs' / (proc.name + '.log')}")
            self._observe(proc, event)
            self.history.append((proc, event))
            return proc, event

    def _observe(self, proc: Proc, event: dict[str, Any]) -> None:
        if event["event"] == "version":
            v = event["version"]
            known = self.versions.get(v)
            if known is None:
                # Round time as the launcher sees it: since the previous version was committed
                # (version 1: since the clients were all ready).
                elapsed = round(event["time"] - self.started, 3)
                previous = max((e["elapsed_s"] for k, e in self.versions.items() if k < v),
                               default=0.0)
                event = {**event, "elapsed_s": elapsed, "node": proc.name,
                         "round_s": round(elapsed - previous, 3),
                         "c_groups_s": dict(event.get("c_groups_s", {}))}
                event["c_gmax_s"] = c_gmax_of_groups(event["c_groups_s"])
                self.versions[v] = event
                self._print_version(event)
            else:
                merged = known.setdefault("c_groups_s", {})
                for group, seconds in event.get("c_groups_s", {}).items():
                    merged[group] = max(merged.get(group, 0.0), seconds)
                known["c_gmax_s"] = c_gmax_of_groups(merged)
        elif event["event"] == "task":
            self.client_tasks[proc.name] = self.client_tasks.get(proc.name, 0) + 1
        elif event["event"] == "privacy_budget":
            self.progress(f"  {proc.name}: privacy budget spent (epsilon "
                          f"{event['epsilon_spent']:.3g} of {event['epsilon_budget']:g}), "
                          "no more uploads")
        if isinstance(event.get("privacy"), dict) or event["event"] == "privacy_budget":
            self.client_privacy[proc.name] = privacy_entry(event)
            write_privacy(self.workdir, self.client_privacy)
        elif event["event"] == "plan":
            self.plans.append({**event, "node": proc.name})
            spans = ", ".join(f"{g['planned_s']:.2f}s" for g in event["groups"])
            regrouped = f" (regrouped: {event['regrouped']})" if event["regrouped"] else ""
            self.progress(f"  plan after version {event['version']} from {proc.name}: "
                          f"{len(event['groups'])} group(s){regrouped}, batches "
                          f"{event['batches']}, planned makespans {spans}")
        elif event["event"] == "join":
            self.progress(f"  {proc.name}: join {event['stage']}")
        elif event["event"] in ("node_excluded", "node_readmitted"):
            self.progress(f"  {proc.name}: node {event['node'][:16]} "
                          f"{event['event'].removeprefix('node_')} by CTBC at version "
                          f"{event['version']}")
        elif event["event"] == "miner_exited" and event["code"] != 0:  # client.mining
            self.progress(f"  {proc.name}: its miner exited with code {event['code']}; see "
                          f"{self.workdir / 'logs' / (proc.name + '-miner.log')}")
        elif event["event"] == "exited":
            self.progress(f"  {proc.name} exited with code {event['code']}")

    def _print_version(self, event: dict[str, Any]) -> None:
        status = self._chain_heights()
        self.progress(
            f"  version {event['version']:3d}  accuracy {event['accuracy']:.4f}  "
            f"loss {event['loss']:.4f}  round {event['round_s']:5.2f}s  "
            f"updates {event['included']:2d}  t={event['elapsed_s']:6.1f}s  "
            f"CTBC h{status.get('ctbc', '?')}"
            f"{'' if self.config.chains == 'single' else '  CMBC h' + str(status.get('cmbc', '?'))}"
            f"  refused {status.get('refused', 0)}")

    def _chain_heights(self) -> dict[str, Any]:
        from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc, node_pb2, node_pb2_grpc

        out: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            for role in ("ctbc", "cmbc"):
                proc = next((p for p in self.procs if p.role == role), None)
                if proc is None:
                    continue  # single-chain mode: no CMBC
                with open_blocking_channel(proc.address, self.tls) as ch:
                    st = chain_pb2_grpc.ChainServiceStub(ch).GetStatus(
                        chain_pb2.GetStatusRequest(), timeout=2)
                    out[role] = st.height
            refused, sent = 0, 0
            for proc in (p for p in self.procs if p.role == "node"):
                with open_blocking_channel(proc.address, self.tls) as ch:
                    st = node_pb2_grpc.NodeServiceStub(ch).GetNodeStatus(
                        node_pb2.NodeStatusRequest(), timeout=2)
                    refused += sum(st.updates_refused.values())
                    sent += st.bytes_from_clients + st.bytes_to_clients + st.bytes_relayed
            out["refused"] = refused
            out["bytes_sent"] = sent
        return out

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def start_roles(self, roles: tuple[str, ...] | None = None,
                    announce: Any = None) -> None:
        """Starts the processes of ``roles`` (all of them by default), stage after stage
        (``STAGES``), each stage waiting for its ready lines; ``announce(role)`` as each
        role is ready."""
        self.started = time.time()
        for stage in STAGES:
            wanted = tuple(r for r in stage if roles is None or r in roles)
            if wanted:
                self._start_stage(wanted, announce=announce)

    def start_joiners(self) -> None:
        """Starts the joining nodes' processes (replicas, then node and clients); each node
        asks to join on its own (seed 000 §3.1)."""
        for stage in STAGES:
            self._start_stage(stage, late=True)

    def kill(self, name: str) -> None:
        """SIGKILL one process (by its PID)."""
        proc = self.proc(name)
        assert proc.child is not None
        self.supervisor.kill(proc.child)

    def restart(self, name: str, timeout: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Starts a stopped process again with the same config; returns its ready event."""
        proc = self.proc(name)
        proc.ready = None
        self._launch(proc)
        self.wait_for(lambda p, e: p is proc and e["event"] == "ready", timeout)
        proc.ready = self._last_event
        return proc.ready

    def wait_for(self, predicate, timeout: float, past: bool = False) -> dict[str, Any]:
        """The next event (process, event) the predicate accepts, or with ``past`` the first
        one already seen; UpError at the timeout."""
        if past:
            for proc, event in self.history:
                if predicate(proc, event):
                    self._last_event = event
                    return event
        deadline = time.monotonic() + timeout
        while True:
            proc, event = self._next_event(deadline)
            if predicate(proc, event):
                self._last_event = event
                return event

    def _write_state(self, running: bool) -> None:
        if running and self.config.metrics:
            self._write_prometheus()
        write_state(self.workdir, running, [
            {"name": p.name, "role": p.role, "address": p.address,
             "pid": p.child.pid if p.child else None} for p in self.procs])

    def run(self) -> dict[str, Any]:
        c = self.config
        daemons = "CTBC daemon each, single chain" if c.chains == "single" else \
            "CTBC + CMBC daemon each"
        self.progress(f"dualchain up: {c.nodes} server nodes ({daemons}), "
                      f"{c.miners} miner(s), {c.clients} clients, {c.dataset}, mode {c.mode}, "
                      f"{c.rounds} versions; workdir {self.workdir}")
        self.write()
        interrupted = False
        try:
            self.start_roles(announce=lambda role: self.progress(
                f"  {ROLE_TITLES[role]} ready ({time.time() - self.started:.1f}s)"))
            self.started = time.time()
            deadline = time.monotonic() + (c.duration_s or c.timeout_s)
            self.progress("training: one line per committed model version")
            joined = c.join_nodes == 0
            while c.duration_s or max(self.versions, default=0) < c.rounds:
                if c.duration_s and time.monotonic() >= deadline:
                    break
                if not joined and max(self.versions, default=0) >= c.join_after:
                    joined = True
                    self.progress(f"  starting {c.join_nodes} joining node(s) with "
                                  f"{c.join_clients} client(s)")
                    self.start_joiners()
                try:
                    self._next_event(deadline)
                except UpError:
                    if c.duration_s and time.monotonic() >= deadline:
                        break  # the run's planned end
                    raise
        except KeyboardInterrupt:
            interrupted = True
            self.progress("interrupted: stopping the testbed")
        finally:
            self._sample_cpu()
            heights = self._chain_heights()
            heights["balances"] = identity_balances(  # rewards on: each identity's, at the end
                [{"role": p.role, "address": p.address} for p in self.procs], self.tls,
                self.workdir / "keys")
            self.stop()
        report = self.report(heights, interrupted)
        return report

    def _sample_cpu(self) -> None:
        for proc in self.procs:
            if proc.popen is None:
                continue
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(proc.popen.pid).cpu_times()
                self.cpu[proc.name] = round(times.user + times.system, 2)

    def stop(self) -> None:
        """SIGTERM every process (clients first), then SIGKILL what is left (each process's
        group, by its id) after a grace period."""
        order = ("client", "node", "miner", "cmbc", "ctbc")
        started = [p.child for role in order for p in self.procs
                   if p.role == role and p.child is not None]
        self.supervisor.stop(started, STOP_GRACE_S)
        if started:  # (a testbed refused by write() must not touch the workdir's state)
            self._write_state(running=False)
        if self.network is not None:
            self.network.teardown()  # kills what is left in the namespaces, deletes them

    # -- report ----------------------------------------------------------------------------------

    def report(self, heights: dict[str, Any], interrupted: bool) -> dict[str, Any]:
        from dualchain.deploy.report import write_report

        return write_report(self.workdir, asdict(self.config), self.versions, heights, self.cpu,
                            self.client_tasks, interrupted, self.plans,
                            privacy_report(self.config.dp_epsilon, self.client_privacy))
