"""`dualchain compose`: a docker-compose testbed from the same configuration as `dualchain up`.

    dualchain compose --nodes 4 --clients 8 --miners 1 --out .      # the committed default
    dualchain compose --nodes 8 --clients 32 --set mode=ddmlts --out runs/compose-8x32

The testbed is planned and written by ``files.TestbedFiles`` as for `dualchain up`
(``ComposeTestbed`` only names the listen addresses after the compose services and gives every
process metrics port 9100 in its own container), so a compose stack runs the processes,
configs and genesis files `dualchain up` would run, one container per process:

- ``testbed-init`` runs once before everything else and writes the keys, genesis files and
  per-process configs into the ``testbed`` volume (``--testbed-only``), unless they are there
  already; so no private key is ever written on the host or committed (``--keys init``, the
  default). ``--keys host`` writes them under ``OUT/deploy/compose/testbed`` instead and the init
  service copies them into the volume.
- one service per process of ``up`` (``ctbc-I``, ``cmbc-I``, ``miner-J``, ``node-I``,
  ``client-J``), each with the image's health check (the health file its event loop touches),
  all started together once testbed-init is done (nodes wait for their daemons and clients
  retry their node by themselves; ``depends_on`` names whom each needs); each chain daemon keeps its
  chain in a named volume (``ctbc-I-data`` at ``/data``);
- in the ``monitoring`` profile, ``prometheus`` scraping every process
  (``OUT/deploy/prometheus/prometheus.yml``) and ``grafana`` with the dashboard of
  ``deploy/grafana``.

Knobs that need no new plan are environment variables of the compose file (``${VAR:-default}``):
the image, the log level, the miners' workers and duty, and, read by ``testbed-init`` when it
plans, the mode, the seed and the ML-DSA backend (``auto``: what the image has). The sizes need
a new ``dualchain compose``; ``--swarm`` writes a Docker Swarm stack instead (``swarm.py``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from dualchain.chain.mldsa import resolve_backend
from dualchain.deploy.documents import (
    METRICS_PORT,
    ROLE_ORDER,
    prometheus_document,
    render_yaml,
)
from dualchain.deploy.files import TestbedFiles
from dualchain.deploy.plan import Proc, UpConfig, UpError

PORTS = {"ctbc": 7000, "cmbc": 7100, "node": 7300}
TESTBED_VOLUME = "/testbed"
TESTBED_DIR = "/testbed/run"  # the planned testbed inside the testbed volume
DATA_DIR = "/data"  # a chain daemon's own named volume
HOST_TESTBED = "deploy/compose/testbed"  # --keys host: under OUT
PROMETHEUS_FILE = "deploy/prometheus/prometheus.yml"  # under OUT
IMAGE = "${DUALCHAIN_IMAGE:-dualchain:local}"
# deploy/Dockerfile's build arguments from the environment (docs/deploy.md, the image).
BUILD_ARGS = {"WITH_LIBOQS": "${WITH_LIBOQS:-0}",
              "BASE_IMAGE": "${DUALCHAIN_BASE_IMAGE:-python:3.11-slim-bookworm}",
              "WHEELS": "${DUALCHAIN_WHEELS:-deploy/wheels}",
              "TORCH_INDEX_URL": "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"}
MONITORING = ["monitoring"]  # the profile of Prometheus and Grafana (off unless asked for)
PROMETHEUS_IMAGE = "prom/prometheus:v3.5.0"
GRAFANA_IMAGE = "grafana/grafana:11.6.0"
LOG_LEVEL = "${DUALCHAIN_LOG_LEVEL:-WARNING}"
# UpConfig fields that testbed-init reads from the environment when it plans.
INIT_ENV = {"mode": "DUALCHAIN_MODE", "seed": "DUALCHAIN_SEED",
            "miner_workers": "DUALCHAIN_MINER_WORKERS", "miner_duty": "DUALCHAIN_MINER_DUTY"}
# Whom a role needs (up's order: daemons, then miners and nodes, then clients). Started, not
# healthy: each process waits or retries by itself (a node for its daemons, a client for its
# node, a miner for its CMBC daemon), so the containers start together and import in parallel,
# rather than a health-check interval apart per level.
WAITS_FOR = {"ctbc": (), "cmbc": (), "miner": ("cmbc",), "node": ("ctbc", "cmbc"),
             "client": ("node",)}
STOP_GRACE = {"ctbc": "15s", "cmbc": "15s", "miner": "10s", "node": "15s", "client": "10s"}


class ComposeTestbed(TestbedFiles):
    """``up``'s testbed with container addresses: ``ctbc-I:7000``, ``cmbc-I:7100``,
    ``node-I:7300`` (the service names, which every container resolves), metrics on 9100.

    Processes listen on their service's address rather than 0.0.0.0: a chain daemon tells its
    peers its ``listen`` address in the gossip handshake and they look their link to it up by
    that name, so it must be the name they dial."""

    def __init__(self, config: UpConfig, backend: str = "cryptography") -> None:
        if config.join_nodes or config.join_clients:
            raise UpError("compose: joining nodes are not supported (they start on a signal "
                          "from `dualchain up`)")
        if getattr(config, "tls", False):
            raise UpError("compose: tls is not supported yet (certificates name 127.0.0.1)")
        if getattr(config, "hosts", "local") != "local":
            raise UpError("compose: every container is a host of its own (hosts must be local)")
        super().__init__(config, progress=lambda line: None)
        self.backend = backend

    def _listen_addresses(self, total: int) -> tuple[list[str], list[str], list[str]]:
        ctbc, cmbc, node = ([f"{role}-{i}:{PORTS[role]}" for i in range(total)]
                            for role in ("ctbc", "cmbc", "node"))
        return ctbc, cmbc, node

    def _metrics_ports(self, count: int) -> list[int]:
        return [METRICS_PORT] * count

    def write(self) -> None:
        """``up``'s files, then what a container needs: chain data in ``/data`` (the daemon's
        volume) and the ML-DSA backend in every config that names one (and the miners' flags)."""
        super().write()
        shutil.rmtree(self.workdir / "logs", ignore_errors=True)
        for proc in self.procs:
            if proc.role == "miner":
                proc.argv += ["--backend", self.backend]
                continue
            path = self.workdir / f"{proc.name}.json"
            data = json.loads(path.read_text())
            if proc.role in ("ctbc", "cmbc"):
                data["data_dir"] = DATA_DIR
            if proc.role in ("ctbc", "cmbc", "client"):
                data["backend"] = self.backend
            path.write_text(json.dumps(data, indent=2) + "\n")
        self._json("compose.json", {"backend": self.backend, "processes": [
            {"name": p.name, "role": p.role, "address": p.address, "argv": p.argv[3:]}
            for p in self.procs if not p.late]})


def load_processes(directory: Path) -> list[Proc]:
    """The processes of a testbed planned into ``directory`` (its ``compose.json``)."""
    data = json.loads((directory / "compose.json").read_text())
    return [Proc(p["name"], p["role"], ["python", "-m", "dualchain.cli", *p["argv"]],
                 address=p["address"]) for p in data["processes"]]


def write_testbed(config: UpConfig, directory: Path, backend: str = "auto",
                  if_missing: bool = False) -> ComposeTestbed | None:
    """Plans the testbed into ``directory`` (replaced); with ``if_missing`` nothing happens when
    a testbed is there already (``up.json``): a restarted stack keeps its keys and chains."""
    if if_missing and (directory / "up.json").exists():
        return None
    testbed = ComposeTestbed(replace(config, workdir=str(directory)), resolve_backend(backend))
    testbed.write()
    return testbed


def plan_processes(config: UpConfig) -> list[Proc]:
    """The processes ``up`` would run for ``config`` (planned in a scratch directory)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dualchain-compose-") as scratch:
        testbed = write_testbed(config, Path(scratch) / "testbed", "cryptography")
        assert testbed is not None
        return [p for p in testbed.procs if not p.late]


# -- the compose document ------------------------------------------------------------------------


def _command(proc: Proc, backend: str | None = None) -> list[str]:
    """``up``'s command line of a process as the container runs it, with the environment knobs
    (with ``backend``, the miners' backend too: ``$DUALCHAIN_BACKEND`` as for testbed-init)."""
    argv = ["dualchain", *proc.argv[3:]]  # up runs `python -m dualchain.cli ...`
    knobs = {"--log-level": LOG_LEVEL, "--workers": "${DUALCHAIN_MINER_WORKERS:-%s}",
             "--duty": "${DUALCHAIN_MINER_DUTY:-%s}"}
    if backend is not None:
        knobs["--backend"] = f"${{DUALCHAIN_BACKEND:-{backend}}}"
    for i, arg in enumerate(argv[:-1]):
        if arg in knobs:
            knob = knobs[arg]
            argv[i + 1] = knob % argv[i + 1] if "%s" in knob else knob
    return argv


HEALTH = {"test": ["CMD", "dualchain-healthy"], "interval": "5s", "timeout": "10s", "retries": 3,
          "start_period": "120s"}


def _health(proc: Proc) -> dict[str, Any]:
    """The image's check: the health file the process's event loop touches once it serves
    (dualchain/chain/heartbeat.py); a shell and `find`, no Python started per probe."""
    return dict(HEALTH)


def _init_command(config: UpConfig, keys: str, backend: str) -> list[str]:
    if keys == "host":
        # Copies the host's plan into the volume (once), owned by the image's user.
        script = (f"test -f {TESTBED_DIR}/up.json || {{ mkdir -p {TESTBED_DIR} && "
                  f"cp -R /seed/. {TESTBED_DIR}/ && chown -R dualchain:dualchain "
                  f"{TESTBED_VOLUME}; }}")
        return ["sh", "-c", script]
    argv = ["dualchain", "compose", "--testbed-only", "--if-missing", "--out", TESTBED_DIR,
            "--backend", f"${{DUALCHAIN_BACKEND:-{backend}}}", "--nodes", str(config.nodes),
            "--clients", str(config.clients), "--miners", str(config.miners)]
    default = UpConfig()
    for f in fields(UpConfig):
        value = getattr(config, f.name)
        if f.name in ("workdir", "nodes", "clients", "miners"):
            continue
        if f.name in INIT_ENV:
            argv += ["--set", f"{f.name}=${{{INIT_ENV[f.name]}:-{_set_value(value)}}}"]
        elif value != getattr(default, f.name):
            argv += ["--set", f"{f.name}={_set_value(value)}"]
    return argv


def _set_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def compose_document(config: UpConfig, procs: list[Proc], *, keys: str = "init",
                     backend: str = "auto", repo: str = ".") -> dict[str, Any]:
    """The compose file for ``procs``; ``repo`` is the source checkout relative to the compose
    file's folder (the image's build context, the Grafana provisioning). With ``keys="init"``
    testbed-init plans with ``$DUALCHAIN_BACKEND`` (default ``backend``) and the miners use the
    same; with ``keys="host"`` the host's plan fixed the backend."""
    init: dict[str, Any] = {
        "image": IMAGE,
        "build": {"context": repo, "dockerfile": "deploy/Dockerfile",
                  "args": BUILD_ARGS},
        "command": _init_command(config, keys, backend),
        "volumes": [f"testbed:{TESTBED_VOLUME}"],
        "restart": "no",
    }
    if keys == "host":
        init["user"] = "0:0"
        init["volumes"].append(f"./{HOST_TESTBED}:/seed:ro")
    services: dict[str, Any] = {"testbed-init": init}
    volumes: dict[str, Any] = {"testbed": {}}
    by_role = {role: [p for p in procs if p.role == role] for role in ROLE_ORDER}
    for role in ROLE_ORDER:
        for proc in by_role[role]:
            depends: dict[str, Any] = {
                "testbed-init": {"condition": "service_completed_successfully"}}
            for other in WAITS_FOR[role]:
                for dep in by_role[other]:
                    depends[dep.name] = {"condition": "service_started"}
            service: dict[str, Any] = {
                "image": IMAGE,
                "command": _command(proc, backend if keys == "init" else None),
                "working_dir": TESTBED_DIR,
                "volumes": [f"testbed:{TESTBED_VOLUME}:ro"],
                "depends_on": depends,
                "healthcheck": _health(proc),
                "stop_grace_period": STOP_GRACE[role],
                "restart": "unless-stopped",
            }
            if role in ("ctbc", "cmbc"):
                service["volumes"].append(f"{proc.name}-data:{DATA_DIR}")
                volumes[f"{proc.name}-data"] = {}
            services[proc.name] = service
    services["prometheus"] = {
        "image": PROMETHEUS_IMAGE,
        "command": ["--config.file=/etc/prometheus/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    "--storage.tsdb.retention.time=${PROMETHEUS_RETENTION:-7d}"],
        "volumes": [f"./{PROMETHEUS_FILE}:/etc/prometheus/prometheus.yml:ro",
                    "prometheus-data:/prometheus"],
        "ports": ["${PROMETHEUS_PORT:-9090}:9090"],
        "restart": "unless-stopped",
        "profiles": MONITORING,
    }
    services["grafana"] = {
        "image": GRAFANA_IMAGE,
        "depends_on": ["prometheus"],
        "environment": {
            "GF_SECURITY_ADMIN_USER": "admin",
            "GF_SECURITY_ADMIN_PASSWORD": "${GRAFANA_ADMIN_PASSWORD:-dualchain}",
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH":
                "/etc/dualchain/dashboards/dualchain.json",
        },
        "volumes": [f"{_join(repo, 'deploy/grafana/provisioning')}:/etc/grafana/provisioning:ro",
                    f"{_join(repo, 'deploy/grafana/dashboards')}:/etc/dualchain/dashboards:ro",
                    "grafana-data:/var/lib/grafana"],
        "ports": ["${GRAFANA_PORT:-3000}:3000"],
        "restart": "unless-stopped",
        "profiles": MONITORING,
    }
    volumes["prometheus-data"] = {}
    volumes["grafana-data"] = {}
    return {"services": services, "volumes": volumes}


def _join(repo: str, path: str) -> str:
    joined = path if repo == "." else f"{repo.rstrip('/')}/{path}"
    return joined if joined.startswith(("/", ".")) else f"./{joined}"


# -- files and the command line ------------------------------------------------------------------


def source_checkout() -> Path:
    """The repository this dualchain runs from (its Dockerfile is the image's recipe)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "deploy" / "Dockerfile").is_file():
        raise UpError(f"dualchain compose needs a source checkout with deploy/Dockerfile "
                      f"(looked in {root})")
    return root


def generation_command(config: UpConfig, keys: str, backend: str = "auto") -> str:
    """The ``dualchain compose`` command line that regenerates a compose file (its header)."""
    args = [f"--nodes {config.nodes}", f"--clients {config.clients}",
            f"--miners {config.miners}"]
    default = UpConfig()
    for f in fields(UpConfig):
        if f.name not in ("nodes", "clients", "miners", "workdir") and \
                getattr(config, f.name) != getattr(default, f.name):
            args.append(f"--set {f.name}={_set_value(getattr(config, f.name))}")
    if keys != "init":
        args.append(f"--keys {keys}")
    if keys != "init" or backend != "auto":
        args.append(f"--backend {backend}")
    return "dualchain compose " + " ".join(args)


def render(config: UpConfig, procs: list[Proc], out: Path, keys: str = "init",
           backend: str = "auto", repo: Path | None = None) -> dict[str, str]:
    """The generated files' text by path relative to ``out`` (nothing is written)."""
    repo = repo if repo is not None else source_checkout()
    relative = os.path.relpath(repo.resolve(), out.resolve())
    command = generation_command(config, keys, backend)
    header = (f"Generated by `{command} --out DIR`:\n"
              f"regenerate, do not edit. See docs/deploy.md (docker-compose).")
    return {
        "docker-compose.yml": render_yaml(compose_document(
            config, procs, keys=keys, backend=backend, repo=relative), header),
        PROMETHEUS_FILE: render_yaml(prometheus_document(procs), header),
    }


def generate(config: UpConfig, out: Path, keys: str = "init", backend: str = "auto") -> list[Path]:
    """Writes the compose file and the Prometheus config under ``out`` (with ``keys="host"``
    also the planned testbed); returns the paths written."""
    if keys == "host":
        testbed = write_testbed(config, out / HOST_TESTBED, backend)
        assert testbed is not None
        procs, backend = [p for p in testbed.procs if not p.late], testbed.backend
    else:
        procs = plan_processes(config)  # testbed-init resolves "auto" in the image
    written = []
    for name, text in render(config, procs, out, keys, backend).items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    if keys == "host":
        written.append(out / HOST_TESTBED)
    return written
