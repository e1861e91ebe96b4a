"""The committed protobuf stubs are exactly what the pinned generator makes from the .protos."""

from __future__ import annotations

import pytest

from dualchain.proto import codegen

pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) generates the stubs")


def test_committed_stubs_match_a_fresh_generation() -> None:
    assert codegen.drift() == []


def test_drift_is_detected(tmp_path, monkeypatch) -> None:
    # Point the check at a copy of the tree whose stub was edited by hand: it must complain.
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(codegen.ROOT / "dualchain" / "proto", copy / "dualchain" / "proto")
    stub = copy / codegen.PROTO_DIR / "ledger_pb2.py"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    monkeypatch.setattr(codegen, "ROOT", copy)
    assert codegen.drift() == ["ledger_pb2.py: differs from a fresh generation"]
