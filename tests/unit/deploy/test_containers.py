"""The image's recipe, its health check, the swarm stack and status of a container testbed.

The real engine runs in `make container-test` (deploy/container-test.sh); these check what can
be checked without one: the files docker reads, the health file protocol and the shell check
the image runs, the backend a testbed is planned with, the stack document's shape.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dualchain.chain import heartbeat, mldsa
from dualchain.cli import main
from dualchain.deploy import compose, swarm
from dualchain.deploy import status as status_module
from dualchain.deploy.up import UpConfig, client_node

REPO = Path(__file__).resolve().parents[3]
HEALTHY = REPO / "deploy" / "healthy"


# -- the image's recipe --------------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a plain file: the last matching pattern decides (``!`` re-includes);
    a pattern matching a parent folder matches what is under it."""
    result = False
    parts = path.split("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch("/".join(parts[:i]), pattern)
                      for i in range(1, len(parts) + 1))
        if hit:
            result = not negated
    return result


def test_dockerfile_fetches_no_frontend_and_has_no_second_ignore_file() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    # BuildKit alone reads deploy/Dockerfile.dockerignore; the legacy builder reads only the root
    # file, so there is one, for both.
    assert not (REPO / "deploy" / "Dockerfile.dockerignore").exists()
    assert (REPO / ".dockerignore").is_file()


def test_build_context_is_what_the_image_copies() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    sources = [m.split()[0] for m in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M)]
    sources = [s.replace("${WHEELS}", "deploy/wheels").rstrip("/") for s in sources]
    for source in sources:
        assert not _ignored(source, patterns), f"{source} is copied but not in the context"
        assert (REPO / source).exists(), source
    for left_out in (".venv/bin/python", "runs/demo/state.json", ".git/HEAD", "tests/conftest.py",
                     "dualchain/__pycache__/x.pyc", "docs/deploy.md"):
        assert _ignored(left_out, patterns), f"{left_out} would be sent to the engine"


def test_liboqs_is_off_by_default_and_torch_has_an_offline_path() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.findall(r"^ARG WITH_LIBOQS=(\d)$", text, re.MULTILINE) == ["0", "0"]
    for arg in ("BASE_IMAGE", "WHEELS", "TORCH_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX"):
        assert re.search(rf"^ARG {arg}\b", text, re.MULTILINE), arg
    assert compose.BUILD_ARGS["WITH_LIBOQS"] == "${WITH_LIBOQS:-0}"


# -- the backend a testbed is planned with -------------------------------------------------------


def test_auto_backend_is_cryptography_where_liboqs_is_absent(monkeypatch, tmp_path: Path,
                                                            capsys) -> None:
    monkeypatch.setattr(mldsa, "available_backends",
                        lambda: {"cryptography": None, "liboqs": "not here"})
    assert mldsa.resolve_backend("auto") == "cryptography"
    assert main(["compose", "--testbed-only", "--out", str(tmp_path), "--nodes", "1",
                 "--clients", "1", "--backend", "auto"]) == 0
    assert "backend cryptography" in capsys.readouterr().out
    for name in ("ctbc-0", "cmbc-0", "client-0"):
        assert json.loads((tmp_path / f"{name}.json").read_text())["backend"] == "cryptography"
    miner = json.loads((tmp_path / "compose.json").read_text())["processes"]
    argv = next(p["argv"] for p in miner if p["role"] == "miner")
    assert argv[argv.index("--backend") + 1] == "cryptography"
    monkeypatch.setattr(mldsa, "available_backends",
                        lambda: {"cryptography": None, "liboqs": None})
    assert mldsa.resolve_backend("auto") == "liboqs"
    assert mldsa.resolve_backend("cryptography") == "cryptography"


def test_compose_file_lets_the_image_choose_the_backend() -> None:
    document = compose.compose_document(UpConfig(nodes=1, clients=1), [], keys="init")
    init = document["services"]["testbed-init"]["command"]
    assert init[init.index("--backend") + 1] == "${DUALCHAIN_BACKEND:-auto}"
    assert document["services"]["prometheus"]["profiles"] == ["monitoring"]
    assert document["services"]["grafana"]["profiles"] == ["monitoring"]


# -- the health file and the image's check -------------------------------------------------------


def _check(path: Path, max_age_min: str = "1") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DUALCHAIN_HEALTH_FILE": str(path),
           "DUALCHAIN_HEALTH_MAX_AGE_MIN": max_age_min}
    return subprocess.run([str(HEALTHY)], env=env, capture_output=True, text=True, timeout=10)


@pytest.mark.skipif(shutil.which("find") is None, reason="the check needs find(1)")
def test_health_check_follows_the_health_file(tmp_path: Path) -> None:
    path = tmp_path / "health"
    absent = _check(path)
    assert absent.returncode == 1 and "absent" in absent.stdout
    path.touch()
    fresh = _check(path)
    assert fresh.returncode == 0 and fresh.stdout.strip() == "healthy"
    old = time.time() - 120
    os.utime(path, (old, old))
    stale = _check(path)
    assert stale.returncode == 1 and "not touched" in stale.stdout


