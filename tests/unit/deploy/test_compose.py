"""`dualchain compose`: the generated stack is consistent, the committed default stack is what the
generator writes, the Grafana dashboard reads only metrics the processes export, and the compose
file validates where a compose implementation is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from dualchain.cli import build_parser, main
from dualchain.cli.compose import config_from_args
from dualchain.deploy import compose
from dualchain.deploy.compose import (
    PROMETHEUS_FILE,
    compose_document,
    plan_processes,
    render,
)
from dualchain.deploy.documents import METRICS_PORT, prometheus_document, render_yaml
from dualchain.deploy.health_probe import probe
from dualchain.deploy.plan import UpConfig
from dualchain.deploy.processes import free_ports

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "dualchain.json"
SMALL = UpConfig(nodes=2, clients=3, miners=1)


@pytest.fixture(scope="module")
def host_stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A small stack generated with --keys host: its folder and its compose document."""
    out = tmp_path_factory.mktemp("stack")
    assert main(["compose", "--out", str(out), "--keys", "host", "--nodes", "2", "--clients",
                 "3", "--miners", "1", "--backend", "cryptography"]) == 0
    procs = compose.load_processes(out / compose.HOST_TESTBED)
    document = compose_document(SMALL, procs, keys="host", backend="cryptography",
                                repo=os.path.relpath(REPO.resolve(), out.resolve()))
    # The document checked below is the file written (after its header comment).
    assert (out / "docker-compose.yml").read_text().endswith("\n" + render_yaml(document))
    return out, document


def _arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _process_services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in document["services"].items()
            if name not in ("testbed-init", "prometheus", "grafana")}


# -- the generated stack -------------------------------------------------------------------------


def test_every_process_of_up_is_a_service_with_its_files(host_stack) -> None:
    out, document = host_stack
    testbed = out / compose.HOST_TESTBED
    services = _process_services(document)
    assert sorted(services) == sorted(
        [f"ctbc-{i}" for i in range(2)] + [f"cmbc-{i}" for i in range(2)] + ["miner-0"]
        + [f"node-{i}" for i in range(2)] + [f"client-{j}" for j in range(3)])
    for name, service in services.items():
        command = service["command"]
        assert command[0] == "dualchain" and service["working_dir"] == compose.TESTBED_DIR
        if name.startswith("miner"):
            assert (testbed / _arg(command, "--key")).is_file()
        else:
            config = testbed / _arg(command, "--config")
            assert config.is_file(), f"{name}: {config} missing"
            data = json.loads(config.read_text())
            assert (testbed / data["key"]).is_file()
            assert data["metrics_port"] == METRICS_PORT
        if name.startswith(("ctbc", "cmbc")):
            assert data["data_dir"] == compose.DATA_DIR and data["backend"] == "cryptography"
            assert (testbed / data["genesis"]).is_file()
            assert f"{name}-data:{compose.DATA_DIR}" in service["volumes"]


def test_addresses_name_services_and_their_ports(host_stack) -> None:
    out, document = host_stack
    testbed = out / compose.HOST_TESTBED
    services = document["services"]
    ports = {"ctbc": 7000, "cmbc": 7100, "node": 7300}

    def check(address: str) -> None:
        host, _, port = address.rpartition(":")
        assert host in services, f"{address} names no service"
        assert int(port) == ports[host.split("-")[0]], address

    for name, service in _process_services(document).items():
        command = service["command"]
        if name.startswith("miner"):
            check(_arg(command, "--cmbc"))
            continue
        data = json.loads((testbed / _arg(command, "--config")).read_text())
        for key in ("listen", "ctbc", "cmbc", "node"):
            if key in data:
                check(data[key])
        for address in [*data.get("peers", []), *data.get("nodes", {}).values()]:
            check(address)
        if "listen" in data:
            assert data["listen"] == f"{name}:{ports[name.split('-')[0]]}"
        # The image's cheap check (the health file), never a Python process per probe.
        assert service["healthcheck"]["test"] == ["CMD", "dualchain-healthy"]
    for validator in json.loads((testbed / "ctbc-genesis.json").read_text())["validators"]:
        check(validator["address"])


def test_dependencies_volumes_and_published_ports_are_consistent(host_stack) -> None:
    _, document = host_stack
    services, declared = document["services"], set(document["volumes"])
    used = set()
    published: list[str] = []
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services and dependency != name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
        for mapping in service.get("ports", []):
            published.append(re.sub(r"\$\{\w+:-(\d+)\}", r"\1", mapping).split(":")[0])
    assert used == declared
    assert len(published) == len(set(published)) == 2  # Prometheus and Grafana only
    init = services["testbed-init"]
    assert all(s["depends_on"]["testbed-init"]["condition"] == "service_completed_successfully"
               for s in _process_services(document).values())
    assert init["user"] == "0:0" and any(v.endswith(":/seed:ro") for v in init["volumes"])
    # up's order: nodes wait for every daemon, clients for every node, miners for CMBC.
    assert set(services["node-0"]["depends_on"]) == {"testbed-init", "ctbc-0", "ctbc-1",
                                                     "cmbc-0", "cmbc-1"}
    assert set(services["client-2"]["depends_on"]) == {"testbed-init", "node-0", "node-1"}
    assert set(services["miner-0"]["depends_on"]) == {"testbed-init", "cmbc-0", "cmbc-1"}


