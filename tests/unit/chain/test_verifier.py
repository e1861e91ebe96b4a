"""SignatureVerifier: results, the verified-signature and parsed-key caches, batches."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator

import pytest

from dualchain.chain.identity import Domain, Signer
from dualchain.chain.mldsa import Algorithm, Backend, PrivateKey, PublicKey, get_backend
from dualchain.chain.verifier import BACKGROUND_NICE, SignatureVerifier, VerifyRequest

ALG = Algorithm.ML_DSA_44


def _signer(label: str, algorithm: Algorithm = ALG) -> Signer:
    return Signer(hashlib.sha256(label.encode()).digest(), algorithm)


@pytest.fixture(scope="module")
def alice() -> Signer:
    return _signer("alice")


@pytest.fixture(scope="module")
def bob() -> Signer:
    return _signer("bob")


@pytest.fixture
def verifier() -> Iterator[SignatureVerifier]:
    with SignatureVerifier(workers=2) as v:
        yield v


class CountingBackend(Backend):
    """Wraps the default backend and counts key parses and verifications."""

    name = "counting"

    def __init__(self) -> None:
        self.inner = get_backend()
        self.parsed = 0
        self.verified = 0

    def private_key_from_seed(self, algorithm: Algorithm, seed: bytes) -> PrivateKey:
        return self.inner.private_key_from_seed(algorithm, seed)

    def public_key(self, algorithm: Algorithm, raw: bytes) -> PublicKey:
        self.parsed += 1
        key = self.inner.public_key(algorithm, raw)
        outer = self

        class Counted(PublicKey):
            def verify(self, signature: bytes, message: bytes, context: bytes) -> bool:
                outer.verified += 1
                return key.verify(signature, message, context)

        counted = Counted()
        counted.algorithm, counted.raw = algorithm, key.raw
        return counted


def test_valid_and_invalid(verifier: SignatureVerifier, alice: Signer, bob: Signer) -> None:
    message = b"block header"
    signature = alice.sign(Domain.BLOCK, message)
    assert verifier.verify(ALG, alice.public_key, Domain.BLOCK, message, signature) is True
    assert verifier.verify(ALG, alice.public_key, Domain.VOTE, message, signature) is False
    assert verifier.verify(ALG, alice.public_key, Domain.BLOCK, b"other", signature) is False
    assert verifier.verify(ALG, bob.public_key, Domain.BLOCK, message, signature) is False
    assert verifier.verify(ALG, alice.public_key, Domain.BLOCK, message, signature[:-1]) is False
    assert verifier.verify(ALG, alice.public_key, Domain.BLOCK, message, b"") is False
    assert verifier.verify(ALG, b"\x01" * 7, Domain.BLOCK, message, signature) is False
    request = VerifyRequest(ALG, alice.public_key, Domain.BLOCK, message, signature)
    assert verifier.verify_request(request) is True


def test_verified_signature_cache(alice: Signer) -> None:
    backend = CountingBackend()
    verifier = SignatureVerifier(backend, workers=1)
    message = b"tx-1"
    signature = alice.sign(Domain.TRANSACTION, message)

    assert verifier.verify(ALG, alice.public_key, Domain.TRANSACTION, message, signature)
    assert (verifier.cache_hits, backend.verified) == (0, 1)
    assert verifier.verify(ALG, alice.public_key, Domain.TRANSACTION, message, signature)
    assert (verifier.cache_hits, backend.verified) == (1, 1)  # served from the cache

    # A different message with the same signature is not served from the cache...
    assert not verifier.verify(ALG, alice.public_key, Domain.TRANSACTION, b"tx-2", signature)
    # ...nor the same message and signature under another domain.
    assert not verifier.verify(ALG, alice.public_key, Domain.VOTE, message, signature)
    assert (verifier.cache_hits, backend.verified) == (1, 3)

    # A different valid signature is checked once, then cached.
    other = alice.sign(Domain.TRANSACTION, b"tx-2")
    assert verifier.verify(ALG, alice.public_key, Domain.TRANSACTION, b"tx-2", other)
    assert verifier.verify(ALG, alice.public_key, Domain.TRANSACTION, b"tx-2", other)
    assert (verifier.cache_hits, backend.verified) == (2, 4)

    # The key was parsed once, whatever the number of checks.
    assert backend.parsed == 1


def test_failures_are_not_cached(alice: Signer) -> None:
    backend = CountingBackend()
    verifier = SignatureVerifier(backend, workers=1)
    signature = alice.sign(Domain.VOTE, b"yes")
    for _ in range(3):
        assert not verifier.verify(ALG, alice.public_key, Domain.VOTE, b"no", signature)
    assert verifier.cache_hits == 0
    assert backend.verified == 3  # every failure was checked again
    # The failure did not poison the cache for the real message.
    assert verifier.verify(ALG, alice.public_key, Domain.VOTE, b"yes", signature)
    assert verifier.cache_hits == 0


def test_cache_disabled(alice: Signer) -> None:
    backend = CountingBackend()
    verifier = SignatureVerifier(backend, cache_size=0, workers=1)
    signature = alice.sign(Domain.STATE_REPORT, b"report")
    for _ in range(3):
        assert verifier.verify(ALG, alice.public_key, Domain.STATE_REPORT, b"report", signature)
    assert verifier.cache_hits == 0
    assert backend.verified == 3
    assert backend.parsed == 1  # the parsed-key cache is separate and still on


def test_malformed_key_is_not_cached_as_a_key() -> None:
    backend = CountingBackend()
    verifier = SignatureVerifier(backend, workers=1)
    for _ in range(2):
        assert not verifier.verify(ALG, b"short", Domain.BLOCK, b"m", bytes(ALG.signature_bytes))
    assert backend.parsed == 2
    assert backend.verified == 0


def _mixed_requests(alice: Signer, bob: Signer) -> tuple[list[VerifyRequest], list[bool]]:
    requests: list[VerifyRequest] = []
    expected: list[bool] = []
    carol = _signer("carol", Algorithm.ML_DSA_65)
    for i in range(12):
        message = f"model update {i}".encode()
        signer = alice if i % 2 else bob
        signature = signer.sign(Domain.MODEL_UPDATE, message)
        kind = i % 4
        if kind == 0:
            requests.append(VerifyRequest(ALG, signer.public_key, Domain.MODEL_UPDATE, message,
                                          signature))
            expected.append(True)
        elif kind == 1:
            requests.append(VerifyRequest(ALG, signer.public_key, Domain.MODEL_UPDATE,
                                          message + b"x", signature))
            expected.append(False)
        elif kind == 2:
            requests.append(VerifyRequest(ALG, signer.public_key, Domain.MODEL_UPDATE, message,
                                          signature))
            expected.append(True)
        else:
            requests.append(VerifyRequest(ALG, b"\x00" * 10, Domain.MODEL_UPDATE, message,
                                          signature))  # malformed public key
            expected.append(False)
    message = b"carol's vote"
    signature = carol.sign(Domain.VOTE, message)
    requests.append(VerifyRequest(carol.algorithm, carol.public_key, Domain.VOTE, message,
                                  signature))
    expected.append(True)
    requests.append(VerifyRequest(carol.algorithm, carol.public_key, Domain.BLOCK, message,
                                  signature))
    expected.append(False)
    requests.append(VerifyRequest(ALG, carol.public_key, Domain.VOTE, message, signature))
    expected.append(False)  # a 65 key claimed as 44 is malformed
    return requests, expected


def test_verify_batch_in_order(verifier: SignatureVerifier, alice: Signer, bob: Signer) -> None:
    requests, expected = _mixed_requests(alice, bob)
    assert verifier.workers == 2
    assert verifier.verify_batch(requests) == expected
    assert verifier.verify_batch(list(reversed(requests))) == list(reversed(expected))
    assert verifier.verify_batch([]) == []
    assert verifier.verify_batch(requests[:1]) == expected[:1]


async def test_verify_batch_async_in_order(
    verifier: SignatureVerifier, alice: Signer, bob: Signer
) -> None:
    requests, expected = _mixed_requests(alice, bob)
    assert await verifier.verify_batch_async(requests) == expected
    assert await verifier.verify_batch_async(requests[::-1]) == expected[::-1]
    assert await verifier.verify_batch_async([]) == []


async def test_background_batches_run_on_lower_priority_threads(
    verifier: SignatureVerifier, alice: Signer, bob: Signer
) -> None:
    """Admission checks run at a higher nice value than the process's other threads, so the
    event loop comes first on a saturated machine; the results are the same."""
    requests, expected = _mixed_requests(alice, bob)
    assert await verifier.verify_batch_async(requests, background=True) == expected

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    base = nice()
    loop = asyncio.get_running_loop()
    background = await loop.run_in_executor(verifier._executor(background=True), nice)
    foreground = await loop.run_in_executor(verifier._executor(), nice)
    assert background == min(base + BACKGROUND_NICE, 19) and foreground == base


def test_batch_of_malformed_keys_is_false(verifier: SignatureVerifier) -> None:
    requests = [
        VerifyRequest(ALG, raw, Domain.BLOCK, b"m", bytes(ALG.signature_bytes))
        for raw in (b"", b"\x00", bytes(ALG.public_key_bytes - 1), bytes(ALG.public_key_bytes + 1))
    ]
    assert verifier.verify_batch(requests) == [False] * 4


def test_close_and_reuse(alice: Signer, bob: Signer) -> None:
    requests, expected = _mixed_requests(alice, bob)
    verifier = SignatureVerifier(workers=2)
    assert verifier.verify_batch(requests) == expected
    verifier.close()
    assert verifier.verify_batch(requests) == expected  # a new pool is started on demand
    verifier.close()
