"""Clients' standing in the CTBC state (apps/ctbc/clients.py), driven with real signed updates,
re-executed model commits, signed blocks and commit certificates: a discarded update is an
offence of its client, a repeat offender is excluded and its updates refused by the committee,
and only an operator named in the genesis re-admits it."""

from __future__ import annotations

import copy
import hashlib
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dualchain.apps.ctbc.clients import ClientReadmit, ClientRecord, offences_of
from dualchain.apps.ctbc.fl import ModelCommit, SignedUpdate, aggregate_pool, fl_rules, sign_update
from dualchain.apps.ctbc.payloads import decode_payload
from dualchain.apps.ctbc.registry import RegistryApp
from dualchain.apps.genesis import FlParams, Genesis, GenesisError
from dualchain.apps.genesis_defense import DefenseParams
from dualchain.chain.blobs import BlobStore
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import TxKind
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.codec import decode_params, encode_params
from tests.unit.apps.ctbc.test_registry import SIGNERS, Driver, failed_codes, make_genesis, refused

SHAPES = [("w", (4, 8))]
SIZE = 32
OPERATOR = SIGNERS[5]  # not a validator: an operator needs no seat
EXCLUDE_AFTER = 2


class FlDriver(Driver):
    """Two replicas with one blob store each (filled alike), and the clients' updates."""

    def __init__(self, genesis: Genesis, verifier: SignatureVerifier, root: Path) -> None:
        self.stores = [BlobStore(root / f"blobs-{i}") for i in range(2)]
        self.genesis = genesis
        self.apps = [RegistryApp(genesis, verifier, s) for s in self.stores]
        self.app = self.apps[0]
        self.head = genesis.genesis_block().header
        self.nonces = defaultdict(int)
        self.rules = fl_rules(genesis)
        self.base = np.zeros(SIZE, np.float32)
        for store in self.stores:
            store.put(encode_params(self.base, SHAPES))
        self.clients = [Signer.generate(Algorithm.ML_DSA_65) for _ in range(5)]
        self.attacker = self.clients[4]
        self.task = 0

    def updates(self, who: list[Signer], attacker_base: int | None = None
                ) -> list[tuple[SignedUpdate, np.ndarray]]:
        """One update of each of ``who`` on the current version (the attacker's on
        ``attacker_base`` if given): honest clients send about 0.1 everywhere, the attacker a
        flipped, larger one (Multi-Krum leaves it out)."""
        version = self.app.latest_model()[0]
        self.task += 1
        out = []
        rng = np.random.default_rng(self.task)
        for client in who:
            if client is self.attacker:
                delta = np.full(SIZE, -1.0, np.float32)
            else:
                delta = (0.1 + 0.01 * rng.standard_normal(SIZE)).astype(np.float32)
            base = (attacker_base if client is self.attacker and attacker_base is not None
                    else version)
            update = sign_update(client, self.genesis.chain_id, base, 10, self.task,
                                 encode_params(delta, SHAPES))
            for store in self.stores:
                store.put(update.encoded)
            out.append((update, delta))
        return out

    def commit_tx(self, who: list[Signer], attacker_base: int | None = None):
        """A node's honest commit of the next version over ``who``'s updates (the defense and
        the aggregate the committee re-executes)."""
        version = self.app.latest_model()[0]
        result = aggregate_pool(self.rules, self.base, self.updates(who, attacker_base), version)
        blob = encode_params(result.params, SHAPES)
        commit = ModelCommit(version + 1, version, hashlib.sha256(blob).digest(),
                             result.updates, result.discarded)
        return self.tx(SIGNERS[0], TxKind.MODEL_VERSION, commit.encode()), commit

    def advance(self, who: list[Signer], attacker_base: int | None = None) -> ModelCommit:
        tx, commit = self.commit_tx(who, attacker_base)
        self.step([tx])
        assert self.app.latest_model()[0] == commit.version, failed_codes(self.app)
        self.base = self.model(commit)
        return commit

    def model(self, commit: ModelCommit) -> np.ndarray:
        return decode_params(self.stores[0].get(commit.model_hash)).flat

    def readmit_tx(self, signer: Signer, client: Signer):
        return self.tx(signer, TxKind.CLIENT_READMIT, ClientReadmit(client.id).encode())


