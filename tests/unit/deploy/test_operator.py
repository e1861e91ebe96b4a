"""`dualchain readmit`'s bad input: each a one-line error and exit status 2, nothing submitted
(the accepted path and a forged re-admission run against a live testbed in
tests/integration/test_attacks.py and against the application in tests/unit/apps/ctbc)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.cli import main
from dualchain.deploy.operator import OperatorError, client_id
from tests.unit.apps.ctbc.test_registry import make_genesis


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    make_genesis().save(tmp_path / "ctbc-genesis.json")
    (tmp_path / "keys").mkdir(mode=0o700)
    Signer.generate(Algorithm.ML_DSA_44).save(tmp_path / "keys" / "client-3.key")
    return tmp_path


def error_of(capsys, *args: str) -> str:
    assert main(["readmit", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_a_client_is_an_id_or_a_key_name(workdir: Path) -> None:
    key_id = client_id(workdir, "client-3")
    assert client_id(workdir, key_id.hex()) == key_id
    for bad in ("client-9", "zz" * 32, "../keys/client-3", ""):
        with pytest.raises(OperatorError, match=r"^--client: "):
            client_id(workdir, bad)


def test_bad_input_is_one_line_and_exit_2(workdir: Path, tmp_path_factory, capsys) -> None:
    empty = tmp_path_factory.mktemp("empty")
    assert "holds no testbed" in error_of(capsys, "--workdir", str(empty), "--client", "x")
    assert "--client: 'client-9'" in error_of(capsys, "--workdir", str(workdir), "--client",
                                              "client-9")
    assert "operator.key does not exist" in error_of(capsys, "--workdir", str(workdir),
                                                     "--client", "client-3")
    Signer.generate(Algorithm.ML_DSA_44).save(workdir / "keys" / "operator.key")
    assert "no state.json or compose.json" in error_of(capsys, "--workdir", str(workdir),
                                                       "--client", "client-3")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    assert "no CTBC daemon answered" in error_of(capsys, "--workdir", str(workdir), "--client",
                                                 "client-3", "--ctbc", closed)


def test_a_broken_process_list_and_a_bad_timeout_are_one_line(workdir: Path, capsys) -> None:
    Signer.generate(Algorithm.ML_DSA_44).save(workdir / "keys" / "operator.key")
    (workdir / "state.json").write_text("{not json")
    assert "not a testbed's process list" in error_of(capsys, "--workdir", str(workdir),
                                                      "--client", "client-3")
    with pytest.raises(SystemExit) as info:
        main(["readmit", "--workdir", str(workdir), "--client", "client-3", "--timeout-s", "-1"])
    assert info.value.code == 2
    assert "not a positive number of seconds" in capsys.readouterr().err