async def test_heartbeat_touches_while_running_and_removes_at_stop(tmp_path: Path,
                                                                   monkeypatch) -> None:
    path = tmp_path / "health"
    monkeypatch.delenv(heartbeat.ENV, raising=False)
    assert heartbeat.start() is None  # outside containers: nothing
    monkeypatch.setenv(heartbeat.ENV, str(path))
    task = asyncio.get_running_loop().create_task(heartbeat.beat(path, interval_s=0.05))
    while not path.exists():
        await asyncio.sleep(0.01)
    first = path.stat().st_mtime_ns
    old = time.time() - 120
    os.utime(path, (old, old))
    while path.stat().st_mtime_ns < first:  # touched again by the loop
        await asyncio.sleep(0.01)
    heartbeat.stop(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not path.exists()


def test_heartbeat_in_an_unwritable_place_logs_and_goes_on(tmp_path: Path, caplog) -> None:
    heartbeat.touch(tmp_path / "missing" / "health")
    assert "health file" in caplog.text


# -- the swarm stack -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("swarm")
    assert main(["compose", "--swarm", "--swarm-hosts", "2", "--nodes", "2", "--clients", "3",
                 "--miners", "1", "--backend", "cryptography", "--out", str(out)]) == 0
    config = UpConfig(nodes=2, clients=3, miners=1)
    testbed = out / swarm.SWARM_TESTBED
    procs = compose.load_processes(testbed)
    document = swarm.stack_document(config, procs, testbed, 2, swarm.SWARM_TESTBED)
    assert (out / swarm.STACK_FILE).read_text().endswith("\n" + compose.render_yaml(document))
    return out, document


def test_stack_runs_every_process_once_placed_by_labels(stack) -> None:
    _, document = stack
    services = document["services"]
    assert set(services) == {"ctbc-0", "ctbc-1", "cmbc-0", "cmbc-1", "node-0", "node-1",
                             "miner-0", "client-0", "client-1", "client-2"}
    config = UpConfig(nodes=2, clients=3, miners=1)
    for name, service in services.items():
        assert "depends_on" not in service  # a stack has no start conditions
        deploy = service["deploy"]
        assert deploy["endpoint_mode"] == "dnsrr"  # it listens on its own name
        assert deploy["restart_policy"]["condition"] == "any"
        index = int(name.rsplit("-", 1)[1])
        host = f"h{(client_node(config, index) if name.startswith('client') else index) % 2}"
        assert deploy["placement"]["constraints"] == [f"node.labels.dualchain.host == {host}"]
        assert service["networks"] == ["testbed"]
        assert service["healthcheck"]["test"] == ["CMD", "dualchain-healthy"]
    assert document["networks"]["testbed"]["driver"] == "overlay"
    assert set(document["volumes"]) == {"ctbc-0-data", "ctbc-1-data", "cmbc-0-data",
                                        "cmbc-1-data"}


def test_stack_hands_each_process_its_files_and_only_its_key(stack) -> None:
    out, document = stack
    for kind in ("configs", "secrets"):
        for entry in document[kind].values():
            assert (out / entry["file"]).is_file()
    testbed = out / swarm.SWARM_TESTBED
    for name, service in document["services"].items():
        targets = {c["target"] for c in service["configs"]}
        assert f"{compose.TESTBED_DIR}/ctbc-genesis.json" in targets
        assert f"{compose.TESTBED_DIR}/compose.json" in targets  # `dualchain status` inside
        [secret] = service["secrets"]
        assert secret["mode"] == 0o400 and secret["uid"] == "10001"
        if name.startswith("miner"):
            key = "keys/miner-0.key"
        else:
            assert f"{compose.TESTBED_DIR}/{name}.json" in targets
            key = json.loads((testbed / f"{name}.json").read_text())["key"]
        assert secret["target"] == f"{compose.TESTBED_DIR}/{key}"
        assert document["secrets"][secret["source"]]["file"].endswith(key)


def test_stack_file_validates_with_the_docker_cli(stack) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "stack", "config", "--help"],
                                        capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no docker CLI with `docker stack config` here (no engine is needed)")
    out, _ = stack
    result = subprocess.run([docker, "stack", "config", "-c", swarm.STACK_FILE], cwd=out,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "dnsrr" in result.stdout


def test_swarm_hosts_must_be_positive(tmp_path: Path, capsys) -> None:
    assert main(["compose", "--swarm", "--swarm-hosts", "0", "--out", str(tmp_path)]) == 2
    assert "--swarm-hosts" in capsys.readouterr().err


# -- dualchain status on a container testbed -----------------------------------------------------


def test_status_of_a_container_testbed_asks_its_servers(tmp_path: Path) -> None:
    assert main(["compose", "--testbed-only", "--out", str(tmp_path), "--nodes", "1",
                 "--clients", "1", "--backend", "cryptography"]) == 0
    status = status_module.testbed_status(tmp_path)  # nothing answers (names do not resolve)
    assert status["kind"] == "compose" and status["running"] is False
    assert status["servers"] == 3 and status["servers_answering"] == 0
    (tmp_path / "compose.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no state\.json or compose\.json"):
        status_module.testbed_status(tmp_path)