def fl_genesis(exclude_after: int = EXCLUDE_AFTER, mode: str = "fedavg",
               offence_max_staleness: int = 2) -> Genesis:
    base = np.zeros(SIZE, np.float32)
    return replace(
        make_genesis(n=4),
        fl=FlParams(model_hash=hashlib.sha256(encode_params(base, SHAPES)).hexdigest(),
                    mode=mode, max_update_norm=100.0),
        defense=DefenseParams(rule="multi_krum", krum_f=1, exclude_after=exclude_after,
                              offence_max_staleness=offence_max_staleness),
        operators=(OPERATOR.id,))


@pytest.fixture
def fl(verifier: SignatureVerifier, tmp_path: Path) -> FlDriver:
    return FlDriver(fl_genesis(), verifier, tmp_path)


def test_a_discarded_update_is_an_offence_of_its_client_on_every_replica(fl: FlDriver) -> None:
    commit = fl.advance(fl.clients)
    assert [reason for _, reason in commit.discarded] == ["not_selected"]
    records = [app.client_records() for app in fl.apps]
    assert records[0] == records[1] == {
        fl.attacker.id: ClientRecord(offences=1, counted=1, last_version=1,
                                     last_reason="not_selected")}
    assert records[0][fl.attacker.id].reputation == 0.5
    assert not fl.app.client_excluded(fl.attacker.id)
    [row] = fl.app.status_fields()["clients"]
    assert row["client"] == fl.attacker.id and row["offences"] == 1 and not row["excluded"]


def test_the_second_offence_excludes_and_the_committee_refuses_its_updates(fl: FlDriver) -> None:
    fl.advance(fl.clients)
    fl.advance(fl.clients)
    assert fl.app.client_excluded(fl.attacker.id)
    assert fl.app.client_records()[fl.attacker.id].reputation == pytest.approx(1 / 3)
    # A node that names the excluded client's update (kept or discarded) is refused at
    # admission and in a block: its updates cannot be laundered into a version.
    tx, _ = fl.commit_tx(fl.clients)
    with pytest.raises(ValidationError) as info:
        fl.app.check_tx(tx)
    assert info.value.code == "excluded_client"
    assert fl.app.refusal_evidence(tx, info.value) is None  # refused, its signer not blamed
    fl.step([tx])
    assert failed_codes(fl.app) == ["excluded_client"]
    assert fl.app.latest_model()[0] == 2
    assert fl.app.client_records()[fl.attacker.id].offences == 2  # nothing recorded
    fl.advance(fl.clients[:4])  # without it, the round goes on


def test_only_an_operator_readmits_and_readmission_resets_the_count(fl: FlDriver) -> None:
    fl.advance(fl.clients)
    with refused("not_excluded"):  # one offence: nothing to lift
        fl.app.check_tx(fl.readmit_tx(OPERATOR, fl.attacker))
    fl.advance(fl.clients)
    forged = fl.readmit_tx(SIGNERS[0], fl.attacker)  # a validator, but no operator
    with refused("not_an_operator"):
        fl.app.check_tx(forged)
    fl.step([forged])
    assert failed_codes(fl.app) == ["not_an_operator"]
    assert fl.app.client_excluded(fl.attacker.id)
    fl.step([fl.readmit_tx(OPERATOR, fl.attacker), fl.readmit_tx(OPERATOR, fl.attacker)])
    assert failed_codes(fl.app) == ["not_excluded"]  # the second one: lifted already
    for app in fl.apps:
        assert not app.client_excluded(fl.attacker.id)
        assert app.client_records()[fl.attacker.id] == ClientRecord(
            offences=2, counted=0, readmissions=1, last_version=2, last_reason="not_selected")
    fl.advance(fl.clients)  # its updates count again, from 0
    assert fl.app.client_records()[fl.attacker.id].counted == 1


