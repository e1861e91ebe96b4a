"""The dualchain command line: a true --help, keygen, and clear errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from dualchain.chain.identity import identity_id, load_key_file
from dualchain.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dualchain.cli", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_help_lists_only_commands_that_exist() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        assert name in result.stdout
    assert set(commands) == {"keygen", "demo", "bench", "chain", "miner", "client", "node",
                             "up", "status", "readmit", "testnet", "certs", "compose", "health"}


def test_keygen_writes_a_private_seed_file_and_prints_the_id(tmp_path: Path) -> None:
    result = run_cli("keygen", "--dir", str(tmp_path / "keys"), "--algorithm", "ML-DSA-44")
    assert result.returncode == 0, result.stderr
    printed_id = result.stdout.strip()
    key_file = tmp_path / "keys" / "identity.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    signer = load_key_file(key_file)
    assert signer.id.hex() == printed_id
    assert signer.algorithm.label == "ML-DSA-44"
    public = json.loads((tmp_path / "keys" / "identity.pub.json").read_text())
    assert identity_id(bytes.fromhex(public["public_key"])).hex() == printed_id


def test_keygen_refuses_to_overwrite_a_key(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--dir", str(tmp_path)]) == 0
    assert main(["keygen", "--dir", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_an_unavailable_backend_is_a_clear_error_not_a_switch(tmp_path: Path, capsys) -> None:
    from dualchain.chain.mldsa import find_liboqs

    if find_liboqs() is not None:
        return
    assert main(["keygen", "--dir", str(tmp_path), "--backend", "liboqs"]) == 2
    assert "liboqs" in capsys.readouterr().err
    assert not (tmp_path / "identity.key").exists()


def test_a_benchmark_prints_its_document_as_json(capsys) -> None:
    assert main(["bench", "central", "--epochs", "1", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["benchmark"] == "central" and len(document["accuracy_per_epoch"]) == 1
