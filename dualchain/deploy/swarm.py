"""`dualchain compose --swarm`: a Docker Swarm stack of the testbed, over one machine or many.

    dualchain compose --swarm --swarm-hosts 3 --nodes 3 --clients 6 --out runs/swarm
    docker stack deploy --resolve-image never -c runs/swarm/dualchain-stack.yml dualchain

A stack has no shared volume across machines and no ``depends_on`` conditions, so it differs
from the compose file (``compose.py``) in three ways:

- the testbed is planned now, on the machine that writes the stack (``ComposeTestbed``, under
  ``OUT/deploy/swarm/testbed``), and reaches every service through the swarm itself: the
  genesis files, process configs and ``compose.json`` as swarm configs, each process's key as a
  secret only that service mounts (mode 0400, the image's user);
- placement by node labels: server ``I`` (``ctbc-I``, ``cmbc-I``, ``node-I``) runs on the swarm
  node labelled ``dualchain.host=hI%H`` (``H`` = ``--swarm-hosts``), a client on its server node's
  host, miner ``J`` on ``hJ%H``; a chain daemon's data volume lives on that machine;
- start-up order through the processes' own retries: a server node waits for its daemons (its
  first calls wait for the channel to be ready), clients and miners retry with back-off, and
  ``restart_policy`` starts again whatever exits early.

Services resolve each other by name on the overlay network with ``endpoint_mode: dnsrr``: a
process listens on its service's name (its container's address), which a virtual IP would not be;
each container's hostname is its service's name, so that name resolves at once in its own
container (``/etc/hosts``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dualchain.deploy.compose import (
    DATA_DIR,
    HEALTH,
    IMAGE,
    STOP_GRACE,
    TESTBED_DIR,
    ComposeTestbed,
    _command,
    write_testbed,
)
from dualchain.deploy.documents import ROLE_ORDER, render_yaml
from dualchain.deploy.plan import Proc, UpConfig, client_node

SWARM_TESTBED = "deploy/swarm/testbed"  # under OUT
STACK_FILE = "dualchain-stack.yml"
NETWORK = "testbed"
LABEL = "dualchain.host"
SHARED = ["compose.json", "up.json"]


def host_of(proc: Proc, config: UpConfig, hosts: int) -> str:
    """The ``dualchain.host`` label value a process is placed on."""
    index = int(proc.name.rsplit("-", 1)[1])
    if proc.role == "client":
        index = client_node(config, index)
    return f"h{index % hosts}"


def _key_of(proc: Proc, testbed: Path) -> str:
    """The key file (relative to the testbed) a process loads."""
    if proc.role == "miner":
        return proc.argv[proc.argv.index("--key") + 1]
    return str(json.loads((testbed / f"{proc.name}.json").read_text())["key"])


def _secret_name(key: str) -> str:
    return "key-" + Path(key).stem


def stack_document(config: UpConfig, procs: list[Proc], testbed: Path, hosts: int,
                   testbed_rel: str) -> dict[str, Any]:
    """The stack file for ``procs`` planned in ``testbed`` (``testbed_rel``: the same folder
    relative to the stack file, which swarm reads the configs' and secrets' files from)."""
    files = {p.name for p in testbed.iterdir() if p.is_file()}
    configs = {name: {"file": f"{testbed_rel}/{name}"} for name in sorted(files)}
    # Every process reads the genesis files; compose.json and up.json let `dualchain status`
    # run in any of the containers; a process's own config only where it runs.
    shared = [n for n in sorted(files) if n.endswith("-genesis.json")] + SHARED
    secrets: dict[str, Any] = {}
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    for role in ROLE_ORDER:
        for proc in (p for p in procs if p.role == role):
            key = _key_of(proc, testbed)
            secret = _secret_name(key)
            secrets[secret] = {"file": f"{testbed_rel}/{key}"}
            service: dict[str, Any] = {
                "image": IMAGE,
                # Its own name in /etc/hosts: it binds the address it listens on at once (the
                # swarm's DNS knows a task only once it runs).
                "hostname": proc.name,
                "command": _command(proc),
                "working_dir": TESTBED_DIR,
                "networks": [NETWORK],
                "configs": [{"source": n, "target": f"{TESTBED_DIR}/{n}", "mode": 0o444}
                            for n in [*shared, f"{proc.name}.json"] if n in files],
                "secrets": [{"source": secret, "target": f"{TESTBED_DIR}/{key}",
                             "uid": "10001", "gid": "10001", "mode": 0o400}],
                "healthcheck": dict(HEALTH),
                "stop_grace_period": STOP_GRACE[role],
                "deploy": {
                    "endpoint_mode": "dnsrr",
                    "placement": {"constraints": [
                        f"node.labels.{LABEL} == {host_of(proc, config, hosts)}"]},
                    "restart_policy": {"condition": "any", "delay": "5s"},
                },
            }
            if role in ("ctbc", "cmbc"):
                service["volumes"] = [f"{proc.name}-data:{DATA_DIR}"]
                volumes[f"{proc.name}-data"] = {}
            services[proc.name] = service
    return {"version": "3.8", "services": services,
            "networks": {NETWORK: {"driver": "overlay", "attachable": True}},
            "volumes": volumes, "configs": configs, "secrets": secrets}


def generate_swarm(config: UpConfig, out: Path, backend: str, hosts: int) -> list[Path]:
    """Plans the testbed under ``OUT/deploy/swarm/testbed`` (replaced) and writes the stack
    file ``OUT/dualchain-stack.yml``; returns both paths."""
    if hosts < 1:
        raise ValueError("--swarm-hosts must be at least 1")
    directory = out / SWARM_TESTBED
    testbed: ComposeTestbed | None = write_testbed(config, directory, backend)
    assert testbed is not None
    procs = [p for p in testbed.procs if not p.late]
    header = (f"Generated by `dualchain compose --swarm --swarm-hosts {hosts} "
              f"--nodes {config.nodes} --clients {config.clients} --miners {config.miners} "
              "...`:\nregenerate, do not edit. Label the swarm's machines dualchain.host=h0.."
              f"h{hosts - 1}, then\ndocker stack deploy --resolve-image never -c {STACK_FILE} "
              f"NAME (docs/deploy.md, Docker Swarm).\nThe keys are in {SWARM_TESTBED}/keys: "
              "keep that folder private.")
    path = out / STACK_FILE
    path.write_text(render_yaml(stack_document(config, procs, directory, hosts, SWARM_TESTBED),
                                header))
    return [path, directory]