def test_a_restarted_replica_replays_the_records(fl: FlDriver, verifier, tmp_path) -> None:
    blocks = []
    for _ in range(2):
        tx, commit = fl.commit_tx(fl.clients)
        blocks.append(fl.step([tx]))
        fl.base = fl.model(commit)
    restarted = RegistryApp(fl.genesis, verifier, fl.stores[1])
    for block in blocks:  # what the daemon does at start: replay its stored chain
        restarted.apply_block(block)
    assert restarted.app_hash() == fl.app.app_hash()
    assert restarted.client_excluded(fl.attacker.id)
    assert restarted.client_records() == fl.app.client_records()


def test_exclude_after_zero_never_excludes(verifier, tmp_path: Path) -> None:
    fl = FlDriver(fl_genesis(exclude_after=0), verifier, tmp_path)
    for _ in range(3):
        fl.advance(fl.clients)
    assert fl.app.client_records()[fl.attacker.id].counted == 3
    assert not fl.app.client_excluded(fl.attacker.id)
    with refused("not_excluded"):
        fl.app.check_tx(fl.readmit_tx(OPERATOR, fl.attacker))


def test_the_readmit_payload_is_strict() -> None:
    payload = ClientReadmit(b"\x07" * 32).encode()
    assert decode_payload(TxKind.CLIENT_READMIT, payload) == ClientReadmit(b"\x07" * 32)
    for bad in (payload[:-1], payload + b"\x00", b"DCR2" + payload[4:]):
        with pytest.raises(DecodeError):
            ClientReadmit.decode(bad)


def test_the_genesis_names_operators_and_refuses_bad_ones() -> None:
    genesis = fl_genesis()
    data = genesis.to_json()
    assert data["operators"] == [OPERATOR.id.hex()]
    assert Genesis.from_json(data) == genesis
    assert "operators" not in replace(genesis, operators=()).to_json()  # hash unchanged
    for value, message in (("ab", "expected a list"), (["zz" * 32], "64 lowercase hex"),
                           ([OPERATOR.id.hex()] * 2, "named twice")):
        bad = copy.deepcopy(data)
        bad["operators"] = value
        with pytest.raises(GenesisError, match=f"^operators: .*{message}"):
            Genesis.from_json(bad)


@pytest.mark.parametrize(("max_staleness", "offences"), [(0, 0), (1, 1)])
def test_the_registry_counts_a_discard_only_within_offence_max_staleness(
        verifier: SignatureVerifier, tmp_path: Path, max_staleness: int, offences: int) -> None:
    """fedasync: the attacker's update on version 0 is discarded from the commit of version 2
    (staleness 1) on both replicas; it is an offence only where the genesis allows staleness 1."""
    fl = FlDriver(fl_genesis(mode="fedasync", offence_max_staleness=max_staleness), verifier,
                  tmp_path)
    fl.advance(fl.clients[:4])
    commit = fl.advance(fl.clients, attacker_base=0)
    assert [reason for _, reason in commit.discarded] == ["not_selected"]
    records = [app.client_records() for app in fl.apps]
    assert records[0] == records[1]
    assert records[0].get(fl.attacker.id, ClientRecord()).offences == offences


def test_a_stale_discarded_update_is_no_offence() -> None:
    """In fedasync a slow honest client's stale update points where the model was: it is
    discarded, but only updates at most offence_max_staleness behind the parent count."""
    a, b, c = (bytes([i]) * 32 for i in (1, 2, 3))
    commit = ModelCommit(11, 10, bytes(32), (), discarded=((b"d1", "low_contribution"),
                                                           (b"d2", "low_contribution"),
                                                           (b"d3", "copy")))
    named = {b"d1": (a, 10), b"d2": (b, 8), b"d3": (c, 7)}
    assert offences_of(commit, named, 2) == ((a, "low_contribution"), (b, "low_contribution"))
    assert offences_of(commit, named, 3) == ((a, "low_contribution"), (b, "low_contribution"),
                                             (c, "copy"))
    assert offences_of(commit, named, 0) == ((a, "low_contribution"),)
