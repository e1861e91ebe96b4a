"""`dualchain status --workdir D`: a summary of a running or finished testbed.

While a local testbed runs (``state.json`` says so, its launcher lives and so does one of its
processes at least) it asks the processes themselves: each server node's version, accuracy and
refused updates, the chain daemons' heights, each client with an offence on record as the CTBC
state reports it (offences, reputation, excluded; ``apps/ctbc/clients.py``), each identity's
balance in micro-units summed over CTBC (clients' rewards) and CMBC (miners' block rewards) with
the two parts (``balances``), and with local DP each client's spent epsilon (``privacy.json``).
Afterwards it summarises ``report.json``. A container testbed (``compose.json``, no
``state.json``; run it in one of the stack's containers) gets the same from the servers that
answer.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from dualchain.chain.rpc import TlsFiles, open_blocking_channel
from dualchain.deploy.balances import identity_balances
from dualchain.deploy.certs import OPERATOR, TLS_DIR
from dualchain.deploy.privacy import read_privacy
from dualchain.deploy.state import launcher_alive, live_processes


def testbed_status(workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir)
    state_path = workdir / "state.json"
    if not state_path.exists() and (workdir / "compose.json").exists():
        return compose_status(workdir)
    if not state_path.exists():
        raise FileNotFoundError(f"{workdir} holds no testbed (no state.json or compose.json); "
                                "start one with 'dualchain up --workdir ...'")
    state = json.loads(state_path.read_text())
    processes = state["processes"]
    alive = live_processes(state)
    # Running: its launcher and at least one of its processes live (a SIGKILLed launcher's
    # state.json still says "running": true).
    running = bool(state["running"] and launcher_alive(state) and alive)
    out: dict[str, Any] = {"workdir": str(workdir), "running": running,
                           "processes": len(processes), "processes_alive": len(alive)}
    if running:
        tls = operator_tls(workdir)
        out.update(_live(processes, tls, _client_names(workdir)))
        balances = identity_balances(processes, tls, workdir / "keys")
        if balances is not None:  # micro-units per identity
            out["balances"] = balances
    report_path = workdir / "report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        out["report"] = {k: report.get(k) for k in (
            "final_accuracy", "time_to_final_s", "mean_c_gmax_s", "chain_heights",
            "updates_refused", "interrupted")}
        out["report"]["versions"] = len(report.get("versions", []))
        if report.get("privacy"):
            out["report"]["privacy"] = report["privacy"]
        if report.get("balances"):
            out["report"]["balances"] = report["balances"]
    elif (privacy := read_privacy(workdir)) is not None:
        out["privacy"] = privacy  # each client's spent epsilon so far
    return out


def compose_status(workdir: Path) -> dict[str, Any]:
    """A container testbed (``compose.json``, planned by ``dualchain compose``): no launcher
    keeps a state file, so the processes that answer are the live ones. Run it where the
    service names resolve, in one of the stack's containers (docs/deploy.md)."""
    processes = json.loads((workdir / "compose.json").read_text())["processes"]
    live = _live(processes, None, _client_names(workdir))
    answering = len(live["nodes"]) + len(live["chains"])
    servers = sum(p["role"] in ("node", "ctbc", "cmbc") for p in processes)
    return {"workdir": str(workdir), "kind": "compose", "running": answering > 0,
            "processes": len(processes), "servers": servers, "servers_answering": answering,
            **live}


def operator_tls(workdir: Path) -> TlsFiles | None:
    """The launcher's own certificate of a testbed run with ``--tls`` (None: plaintext)."""
    tls = workdir / TLS_DIR
    files = TlsFiles(tls / "ca.pem", tls / f"{OPERATOR}.pem", tls / f"{OPERATOR}.key")
    return files if all(p.exists() for p in (files.ca, files.cert, files.key)) else None


def _client_names(workdir: Path) -> dict[bytes, str]:
    """Client ids to the names of their key files (client-3), where they can be read."""
    from dualchain.chain.errors import DualchainError
    from dualchain.chain.identity import load_key_file

    names = {}
    for key in sorted((workdir / "keys").glob("client-*.key")):
        with contextlib.suppress(DualchainError):
            names[load_key_file(key).id] = key.stem
    return names


def _live(processes: list[dict[str, Any]], tls: TlsFiles | None,
          names: dict[bytes, str]) -> dict[str, Any]:
    import grpc

    from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc, node_pb2, node_pb2_grpc

    nodes, chains = [], {}
    clients: list[dict[str, Any]] | None = None  # from the first CTBC daemon that answers
    for p in processes:
        with contextlib.suppress(grpc.RpcError), open_blocking_channel(p["address"], tls) as ch:
            if p["role"] == "node":
                st = node_pb2_grpc.NodeServiceStub(ch).GetNodeStatus(
                    node_pb2.NodeStatusRequest(), timeout=2)
                nodes.append({"name": p["name"], "version": st.version,
                              "accuracy": round(st.accuracy, 4), "clients": st.clients,
                              "accepted": st.updates_accepted,
                              "refused": dict(st.updates_refused)})
            elif p["role"] in ("ctbc", "cmbc"):
                st = chain_pb2_grpc.ChainServiceStub(ch).GetStatus(
                    chain_pb2.GetStatusRequest(), timeout=2)
                chains[p["name"]] = {"height": st.height, "final_height": st.final_height}
                if p["role"] == "ctbc" and clients is None:
                    clients = [{"client": r.client.hex(), "name": names.get(r.client),
                                "offences": r.offences, "counted": r.counted,
                                "reputation": round(r.reputation, 4), "excluded": r.excluded,
                                "readmissions": r.readmissions, "last_version": r.last_version,
                                "last_reason": r.last_reason} for r in st.clients]
    return {"nodes": nodes, "chains": chains, "clients": clients or []}
