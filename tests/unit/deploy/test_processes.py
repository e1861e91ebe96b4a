"""Launch helpers: distinct free ports, and waiting for a process's JSON event line."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from dualchain.deploy.processes import free_ports, read_json_line


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def run(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def test_read_json_line_skips_other_lines_until_the_event() -> None:
    proc = run('print("noise"); print("[1]"); print(\'{"event": "other"}\'); '
               'print(\'{"event": "ready", "n": 7}\', flush=True); import time; time.sleep(30)')
    try:
        assert read_json_line(proc, "ready", 20) == {"event": "ready", "n": 7}
    finally:
        proc.kill()
        proc.wait()


def test_read_json_line_reports_an_early_exit_and_a_timeout() -> None:
    proc = run("import sys; sys.exit(3)")
    with pytest.raises(RuntimeError, match=r"exited \(3\)"):
        read_json_line(proc, "ready", 20)
    proc = run("import time; time.sleep(30)")
    try:
        with pytest.raises(TimeoutError, match="no 'ready' line"):
            read_json_line(proc, "ready", 0.5)
    finally:
        proc.kill()
        proc.wait()
