"""The applications' genesis sections (fl, sched, single_chain): parsed and checked by the
applications, not the engine, with the same file format, hash and strictness as before."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest

from dualchain.apps.factory import cmbc_app, ctbc_app
from dualchain.apps.genesis import FlParams, Genesis, GenesisError, SchedParams
from dualchain.chain.app_context import AppContext
from dualchain.chain.genesis import Genesis as EngineGenesis
from dualchain.chain.verifier import SignatureVerifier
from tests.unit.apps.ctbc.test_registry import make_genesis
from tests.unit.chain.test_genesis import make_pow_genesis

FL = FlParams(model_hash="ab" * 32)


def fl_genesis() -> Genesis:
    return replace(Genesis.of(make_genesis()), fl=FL)


def test_the_engine_and_the_application_read_one_file_alike(tmp_path: Path) -> None:
    genesis = fl_genesis()
    genesis.save(tmp_path / "genesis.json")
    engine = EngineGenesis.load(tmp_path / "genesis.json")
    assert engine.app_sections == {"fl": genesis.to_json()["fl"]}  # raw, not interpreted
    assert engine.hash == genesis.hash and engine.genesis_block() == genesis.genesis_block()
    parsed = Genesis.of(engine)
    assert parsed == Genesis.load(tmp_path / "genesis.json") == genesis
    assert parsed.fl == FL and parsed.sched is None and not parsed.single_chain


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(surprise=1), r"^surprise: unknown key"),
        (lambda d: d.update(sched=d["fl"]), r"^sched: unknown key"),  # sched needs single_chain
        (lambda d: d["fl"].update(mode="fedsgd"), r"^fl\.mode: 'fedsgd'"),
        (lambda d: d["fl"].pop("mixing"), r"^fl\.mixing: missing"),
        (lambda d: d["fl"].update(colour=1), r"^fl\.colour: unknown key"),
        (lambda d: d.update(single_chain="yes"), r"^single_chain: expected true or false"),
    ],
)
def test_bad_application_sections_are_refused_naming_the_field(edit, message: str) -> None:
    data = copy.deepcopy(fl_genesis().to_json())
    edit(data)
    with pytest.raises(GenesisError, match=message):
        Genesis.from_json(data)
    engine = EngineGenesis.from_json(data)  # the engine loads it; the application refuses it
    with pytest.raises(GenesisError, match=message):
        Genesis.of(engine)


def test_sections_on_the_wrong_kind_of_chain_are_refused() -> None:
    cmbc = Genesis.of(make_pow_genesis())
    data = cmbc.to_json()
    data["fl"] = fl_genesis().to_json()["fl"]
    with pytest.raises(GenesisError, match=r"^fl: unknown key"):
        Genesis.from_json(data)
    with pytest.raises(GenesisError, match="single_chain: a boolean, and only on ctbc"):
        replace(cmbc, single_chain=True)
    with_sched = replace(cmbc, sched=SchedParams())
    assert Genesis.from_json(with_sched.to_json()).sched == SchedParams()


def test_the_daemons_factories_refuse_a_section_no_application_knows(tmp_path: Path) -> None:
    data = fl_genesis().to_json()
    data["fx"] = data.pop("fl")  # a typo of the section's name
    engine = EngineGenesis.from_json(data)
    verifier = SignatureVerifier()
    try:
        for factory in (ctbc_app, cmbc_app):
            with pytest.raises(GenesisError, match=r"^fx: unknown key"):
                factory(AppContext(engine, verifier, tmp_path))
        app = ctbc_app(AppContext(fl_genesis(), verifier, tmp_path))
        assert app.blobs is not None and (tmp_path / "blobs").is_dir()  # fl: model blobs
    finally:
        verifier.close()