def test_prometheus_scrapes_every_process_once(host_stack) -> None:
    _, document = host_stack
    processes = _process_services(document)
    config = prometheus_document([compose.Proc(name, name.split("-")[0], [])
                                  for name in processes])
    targets = [t for job in config["scrape_configs"] for group in job["static_configs"]
               for t in group["targets"]]
    assert sorted(targets) == sorted(f"{name}:{METRICS_PORT}" for name in processes)
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            assert group["labels"]["role"] == job["job_name"]
            assert group["targets"] == [f"{group['labels']['process']}:{METRICS_PORT}"]


def test_testbed_init_plans_the_same_configuration_from_its_command_line() -> None:
    config = UpConfig(nodes=3, clients=5, miners=2, mode="ddmlts", stragglers=0.2,
                      slowdowns=[1.0, 2.5], learning_rate=0.1)
    init = compose.compose_document(config, [], keys="init")["services"]["testbed-init"]
    # Compose substitutes ${VAR:-default} with the default when VAR is unset.
    argv = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in init["command"][1:]]
    args = build_parser().parse_args(argv)
    # "auto": testbed-init plans with what the image really has (liboqs only where it works).
    assert args.testbed_only and args.if_missing and args.backend == "auto"
    assert config_from_args(args) == config


def test_testbed_only_keeps_an_existing_testbed(tmp_path: Path, capsys) -> None:
    argv = ["compose", "--testbed-only", "--if-missing", "--out", str(tmp_path / "run"),
            "--nodes", "1", "--clients", "1", "--backend", "cryptography"]
    assert main(argv) == 0
    genesis = (tmp_path / "run" / "ctbc-genesis.json").read_text()
    assert main(argv) == 0
    assert "kept" in capsys.readouterr().out
    assert (tmp_path / "run" / "ctbc-genesis.json").read_text() == genesis


def test_bad_settings_are_refused(tmp_path: Path, capsys) -> None:
    assert main(["compose", "--out", str(tmp_path), "--set", "nodez=3"]) == 2
    assert main(["compose", "--out", str(tmp_path), "--set", "join_nodes=1"]) == 2
    assert main(["compose", "--out", str(tmp_path), "--set", "hosts=netns"]) == 2
    assert main(["compose", "--out", str(tmp_path), "--set", "nodes=\"four\""]) == 2
    assert "dualchain compose" in capsys.readouterr().err


# -- the committed default stack -----------------------------------------------------------------


def test_committed_default_stack_is_what_compose_generates() -> None:
    """Drift check: regenerate with `dualchain compose --out .` after changing the generator,
    up's planning or the default sizes."""
    files = render(UpConfig(), plan_processes(UpConfig()), REPO, keys="init",
                   backend="auto", repo=REPO)
    assert set(files) == {"docker-compose.yml", PROMETHEUS_FILE}
    for name, text in files.items():
        assert (REPO / name).read_text() == text, f"{name} is stale: run `dualchain compose`"


def test_committed_default_stack_has_the_issue_sizes() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    services = set(re.findall(r"^  ([a-z][a-z0-9-]*):$", text, re.MULTILINE))
    for role, count in (("ctbc", 4), ("cmbc", 4), ("node", 4), ("client", 8)):
        assert {s for s in services if s.startswith(role + "-")} == \
            {f"{role}-{i}" for i in range(count)}
    assert "miner-0" in services and {"prometheus", "grafana", "testbed-init"} <= services
    assert not list((REPO / "deploy").rglob("*.key"))  # keys are planned in the stack's volume


def test_yaml_rendering() -> None:
    document = {"services": {"a": {"command": ["x", "--flag", "7", "${V:-no}"],
                                   "restart": "no", "env": {"ON": "true"}, "count": 3,
                                   "empty": {}, "list": [{"k": "v", "m": 1}, "plain"]}}}
    assert render_yaml(document, "head") == (
        "# head\n"
        "services:\n"
        "  a:\n"
        '    command: [x, "--flag", "7", "${V:-no}"]\n'
        '    restart: "no"\n'
        "    env:\n"
        '      "ON": "true"\n'
        "    count: 3\n"
        "    empty: {}\n"
        "    list:\n"
        "      - k: v\n"
        "        m: 1\n"
        "      - plain\n")


# -- the Grafana dashboard -----------------------------------------------------------------------

