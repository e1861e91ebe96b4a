"""The server node's update checks: each refusal names its reason and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.apps.ctbc.fl import FlRules, SignedUpdate, sign_update
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.aggregation import StalenessRule
from dualchain.learning.codec import encode_params
from dualchain.node.gate import UpdateGate, UpdateRefused

ALG = Algorithm.ML_DSA_44
CHAIN = "ctbc-test"
SIZE = 12
SHAPES = [("w", (3, 4))]


@pytest.fixture(scope="module")
def verifier():
    v = SignatureVerifier()
    yield v
    v.close()


@pytest.fixture(scope="module")
def client() -> Signer:
    return Signer.generate(ALG)


def rules(max_staleness: int = 2) -> FlRules:
    return FlRules(CHAIN, ALG, "fedasync", StalenessRule("eq2", max_staleness=max_staleness),
                   1.0, 10.0)


def make_gate(verifier, registered: dict[bytes, bytes]) -> UpdateGate:
    return UpdateGate(rules(), verifier, registered.get, SIZE)


def update(client: Signer, delta: np.ndarray | None = None, base: int = 3, task: int = 1,
           chain: str = CHAIN) -> SignedUpdate:
    delta = np.full(SIZE, 0.1, np.float32) if delta is None else delta
    return sign_update(client, chain, base, 64, task, encode_params(delta, SHAPES))


def refused(gate: UpdateGate, raw: bytes, version: int = 3) -> str:
    with pytest.raises(UpdateRefused) as info:
        gate.check(raw, version)
    return info.value.code


def test_a_good_update_passes_once_and_its_replay_is_refused(verifier, client) -> None:
    gate = make_gate(verifier, {client.id: client.public_key})
    raw = update(client).encoded
    checked = gate.check(raw, 3)
    assert checked.delta.shape == (SIZE,)
    assert refused(gate, raw) == "replay"


def test_an_unregistered_key_is_refused(verifier, client) -> None:
    assert refused(make_gate(verifier, {}), update(client).encoded) == "unknown_client"


def test_a_key_other_than_the_registered_one_is_refused(verifier, client) -> None:
    other = Signer.generate(ALG)
    gate = make_gate(verifier, {client.id: other.public_key})
    assert refused(gate, update(client).encoded) == "wrong_key"


def test_a_tampered_update_fails_its_signature(verifier, client) -> None:
    good = update(client)
    tampered = SignedUpdate(good.chain_id, good.client, good.public_key, good.base_version,
                            good.samples, good.task,
                            encode_params(np.full(SIZE, 0.2, np.float32), SHAPES),
                            good.signature)
    gate = make_gate(verifier, {client.id: client.public_key})
    assert refused(gate, tampered.encoded) == "bad_signature"


def test_nan_values_are_refused(verifier, client) -> None:
    delta = np.full(SIZE, 0.1, np.float32)
    delta[5] = np.nan
    gate = make_gate(verifier, {client.id: client.public_key})
    assert refused(gate, update(client, delta).encoded) == "non_finite"


def test_a_norm_above_the_bound_is_refused(verifier, client) -> None:
    gate = make_gate(verifier, {client.id: client.public_key})
    assert refused(gate, update(client, np.full(SIZE, 50.0, np.float32)).encoded) == "norm"


def test_wrong_shape_future_and_too_stale_versions_are_refused(verifier, client) -> None:
    gate = make_gate(verifier, {client.id: client.public_key})
    short = sign_update(client, CHAIN, 3, 64, 9, encode_params(np.zeros(4, np.float32),
                                                               [("w", (4,))]))
    assert refused(gate, short.encoded) == "shape"
    assert refused(gate, update(client, base=4, task=2).encoded) == "unknown_version"
    assert refused(gate, update(client, base=0, task=3).encoded) == "too_stale"


def test_malformed_bytes_and_another_chain_are_refused(verifier, client) -> None:
    gate = make_gate(verifier, {client.id: client.public_key})
    assert refused(gate, b"not an update") == "malformed"
    assert refused(gate, update(client, chain="other-chain").encoded) == "wrong_chain"
