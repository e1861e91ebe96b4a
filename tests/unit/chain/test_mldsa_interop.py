"""Interoperability with dilithium-py, an independent pure-Python ML-DSA used as an oracle.

dilithium-py takes tens of milliseconds per operation, so each parameter set gets a few signatures.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from dilithium_py.ml_dsa import ML_DSA_44, ML_DSA_65, ML_DSA_87

from dualchain.chain.identity import Domain, Signer
from dualchain.chain.mldsa import Algorithm, Backend
from dualchain.chain.verifier import SignatureVerifier

ORACLE: dict[Algorithm, Any] = {
    Algorithm.ML_DSA_44: ML_DSA_44,
    Algorithm.ML_DSA_65: ML_DSA_65,
    Algorithm.ML_DSA_87: ML_DSA_87,
}



algorithms = pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.label)


def _seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@algorithms
def test_same_seed_same_public_key(backend: Backend, algorithm: Algorithm) -> None:
    for label in ("interop-seed-a", "interop-seed-b"):
        seed = _seed(label + algorithm.label)
        oracle_pk, _ = ORACLE[algorithm].key_derive(seed)
        assert len(oracle_pk) == algorithm.public_key_bytes
        assert backend.private_key_from_seed(algorithm, seed).public_key == oracle_pk
        assert Signer(seed, algorithm, backend).public_key == oracle_pk


@algorithms
def test_our_signature_verifies_in_dilithium_py(backend: Backend, algorithm: Algorithm) -> None:
    oracle = ORACLE[algorithm]
    signer = Signer(_seed("ours" + algorithm.label), algorithm, backend)
    raw_key = backend.private_key_from_seed(algorithm, _seed("raw" + algorithm.label))
    message = b"model update digest " + algorithm.label.encode()

    signature = signer.sign(Domain.MODEL_UPDATE, message)
    assert len(signature) == algorithm.signature_bytes
    assert oracle.verify(signer.public_key, message, signature, ctx=Domain.MODEL_UPDATE.value)
    # The oracle also sees that the context is bound into the signature.
    assert not oracle.verify(signer.public_key, message, signature, ctx=Domain.BLOCK.value)

    signature = raw_key.sign(message, Domain.TRANSACTION.value)
    assert oracle.verify(raw_key.public_key, message, signature, ctx=Domain.TRANSACTION.value)


@algorithms
def test_dilithium_py_signature_verifies_here(backend: Backend, algorithm: Algorithm) -> None:
    oracle = ORACLE[algorithm]
    oracle_pk, oracle_sk = oracle.key_derive(_seed("theirs" + algorithm.label))
    message = b"vote for block 7"
    signature = oracle.sign(oracle_sk, message, ctx=Domain.VOTE.value)

    key = backend.public_key(algorithm, oracle_pk)
    assert key.verify(signature, message, Domain.VOTE.value) is True
    assert key.verify(signature, message, Domain.TRANSACTION.value) is False
    assert key.verify(signature, message + b"!", Domain.VOTE.value) is False

    verifier = SignatureVerifier(backend, workers=1)
    assert verifier.verify(algorithm, oracle_pk, Domain.VOTE, message, signature) is True
    assert verifier.verify(algorithm, oracle_pk, Domain.BLOCK, message, signature) is False

    # Deterministic signing in the oracle with an empty context is accepted as well.
    signature = oracle.sign(oracle_sk, message, ctx=b"", deterministic=True)
    assert key.verify(signature, message, b"") is True