_FUNCTIONS_AND_KEYWORDS = {
    "abs", "avg", "avg_over_time", "by", "bool", "ceil", "clamp_max", "clamp_min", "count",
    "count_over_time", "delta", "deriv", "floor", "group_left", "group_right", "histogram_quantile",
    "idelta", "ignoring", "increase", "irate", "label_replace", "max", "max_over_time", "min",
    "min_over_time", "offset", "on", "quantile", "rate", "round", "scalar", "sort", "sort_desc",
    "stddev", "sum", "sum_over_time", "time", "topk", "bottomk", "vector", "without", "and", "or",
    "unless", "inf", "nan",
}
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def metric_names_in(expr: str) -> set[str]:
    """The series a PromQL expression reads: identifiers outside label matchers, ranges, strings
    and grouping clauses that are no function, aggregation or keyword."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)", expr):
        name = match.group(1)
        if name.lower() in _FUNCTIONS_AND_KEYWORDS or re.fullmatch(r"\d+\w*", name):
            continue
        names.add(name)
    return names


def exported_metric_names() -> set[str]:
    """Every series name a dualchain process exports, read off their real registries."""
    from dualchain.chain.daemon.metrics import ChainMetrics, PowMetrics
    from dualchain.chain.miner import MinerStats, serve_metrics
    from dualchain.client.metrics import ClientMetrics
    from dualchain.node.metrics import NodeMetrics

    chain = ChainMetrics("cmbc")
    PowMetrics(chain.registry)
    registries: list[CollectorRegistry] = [chain.registry, NodeMetrics().registry,
                                           ClientMetrics().registry,
                                           serve_metrics(MinerStats(), 0)]
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def test_dashboard_reads_only_exported_metrics() -> None:
    known = exported_metric_names() | PROMETHEUS_SERIES
    queries = _dashboard_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        unknown = metric_names_in(expr) - known
        assert not unknown, f"panel {title!r} queries unknown metrics {sorted(unknown)}: {expr}"


def test_metric_check_catches_a_misspelt_metric() -> None:
    known = exported_metric_names()
    assert "dualchain_chain_height" in known and "dualchain_process_cpu_seconds" in known
    assert "dualchain_chain_txs_committed_total" in known
    expr = 'sum by (job) (rate(dualchain_chain_txs_comitted_total{job="ctbc"}[1m]))'
    assert metric_names_in(expr) - known == {"dualchain_chain_txs_comitted_total"}
    assert metric_names_in("histogram_quantile(0.95, sum by (le) (rate(x_bucket[1m]))) * 100") \
        == {"x_bucket"}


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(expr for _, expr in _dashboard_queries())
    for metric in ("dualchain_chain_txs_committed_total",  # tps
                   "dualchain_chain_commit_latency_seconds_bucket",
                   "dualchain_chain_height", "dualchain_node_model_version",
                   "dualchain_node_accuracy", "dualchain_client_task_seconds_bucket",
                   "dualchain_process_cpu_seconds"):
        assert metric in exprs
    datasource = (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    uids = {panel["datasource"]["uid"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert uids == {"dualchain-prometheus"} and "uid: dualchain-prometheus" in datasource


# -- static validation by a compose implementation -----------------------------------------------


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_files_validate_statically(host_stack) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no compose implementation here: neither the `docker compose` plugin nor "
                    "`docker-compose` is installed (the Docker engine is not needed)")
    out, _ = host_stack
    for folder in (REPO, out):
        result = subprocess.run([*cli, "-f", str(folder / "docker-compose.yml"), "config", "-q"],
                                cwd=folder, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr


# -- the health probe ----------------------------------------------------------------------------


def test_health_probe_follows_the_grpc_health_service(capsys) -> None:
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        address = f"127.0.0.1:{port}"
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert probe(address, timeout_s=2) == 1
        assert "NOT_SERVING" in capsys.readouterr().err
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert main(["health", address]) == 0
        assert probe(address, service="dualchain.v1.ChainService", timeout_s=2) == 1
    finally:
        server.stop(None)
    assert probe(address, timeout_s=1) == 1  # nothing listens any more


def test_health_probe_reads_a_metrics_endpoint(monkeypatch) -> None:
    from dualchain.chain.daemon.metrics import ProcessCollector

    registry = CollectorRegistry()
    registry.register(ProcessCollector("dualchain_process"))
    port = free_ports(1)[0]
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        assert probe(None, metrics=port, timeout_s=2) == 0
        monkeypatch.setenv("DUALCHAIN_HEALTH_METRICS", str(port))
        assert probe(None) == 0
    finally:
        server.shutdown()
    monkeypatch.setenv("DUALCHAIN_HEALTH_METRICS", str(free_ports(1)[0]))
    assert probe(None, timeout_s=1) == 1
    monkeypatch.delenv("DUALCHAIN_HEALTH_METRICS")
    assert probe(None) == 0  # nothing configured: nothing to probe
