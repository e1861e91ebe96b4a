"""A testbed's files: keys, the two genesis files and one JSON config per process under the
workdir, the processes' command lines (``Proc``), and with ``hosts = "netns"`` the network
namespaces they run in. ``TestbedFiles`` plans and writes; ``up.Testbed`` adds the running."""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from dualchain.apps.genesis import ConsensusParams, FlParams, Genesis, SchedParams
from dualchain.chain.app import Validator
from dualchain.chain.clock import now_ms
from dualchain.chain.consensus.pow import PowParams
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.rpc import TlsFiles
from dualchain.deploy import adversaries
from dualchain.deploy.documents import prometheus_document, render_yaml
from dualchain.deploy.plan import (
    CMBC_CHAIN,
    CTBC_CHAIN,
    MODE_RULES,
    Proc,
    UpConfig,
    UpError,
    calibrate_difficulty,
    client_node,
    client_slowdowns,
    genesis_model_hash,
    plugin_path,
    state_changes,
)
from dualchain.deploy.processes import free_ports
from dualchain.deploy.state import busy_reason
from dualchain.learning.datasets import CACHE_ENV
from dualchain.runtime.supervisor import Supervisor


class TestbedFiles:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, config: UpConfig, progress=None) -> None:
        if config.data_dir is not None:  # process configs live in the workdir: no relative path
            config = replace(config, data_dir=str(Path(config.data_dir).resolve()))
        self.config = config
        self.workdir = Path(config.workdir).resolve()
        self.progress = progress or (lambda line: print(line, flush=True))
        self.procs: list[Proc] = []
        self.events: queue.Queue[tuple[Proc, dict[str, Any]]] = queue.Queue()
        self.supervisor = Supervisor(self.events)  # every event line arrives in self.events
        self.env: dict[str, str] = {}  # what the processes' environment adds to ours
        self.versions: dict[int, dict[str, Any]] = {}
        self.started = 0.0
        self.client_tasks: dict[str, int] = {}
        self.client_privacy: dict[str, dict[str, Any]] = {}  # the latest each client reported
        self.plans: list[dict[str, Any]] = []  # the task plans the nodes submitted (ddmlts)
        self.cpu: dict[str, float] = {}
        self._last_event: dict[str, Any] = {}
        self.history: list[tuple[Proc, dict[str, Any]]] = []  # every event, in arrival order
        self.tls: TlsFiles | None = None  # the launcher's own certificate with config.tls
        self.network: Any = None  # with hosts = "netns": the netns.Network, built at 1st launch

    # -- files -----------------------------------------------------------------------------------

    def write(self) -> None:
        c = self.config
        busy = busy_reason(self.workdir)
        if busy is not None:  # its processes hold the ports and files a new one would take
            raise UpError(busy)
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        keys = self.workdir / "keys"
        keys.mkdir(parents=True, mode=0o700)
        (self.workdir / "logs").mkdir()
        alg = Algorithm.parse(c.algorithm)
        n, m, k = c.nodes, c.miners, c.clients
        total, all_clients = n + c.join_nodes, k + c.join_clients
        ctbc, cmbc, node_addr = self._listen_addresses(total)
        metric_ports = self._metrics_ports(3 * total)
        # Miners' and clients' metrics endpoints (after the daemons' and nodes').
        more_ports = self._metrics_ports(m + all_clients)
        node_keys = []
        for i in range(total):
            signer = Signer.generate(alg)
            signer.save(keys / f"node-{i}.key")
            Signer.generate(alg).save(keys / f"cmbc-{i}.key")
            node_keys.append(signer)
        for j in range(m):
            Signer.generate(alg).save(keys / f"miner-{j}.key")
        for j in range(all_clients):
            Signer.generate(alg).save(keys / f"client-{j}.key")
            if c.client_mining:  # its miner signs with a key of its own (client.mining)
                Signer.generate(alg).save(keys / f"client-{j}-miner.key")
        operator = Signer.generate(alg)  # signs re-admissions (dualchain readmit)
        operator.save(keys / "operator.key")
        now = now_ms()
        rule, policy = MODE_RULES[c.mode]
        single = c.chains == "single"
        sched = SchedParams(mode=c.sched_mode, k_max=c.k_max, alpha=c.sched_alpha,
                            batches_per_client=c.batches, upper=c.batches * 8,
                            batch_size=c.batch_size) if policy == "plan" else None
        cache = self.workdir / "cache"  # the processes' dataset cache (their environment says)
        self.env[CACHE_ENV] = str(cache)
        roots = plugin_path(c)  # every process imports the plug-ins from where we found them
        if roots:
            self.env["PYTHONPATH"] = os.pathsep.join(
                [*roots, *filter(None, [os.environ.get("PYTHONPATH")])])
        fl = FlParams(dataset=c.dataset, model_seed=c.seed,
                      model_hash=genesis_model_hash(c, cache),
                      mode=rule, max_staleness=c.max_staleness, model=c.model,
                      aggregator=c.aggregator, aggregation=c.aggregation,
                      reward_base=c.reward_base, reward_weight=c.reward_weight)
        Genesis(
            chain_id=CTBC_CHAIN, kind="ctbc", algorithm=alg, genesis_time_ms=now,
            validators=tuple(Validator(s.id, s.public_key, a)
                             for s, a in zip(node_keys[:n], ctbc[:n], strict=True)),
            consensus=ConsensusParams(committee_size=c.committee_size or n,
                                      epoch_length=c.epoch_length, block_interval_ms=300,
                                      timeout_propose_ms=2000, timeout_prevote_ms=1000,
                                      timeout_precommit_ms=1000, timeout_delta_ms=500),
            fl=fl, single_chain=single, sched=sched if single else None,
            defense=adversaries.defense_params(c), operators=(operator.id,),
        ).save(self.workdir / "ctbc-genesis.json")
        # Single-chain mode: what the nodes and clients know as "cmbc" is their CTBC daemon.
        cmbc_genesis = "ctbc-genesis.json" if single else "cmbc-genesis.json"
        if single:
            cmbc = ctbc
        else:
            Genesis(
                chain_id=CMBC_CHAIN, kind="cmbc", algorithm=alg, genesis_time_ms=now,
                validators=(),
                pow=PowParams(initial_difficulty=calibrate_difficulty(c),
                              block_interval_ms=int(c.cmbc_interval_s * 1000),
                              retarget_interval=10, finality_depth=c.finality_depth),
                sched=sched,
            ).save(self.workdir / "cmbc-genesis.json")
        py = [sys.executable, "-m", "dualchain.cli"]
        for i in range(total):
            late = i >= n  # a joiner: its replicas know the genesis nodes' daemons as peers
            for kind, addrs, key, port in (("ctbc", ctbc, f"keys/node-{i}.key", metric_ports[i]),
                                           ("cmbc", cmbc, f"keys/cmbc-{i}.key",
                                            metric_ports[total + i]))[: 1 if single else 2]:
                self._json(f"{kind}-{i}.json", {
                    "kind": kind, "genesis": f"{kind}-genesis.json", "key": key,
                    "data_dir": f"data/{kind}-{i}", "listen": addrs[i],
                    "peers": [a for a in addrs[:n] if a != addrs[i]], "metrics_port": port,
                })
                self.procs.append(Proc(f"{kind}-{i}", kind, [
                    *py, "chain", "--kind", kind, "--config", f"{kind}-{i}.json",
                    "--log-level", "WARNING"], address=addrs[i], late=late))
        for j in range(0 if single else m):
            self.procs.append(Proc(f"miner-{j}", "miner", [
                *py, "miner", "--cmbc", cmbc[j % n], "--key", f"keys/miner-{j}.key",
                "--workers", str(c.miner_workers), "--duty", str(c.miner_duty),
                "--metrics-port", str(more_ports[j]), "--log-level", "WARNING"],
                address=cmbc[j % n]))
        nodes_map = {s.id.hex(): a for s, a in zip(node_keys[:n], node_addr, strict=False)}
        min_updates = c.min_updates or max(1, c.clients // 2)
        for i in range(total):
            late = i >= n
            self._json(f"node-{i}.json", {
                "key": f"keys/node-{i}.key", "listen": node_addr[i], "ctbc": ctbc[i],
                "cmbc": cmbc[i], "ctbc_genesis": "ctbc-genesis.json",
                "cmbc_genesis": cmbc_genesis,
                "nodes": {**nodes_map, node_keys[i].id.hex(): node_addr[i]},
                "dataset": c.dataset, "data_dir": c.data_dir,
                "task": {"batches": c.batches, "batch_size": c.batch_size,
                         "learning_rate": c.learning_rate},
                "aggregation": {"min_updates": min_updates, "window_s": c.window_s,
                                "policy": policy, "quorum": c.quorum,
                                "deadline_s": c.deadline_s},
                "metrics_port": metric_ports[2 * total + i], "join": late,
                # The genesis nodes vote in exactly the joiners this testbed planned.
                "admit": [s.id.hex() for s in node_keys[n:]],
                **adversaries.node_adversary(c, i),
            })
            self.procs.append(Proc(f"node-{i}", "node", [
                *py, "node", "--config", f"node-{i}.json", "--log-level", "WARNING"],
                address=node_addr[i], late=late))
        changes = state_changes(c, all_clients)
        for j in range(all_clients):
            late = j >= k
            i = client_node(c, j)
            attack = adversaries.client_attack(c, j)
            self._json(f"client-{j}.json", {
                **self._client_config(j, i, node_addr[i], node_keys[i].id.hex(), cmbc[i]),
                "slowdown_changes": changes[j], "metrics_port": more_ports[m + j],
                "watermark": adversaries.watermark_table(adversaries.defense_params(c)),
                **({"attack": attack, "ctbc": ctbc[i]} if attack else {})})
            self.procs.append(Proc(f"client-{j}", "client", [
                *py, "client", "--config", f"client-{j}.json", "--log-level", "WARNING"],
                address=node_addr[i], late=late))
        if c.tls:  # a certificate per process, their configs' tls sections, miner flags
            from dualchain.deploy.certs import secure_testbed

            self.tls = secure_testbed(self.workdir, self.procs)
        self._json("up.json", asdict(c))

    def _listen_addresses(self, total: int) -> tuple[list[str], list[str], list[str]]:
        """The CTBC daemons', CMBC daemons' and server nodes' listen addresses: free ports of
        127.0.0.1 here, or of node I's namespace with ``hosts = "netns"``; a container testbed
        (``compose.py``) names its services instead."""
        ports = free_ports(3 * total)
        ip = ["127.0.0.1"] * total
        if self.config.hosts == "netns":
            ip = [self._plan_network(total).address(f"node-{i}") for i in range(total)]
        return ([f"{ip[i]}:{p}" for i, p in enumerate(ports[:total])],
                [f"{ip[i]}:{p}" for i, p in enumerate(ports[total : 2 * total])],
                [f"{ip[i]}:{p}" for i, p in enumerate(ports[2 * total :])])

    # -- hosts = "netns" ---------------------------------------------------------------------------

    def _plan_network(self, total: int) -> Any:
        """Plans host "node-I" (node I's daemons, node and miners) and "clients-I" (its clients)
        as network namespaces; they are created at the first launch (``_exec_prefix``)."""
        from dualchain.deploy import netns

        if self.network is None:
            c = self.config
            clients = sorted({client_node(c, j) for j in range(c.clients + c.join_clients)})
            names = [f"node-{i}" for i in range(total)] + [f"clients-{i}" for i in clients]
            try:
                self.network = netns.prepare(netns.run_prefix(str(self.workdir)), names,
                                             c.netem, c.netem_backend)
            except netns.NetnsError as exc:
                raise UpError(str(exc)) from exc
        return self.network

    def _host_of(self, proc: Proc) -> str:
        """The host (namespace) that runs ``proc``: a miner with the node whose CMBC it mines on."""
        index = int(proc.name.rpartition("-")[2])
        if proc.role == "client":
            return f"clients-{client_node(self.config, index)}"
        return f"node-{index % self.config.nodes if proc.role == 'miner' else index}"

    def _exec_prefix(self, proc: Proc) -> list[str]:
        """``ip netns exec NS`` for a process of a netns testbed (the namespaces are created at
        the first launch and torn down by ``stop``, or at exit); nothing locally."""
        if self.network is None:
            return []
        from dualchain.deploy.netns import NetnsError

        if not self.network.created:
            try:
                self.network.create()
            except NetnsError as exc:
                raise UpError(str(exc)) from exc
            self._json("network.json", self.network.describe())
            self.progress(f"  network namespaces {self.network.plan.prefix}-*: " + ", ".join(
                f"{h.name} {h.address}" + (f" ({h.netem}, {self.network.links[h.name]})"
                                           if h.netem else "")
                for h in self.network.plan.hosts))
        return self.network.exec_prefix(self._host_of(proc))

    def _metrics_ports(self, count: int) -> list[int]:
        """``count`` metrics ports: free ones with ``metrics``, else 0 (no endpoint)."""
        return free_ports(count) if self.config.metrics else [0] * count

    def _client_config(self, j: int, i: int, node: str, node_id: str,
                       cmbc: str) -> dict[str, Any]:
        c = self.config
        slowdown = client_slowdowns(c)[j] if j < c.clients else 1.0
        return {
            "key": f"keys/client-{j}.key", "node": node, "node_id": node_id, "cmbc": cmbc,
            "ctbc_chain_id": CTBC_CHAIN,
            "cmbc_chain_id": CTBC_CHAIN if c.chains == "single" else CMBC_CHAIN,
            "dataset": c.dataset,
            "model": c.model,
            "data_dir": c.data_dir,
            "partition": {"scheme": c.partition, "clients": c.clients + c.join_clients,
                          "index": j,
                          "seed": c.seed, "alpha": c.alpha},
            "seed": c.seed + j, "threads": 1, "slowdown": slowdown, "label": f"client-{j}",
            **({} if c.dp_epsilon == 0 else {"dp": c.client_dp(j)}),
            **({} if not c.client_mining else {"mining": c.client_mining_block(j)}),
        }

    def _json(self, name: str, data: dict[str, Any]) -> None:
        (self.workdir / name).write_text(json.dumps(data, indent=2) + "\n")

    def _metrics_target(self, proc: Proc) -> str | None:
        """Where ``proc`` serves its metrics (host:port), None when it serves none."""
        if proc.role == "miner":
            port = int(proc.argv[proc.argv.index("--metrics-port") + 1])
        else:
            port = int(json.loads((self.workdir / f"{proc.name}.json").read_text())
                       .get("metrics_port", 0))
        if not port:
            return None
        host = (self.network.address(self._host_of(proc)) if self.network is not None
                else "127.0.0.1")
        return f"{host}:{port}"

    def _write_prometheus(self) -> None:
        """With ``metrics``: ``prometheus.yml``, a scrape config of every process, labelled as
        in the compose stack so that its Grafana dashboard reads this testbed too."""
        document = prometheus_document(self.procs, self._metrics_target)
        (self.workdir / "prometheus.yml").write_text(render_yaml(
            document, "Written by dualchain up --metrics: prometheus --config.file=THIS"))
