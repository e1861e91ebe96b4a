"""The genesis file: strict parsing, a hash independent of formatting, one genesis block."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from dualchain.chain.app import Validator
from dualchain.chain.consensus.pow import PowParams
from dualchain.chain.genesis import (
    ConsensusParams,
    Genesis,
    GenesisError,
    LedgerLimits,
    ReputationWeights,
)
from dualchain.chain.merkle import EMPTY_ROOT
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import ZERO_HASH
from dualchain.chain.validation import LedgerParams
from tests.ledger_builders import make_signer

SIGNERS = [make_signer(i) for i in range(1, 5)]


def make_genesis(**overrides: Any) -> Genesis:
    fields: dict[str, Any] = {
        "chain_id": "ctbc-test",
        "kind": "ctbc",
        "algorithm": Algorithm.ML_DSA_65,
        "genesis_time_ms": 1_700_000_000_000,
        "validators": tuple(
            Validator(s.id, s.public_key, f"127.0.0.1:{7000 + i}") for i, s in enumerate(SIGNERS)
        ),
        "consensus": ConsensusParams(committee_size=4, epoch_length=10),
    }
    fields.update(overrides)
    return Genesis(**fields)


def test_json_round_trip_keeps_every_field() -> None:
    genesis = make_genesis(
        limits=LedgerLimits(max_block_txs=77),
        reputation=ReputationWeights(votes=0.5, uptime=0, proposals=0.25, history=0.25),
    )
    again = Genesis.from_json(json.loads(json.dumps(genesis.to_json())))
    assert again == genesis
    assert again.hash == genesis.hash
    assert again.reputation.uptime == 0.0


def test_save_and_load(tmp_path) -> None:
    genesis = make_genesis()
    path = tmp_path / "genesis.json"
    genesis.save(path)
    assert Genesis.load(path) == genesis
    assert Genesis.load(path).hash == genesis.hash


def test_hash_ignores_key_order_whitespace_and_hex_case(tmp_path) -> None:
    genesis = make_genesis()
    data = genesis.to_json()

    def reverse(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: reverse(obj[k]) for k in reversed(list(obj))}
        if isinstance(obj, list):
            return [reverse(x) for x in obj]
        return obj

    shuffled = reverse(data)
    shuffled["validators"][0]["public_key"] = shuffled["validators"][0]["public_key"].upper()
    path = tmp_path / "g.json"
    path.write_text(json.dumps(shuffled, indent=7))
    assert list(json.loads(path.read_text())) != list(data)
    assert Genesis.load(path).hash == genesis.hash


def test_hash_changes_with_content() -> None:
    assert make_genesis().hash != make_genesis(chain_id="other").hash
    assert make_genesis().hash != make_genesis(genesis_time_ms=1).hash


def test_ledger_params_come_from_the_limits() -> None:
    genesis = make_genesis(limits=LedgerLimits(max_tx_bytes=1000))
    assert genesis.ledger_params() == LedgerParams(
        "ctbc-test", Algorithm.ML_DSA_65, max_tx_bytes=1000
    )
    assert LedgerLimits() == LedgerLimits(
        **{k: getattr(LedgerParams("x"), k) for k in LedgerLimits.__dataclass_fields__}
    )


def test_genesis_block_is_deterministic() -> None:
    block = make_genesis().genesis_block()
    again = Genesis.from_json(make_genesis().to_json()).genesis_block()
    assert block == again and block.hash == again.hash
    header = block.header
    assert header.height == 0
    assert header.parent_hash == ZERO_HASH
    assert header.tx_root == EMPTY_ROOT
    assert header.proposer == bytes(32)
    assert header.timestamp_ms == 1_700_000_000_000
    assert header.app_hash == make_genesis().hash
    assert header.signature == b"" and block.transactions == ()
    assert make_genesis(chain_id="x").genesis_block().hash != block.hash


def test_epoch_arithmetic() -> None:
    c = ConsensusParams(epoch_length=3)
    assert [c.epoch_of(h) for h in range(8)] == [0, 0, 0, 0, 1, 1, 1, 2]
    assert [h for h in range(10) if c.is_epoch_end(h)] == [3, 6, 9]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        target[int(last) if last.isdigit() else last] = value

    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for p in parents:
            target = target[int(p)] if p.isdigit() else target[p]
        del target[last]

    return edit


def _duplicate_validator(data: dict[str, Any]) -> None:
    data["validators"].append(dict(data["validators"][0]))


def _swap_ids(data: dict[str, Any]) -> None:
    vs = data["validators"]
    vs[0]["id"], vs[1]["id"] = vs[1]["id"], vs[0]["id"]


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("consensus.extra", 1), "consensus.extra"),
        (_set("validators.0.port", 1), "validators[0].port"),
        (_drop("chain_id"), "chain_id"),
        (_drop("reputation.history"), "reputation.history"),
        (_drop("limits.max_tx_bytes"), "limits.max_tx_bytes"),
        (_drop("validators.1.address"), "validators[1].address"),
        (_set("format", "dualchain-genesis/2"), "format"),
        (_set("chain_id", 5), "chain_id"),
        (_set("chain_id", ""), "chain_id"),
        (_set("kind", "bitcoin"), "kind"),
        (_set("algorithm", "ML-DSA-99"), "algorithm"),
        (_set("algorithm", "65"), "algorithm"),
        (_set("genesis_time_ms", "now"), "genesis_time_ms"),
        (_set("genesis_time_ms", 1.5), "genesis_time_ms"),
        (_set("genesis_time_ms", -1), "genesis_time_ms"),
        (_set("validators", {}), "validators"),
        (_set("validators.0", "v"), "validators[0]"),
        (_set("validators.0.public_key", "zz"), "validators[0].public_key"),
        (_set("validators.0.public_key", "00" * 1312), "validators[0].public_key"),
        (_set("validators.0.id", "00" * 32), "validators[0].id"),
        (_swap_ids, "validators[0].id"),
        (_duplicate_validator, "validators[4].id"),
        (_set("validators.2.address", ""), "validators[2].address"),
        (_set("consensus.committee_size", 0), "consensus.committee_size"),
        (_set("consensus.committee_size", 5), "consensus.committee_size"),
        (_set("consensus.committee_size", True), "consensus.committee_size"),
        (_set("consensus.epoch_length", 0), "consensus.epoch_length"),
        (_set("consensus.timeout_propose_ms", 0), "consensus.timeout_propose_ms"),
        (_set("consensus.timeout_prevote_ms", -5), "consensus.timeout_prevote_ms"),
        (_set("consensus.timeout_precommit_ms", 0), "consensus.timeout_precommit_ms"),
        (_set("consensus.timeout_delta_ms", 0), "consensus.timeout_delta_ms"),
        (_set("consensus.block_interval_ms", 2.0), "consensus.block_interval_ms"),
        (_set("limits.max_block_txs", 0), "limits.max_block_txs"),
        (_set("reputation.votes", -0.1), "reputation.votes"),
        (_set("reputation.votes", "0.3"), "reputation.votes"),
        (_set("reputation.window_epochs", 0), "reputation.window_epochs"),
    ],
)
def test_malformed_genesis_is_refused_naming_the_field(edit, field: str) -> None:
    data = copy.deepcopy(make_genesis().to_json())
    edit(data)
    with pytest.raises(GenesisError) as info:
        Genesis.from_json(data)
    assert info.value.reason.startswith(field), info.value.reason
    assert info.value.code == "bad_genesis"


def test_all_zero_weights_are_refused() -> None:
    data = make_genesis().to_json()
    data["reputation"].update(votes=0, uptime=0, proposals=0, history=0)
    with pytest.raises(GenesisError, match="reputation"):
        Genesis.from_json(data)


def test_unreadable_or_duplicate_key_files_are_refused(tmp_path) -> None:
    with pytest.raises(GenesisError, match="unreadable"):
        Genesis.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenesisError, match="unreadable"):
        Genesis.load(bad)
    twice = tmp_path / "twice.json"
    text = json.dumps(make_genesis().to_json())
    twice.write_text(text[:-1] + ', "chain_id": "evil"}')
    with pytest.raises(GenesisError, match="chain_id: appears twice"):
        Genesis.load(twice)
    with pytest.raises(GenesisError, match="genesis: expected a JSON object"):
        Genesis.from_json([])


def test_values_built_in_code_are_checked_too() -> None:
    with pytest.raises(GenesisError, match="committee_size"):
        make_genesis(consensus=ConsensusParams(committee_size=9))
    signer = SIGNERS[0]
    with pytest.raises(GenesisError, match=r"validators\[0\].id"):
        make_genesis(validators=(Validator(bytes(32), signer.public_key, "a:1"),))


def test_a_proof_of_work_genesis_needs_no_validators() -> None:
    genesis = make_genesis(kind="cmbc", validators=())
    assert Genesis.from_json(genesis.to_json()) == genesis


# -- the proof-of-work section (CMBC) ------------------------------------------------------------

POW = PowParams(initial_difficulty=12_345, block_interval_ms=500, retarget_interval=4,
                max_adjust=3, finality_depth=9, median_window=7)


def make_pow_genesis(pow_params: PowParams = POW) -> Genesis:
    return make_genesis(kind="cmbc", chain_id="cmbc-test", validators=(), pow=pow_params)


def test_pow_section_round_trips() -> None:
    genesis = make_pow_genesis()
    data = json.loads(json.dumps(genesis.to_json()))
    assert data["pow"] == {
        "initial_difficulty": 12_345, "block_interval_ms": 500, "retarget_interval": 4,
        "max_adjust": 3, "finality_depth": 9, "median_window": 7, "block_reward": 1_000_000,
    }
    again = Genesis.from_json(data)
    assert again == genesis and again.pow == POW and again.hash == genesis.hash


def test_pow_section_is_part_of_the_hash() -> None:
    assert make_pow_genesis().hash != make_pow_genesis(replace(POW, finality_depth=10)).hash


def test_block_reward_may_be_zero_and_is_part_of_the_hash() -> None:
    free = make_pow_genesis(replace(POW, block_reward=0))
    assert Genesis.from_json(json.loads(json.dumps(free.to_json()))) == free
    assert free.hash != make_pow_genesis().hash


def test_pow_section_belongs_to_cmbc_only() -> None:
    ctbc = make_genesis().to_json()
    assert "pow" not in ctbc
    ctbc["pow"] = make_pow_genesis().to_json()["pow"]
    with pytest.raises(GenesisError, match=r"^pow: unknown key"):
        Genesis.from_json(ctbc)
    cmbc = make_pow_genesis().to_json()
    del cmbc["pow"]
    with pytest.raises(GenesisError, match=r"^pow: missing"):
        Genesis.from_json(cmbc)


@pytest.mark.parametrize(
    ("field", "value"),
    [("initial_difficulty", 0), ("block_interval_ms", -1), ("retarget_interval", 2),
     ("max_adjust", 1), ("finality_depth", 0), ("median_window", 0),
     ("block_interval_ms", 0.5), ("finality_depth", True), ("retarget_interval", "4"),
     ("block_reward", -1), ("block_reward", 1.5), ("block_reward", 2**64)],
)
def test_malformed_pow_section_is_refused(field: str, value: object) -> None:
    data = make_pow_genesis().to_json()
    data["pow"][field] = value
    with pytest.raises(GenesisError) as info:
        Genesis.from_json(data)
    assert info.value.reason.startswith(f"pow.{field}"), info.value.reason
    data["pow"]["surprise"] = 1
    del data["pow"][field]
    with pytest.raises(GenesisError, match=r"^pow\."):
        Genesis.from_json(data)


def test_application_sections_are_carried_raw_into_the_hash() -> None:
    """The engine does not interpret a top-level key it does not know: it keeps the value as an
    application section, hashes it, and writes it back unchanged (the app parses its own)."""
    data = make_genesis().to_json()
    data["surprise"] = {"x": 1}
    genesis = Genesis.from_json(data)
    assert genesis.app_sections == {"surprise": {"x": 1}}
    assert genesis.to_json() == data
    assert genesis.hash != make_genesis().hash
    assert Genesis.from_json(genesis.to_json()).hash == genesis.hash
