"""Backend contract (rejections, sizes, argument checks) and backend selection."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dualchain.chain.errors import BackendUnavailableError, SignatureError
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.mldsa import (
    BACKENDS,
    DEFAULT_BACKEND,
    Algorithm,
    Backend,
    available_backends,
    find_liboqs,
    get_backend,
)

REPO = Path(__file__).resolve().parents[3]
MESSAGE = b"transfer 10 units from a to b, nonce 42"



algorithms = pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.label)


def _signer(backend: Backend, algorithm: Algorithm, label: str) -> Signer:
    return Signer(hashlib.sha256(label.encode()).digest(), algorithm, backend)


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


# --- contract -----------------------------------------------------------------------------------


@algorithms
def test_sign_verify_roundtrip_and_sizes(backend: Backend, algorithm: Algorithm) -> None:
    seed = bytes(range(32))
    key = backend.private_key_from_seed(algorithm, seed)
    assert len(key.public_key) == algorithm.public_key_bytes
    assert backend.private_key_from_seed(algorithm, seed).public_key == key.public_key
    signature = key.sign(MESSAGE, Domain.TRANSACTION.value)
    assert len(signature) == algorithm.signature_bytes
    public = backend.public_key(algorithm, key.public_key)
    assert public.raw == key.public_key
    assert public.algorithm is algorithm
    assert public.verify(signature, MESSAGE, Domain.TRANSACTION.value) is True
    assert backend.verify(algorithm, key.public_key, signature, MESSAGE, Domain.TRANSACTION.value)


@algorithms
def test_wrong_context_rejected_for_every_domain_pair(
    backend: Backend, algorithm: Algorithm
) -> None:
    signer = _signer(backend, algorithm, "domains")
    public = backend.public_key(algorithm, signer.public_key)
    signatures = {domain: signer.sign(domain, MESSAGE) for domain in Domain}
    for signed, checked in itertools.product(Domain, Domain):
        expected = signed is checked
        got = public.verify(signatures[signed], MESSAGE, checked.value)
        assert got is expected, f"signed as {signed.name}, checked as {checked.name}"


@algorithms
def test_rejections_return_false(backend: Backend, algorithm: Algorithm) -> None:
    signer = _signer(backend, algorithm, "rejections")
    other = _signer(backend, algorithm, "someone else")
    ctx = Domain.TRANSACTION.value
    signature = signer.sign(Domain.TRANSACTION, MESSAGE)
    public = backend.public_key(algorithm, signer.public_key)
    wrong_key = backend.public_key(algorithm, other.public_key)
    assert public.verify(signature, MESSAGE, ctx) is True

    middle = len(signature) // 2
    cases: dict[str, tuple[Any, bytes, bytes, bytes]] = {
        "tampered message": (public, signature, _flip(MESSAGE, 0), ctx),
        "empty message": (public, signature, b"", ctx),
        "tampered signature (first byte)": (public, _flip(signature, 0), MESSAGE, ctx),
        "tampered signature (middle)": (public, _flip(signature, middle), MESSAGE, ctx),
        "tampered signature (last byte)": (public, _flip(signature, -1), MESSAGE, ctx),
        "truncated signature": (public, signature[:-1], MESSAGE, ctx),
        "half signature": (public, signature[: len(signature) // 2], MESSAGE, ctx),
        "oversized signature": (public, signature + b"\x00", MESSAGE, ctx),
        "empty signature": (public, b"", MESSAGE, ctx),
        "wrong public key": (wrong_key, signature, MESSAGE, ctx),
        "empty context": (public, signature, MESSAGE, b""),
        "context over 255 bytes": (public, signature, MESSAGE, b"x" * 256),
    }
    for name, (key, sig, message, context) in cases.items():
        try:
            got = key.verify(sig, message, context)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            pytest.fail(f"{name}: verify raised {exc!r}")
        assert got is False, name


@algorithms
def test_malformed_public_key(backend: Backend, algorithm: Algorithm) -> None:
    signer = _signer(backend, algorithm, "malformed")
    signature = signer.sign(Domain.BLOCK, MESSAGE)
    for raw in (b"", signer.public_key[:-1], signer.public_key + b"\x00"):
        with pytest.raises(SignatureError):
            backend.public_key(algorithm, raw)
        assert backend.verify(algorithm, raw, signature, MESSAGE, Domain.BLOCK.value) is False
    # A key of another parameter set is the wrong length for this one.
    other = next(a for a in Algorithm if a is not algorithm)
    with pytest.raises(SignatureError):
        backend.public_key(other, signer.public_key)


@algorithms
def test_argument_checks(backend: Backend, algorithm: Algorithm) -> None:
    for seed in (b"", bytes(31), bytes(33)):
        with pytest.raises(ValueError, match="32 bytes"):
            backend.private_key_from_seed(algorithm, seed)
    key = backend.private_key_from_seed(algorithm, bytes(32))
    with pytest.raises(ValueError, match="255"):
        key.sign(MESSAGE, b"x" * 256)
    signature = key.sign(MESSAGE, b"x" * 255)  # the longest allowed context
    assert backend.public_key(algorithm, key.public_key).verify(signature, MESSAGE, b"x" * 255)


# --- selection ----------------------------------------------------------------------------------


def test_default_backend_is_available() -> None:
    assert available_backends()[DEFAULT_BACKEND] is None
    backend = get_backend()
    assert backend.name == DEFAULT_BACKEND
    assert get_backend(DEFAULT_BACKEND) is backend  # one instance per name


def test_available_backends_lists_every_known_backend() -> None:
    found = available_backends()
    assert set(found) == set(BACKENDS) == {"cryptography", "liboqs"}
    for reason in found.values():
        assert reason is None or (isinstance(reason, str) and reason)


def test_unknown_backend() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("nope")
    assert "nope" in info.value.reason
    for name in BACKENDS:
        assert name in info.value.reason
    assert info.value.code == "backend_unavailable"


liboqs_absent = pytest.mark.skipif(
    find_liboqs() is not None, reason="the liboqs shared library is installed here"
)


@liboqs_absent
def test_liboqs_unavailable_without_library() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("liboqs")
    assert "liboqs" in info.value.reason
    reason = available_backends()["liboqs"]
    assert reason is not None and "liboqs" in reason
    with pytest.raises(BackendUnavailableError):
        Signer(bytes(32), Algorithm.ML_DSA_44, "liboqs")


@liboqs_absent
def test_liboqs_probe_never_imports_oqs(tmp_path: Path) -> None:
    """Selecting liboqs without the library is a catchable error; the process survives.

    A stand-in ``oqs`` module that exits the process on import (as liboqs-python does when it
    cannot find the library) is put on the path, so importing it too early would be seen.
    """
    (tmp_path / "oqs.py").write_text("raise SystemExit(97)\n")
    script = textwrap.dedent(
        """
        import sys
        from dualchain.chain.errors import BackendUnavailableError
        from dualchain.chain.mldsa import available_backends, get_backend
        try:
            get_backend("liboqs")
        except BackendUnavailableError as exc:
            assert "liboqs" in exc.reason, exc.reason
        else:
            sys.exit(3)
        assert available_backends()["liboqs"] is not None
        sys.exit(4 if "oqs" in sys.modules else 0)
        """
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(tmp_path), *filter(None, [env.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "oqs" not in sys.modules
