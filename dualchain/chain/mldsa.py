"""ML-DSA (FIPS 204, pure mode with a context string) behind one small interface.

Two backends implement it:

- ``cryptography``: pyca/cryptography (>= 47, OpenSSL-backed). The default.
- ``liboqs``: liboqs through liboqs-python, only when the liboqs shared library is on this machine.
  Importing liboqs-python without the library makes it try to git-clone and build liboqs and then
  exit the process, so the library is probed for first (the same places liboqs-python searches)
  and the module is imported only after the probe succeeds.

Selecting a backend that is not available raises BackendUnavailableError; there is no silent
switch to another backend. Private keys are always the 32-byte FIPS 204 seed (xi).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualchain.chain.errors import BackendUnavailableError, SignatureError

SEED_BYTES = 32
MAX_CONTEXT_BYTES = 255


@dataclass(frozen=True)
class ParameterSet:
    """Sizes of one ML-DSA parameter set (FIPS 204, table 2)."""

    name: str
    public_key_bytes: int
    signature_bytes: int


class Algorithm(enum.Enum):
    ML_DSA_44 = ParameterSet("ML-DSA-44", 1312, 2420)
    ML_DSA_65 = ParameterSet("ML-DSA-65", 1952, 3309)
    ML_DSA_87 = ParameterSet("ML-DSA-87", 2592, 4627)

    @property
    def label(self) -> str:
        return self.value.name

    @property
    def public_key_bytes(self) -> int:
        return self.value.public_key_bytes

    @property
    def signature_bytes(self) -> int:
        return self.value.signature_bytes

    @classmethod
    def parse(cls, name: str) -> Algorithm:
        """Accepts ``ML-DSA-65``, ``ml-dsa-65``, ``mldsa65`` or ``65``."""
        digits = "".join(ch for ch in name if ch.isdigit())
        for alg in cls:
            if alg.label[-2:] == digits:
                return alg
        known = ", ".join(a.label for a in cls)
        raise ValueError(f"unknown ML-DSA parameter set {name!r} (known: {known})")


DEFAULT_ALGORITHM = Algorithm.ML_DSA_65


class PrivateKey(ABC):
    """A signing key held by one backend."""

    algorithm: Algorithm
    public_key: bytes

    @abstractmethod
    def sign(self, message: bytes, context: bytes) -> bytes: ...


class PublicKey(ABC):
    """A parsed verification key; parse once, verify many times."""

    algorithm: Algorithm
    raw: bytes

    @abstractmethod
    def verify(self, signature: bytes, message: bytes, context: bytes) -> bool:
        """True iff the signature is valid; never raises for a bad signature."""


class Backend(ABC):
    """One ML-DSA implementation."""

    name: str

    @abstractmethod
    def private_key_from_seed(self, algorithm: Algorithm, seed: bytes) -> PrivateKey: ...

    @abstractmethod
    def public_key(self, algorithm: Algorithm, raw: bytes) -> PublicKey:
        """Parses a raw public key; raises SignatureError if it is malformed."""

    def verify(
        self, algorithm: Algorithm, raw_public_key: bytes, signature: bytes, message: bytes,
        context: bytes,
    ) -> bool:
        try:
            key = self.public_key(algorithm, raw_public_key)
        except SignatureError:
            return False
        return key.verify(signature, message, context)


def _check_seed(seed: bytes) -> None:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"ML-DSA seeds are {SEED_BYTES} bytes, got {len(seed)}")


def _check_context(context: bytes) -> None:
    if len(context) > MAX_CONTEXT_BYTES:
        raise ValueError(f"ML-DSA contexts are at most {MAX_CONTEXT_BYTES} bytes")


# --- pyca/cryptography -----------------------------------------------------------------------


class _CryptographyPrivateKey(PrivateKey):
    __slots__ = ("_key", "algorithm", "public_key")

    def __init__(self, algorithm: Algorithm, key: Any) -> None:
        self.algorithm = algorithm
        self._key = key
        self.public_key = key.public_key().public_bytes_raw()

    def sign(self, message: bytes, context: bytes) -> bytes:
        _check_context(context)
        return self._key.sign(message, context)


class _CryptographyPublicKey(PublicKey):
    __slots__ = ("_invalid", "_key", "algorithm", "raw")

    def __init__(self, algorithm: Algorithm, raw: bytes, key: Any, invalid: type[Exception]):
        self.algorithm = algorithm
        self.raw = raw
        self._key = key
        self._invalid = invalid

    def verify(self, signature: bytes, message: bytes, context: bytes) -> bool:
        if len(signature) != self.algorithm.signature_bytes or len(context) > MAX_CONTEXT_BYTES:
            return False
        try:
            self._key.verify(signature, message, context)
        except self._invalid:
            return False
        return True


class CryptographyBackend(Backend):
    name = "cryptography"

    def __init__(self) -> None:
        try:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives.asymmetric import mldsa
        except ImportError as exc:  # pragma: no cover - cryptography is a hard dependency
            raise BackendUnavailableError(
                "backend 'cryptography' needs cryptography >= 47 with ML-DSA support "
                f"({exc}); pip install 'cryptography>=47'"
            ) from exc
        self._invalid = InvalidSignature
        self._private = {
            Algorithm.ML_DSA_44: mldsa.MLDSA44PrivateKey,
            Algorithm.ML_DSA_65: mldsa.MLDSA65PrivateKey,
            Algorithm.ML_DSA_87: mldsa.MLDSA87PrivateKey,
        }
        self._public = {
            Algorithm.ML_DSA_44: mldsa.MLDSA44PublicKey,
            Algorithm.ML_DSA_65: mldsa.MLDSA65PublicKey,
            Algorithm.ML_DSA_87: mldsa.MLDSA87PublicKey,
        }

    def private_key_from_seed(self, algorithm: Algorithm, seed: bytes) -> PrivateKey:
        _check_seed(seed)
        return _CryptographyPrivateKey(algorithm, self._private[algorithm].from_seed_bytes(seed))

    def public_key(self, algorithm: Algorithm, raw: bytes) -> PublicKey:
        if len(raw) != algorithm.public_key_bytes:
            raise SignatureError(
                f"{algorithm.label} public keys are {algorithm.public_key_bytes} bytes, "
                f"got {len(raw)}"
            )
        try:
            key = self._public[algorithm].from_public_bytes(bytes(raw))
        except ValueError as exc:
            raise SignatureError(f"malformed {algorithm.label} public key: {exc}") from exc
        return _CryptographyPublicKey(algorithm, bytes(raw), key, self._invalid)


# --- liboqs -----------------------------------------------------------------------------------


def find_liboqs() -> Path | None:
    """Where the liboqs shared library is, searched as liboqs-python searches; None if absent."""
    for name in ("oqs", "liboqs"):
        found = ctypes.util.find_library(name)
        if found:
            return Path(found)
    root = Path(os.environ.get("OQS_INSTALL_PATH", Path.home() / "_oqs"))
    for sub in ("lib", "lib64"):
        candidate = root / sub / "liboqs.so"
        if candidate.exists():
            return candidate
    return None


class _OqsPrivateKey(PrivateKey):
    def __init__(self, algorithm: Algorithm, oqs: Any, secret: bytes, public: bytes) -> None:
        self.algorithm = algorithm
        self.public_key = public
        self._signer = oqs.Signature(algorithm.label, secret)
        self._lock = threading.Lock()  # one OQS_SIG handle; calls on it are serialised

    def sign(self, message: bytes, context: bytes) -> bytes:
        _check_context(context)
        with self._lock:
            return self._signer.sign_with_ctx_str(message, context)


class _OqsPublicKey(PublicKey):
    def __init__(self, algorithm: Algorithm, raw: bytes, backend: OqsBackend) -> None:
        self.algorithm = algorithm
        self.raw = raw
        self._backend = backend

    def verify(self, signature: bytes, message: bytes, context: bytes) -> bool:
        # liboqs-python pads or truncates buffers to the expected size, so lengths are checked here.
        if len(signature) != self.algorithm.signature_bytes or len(context) > MAX_CONTEXT_BYTES:
            return False
        verifier = self._backend.thread_verifier(self.algorithm)
        return bool(verifier.verify_with_ctx_str(message, signature, context, self.raw))


class OqsBackend(Backend):
    name = "liboqs"

    def __init__(self) -> None:
        library = find_liboqs()
        if library is None:
            raise BackendUnavailableError(
                "backend 'liboqs' needs the liboqs shared library, which is not on this machine "
                "(searched the linker path, $OQS_INSTALL_PATH/lib and ~/_oqs/lib); install liboqs "
                "or use the default backend 'cryptography'"
            )
        try:
            import oqs  # safe now: liboqs-python will find the library probed above
        except ImportError as exc:
            raise BackendUnavailableError(
                f"backend 'liboqs' found {library} but not liboqs-python ({exc}); "
                "pip install 'dualchain[oqs]'"
            ) from exc
        self._oqs = oqs
        self._native = oqs.native()
        self._local = threading.local()

    def thread_verifier(self, algorithm: Algorithm) -> Any:
        verifiers = self._local.__dict__.setdefault("verifiers", {})
        if algorithm not in verifiers:
            verifiers[algorithm] = self._oqs.Signature(algorithm.label)
        return verifiers[algorithm]

    def private_key_from_seed(self, algorithm: Algorithm, seed: bytes) -> PrivateKey:
        _check_seed(seed)
        symbol = f"OQS_SIG_ml_dsa_{algorithm.label[-2:]}_keypair_derand"
        derand = getattr(self._native, symbol, None)
        if derand is None:
            raise BackendUnavailableError(
                f"this liboqs build has no {symbol}, so it cannot derive keys from a seed; "
                "use backend 'cryptography' for signing"
            )
        probe = self._oqs.Signature(algorithm.label)
        public = ctypes.create_string_buffer(probe.length_public_key)
        secret = ctypes.create_string_buffer(probe.length_secret_key)
        if derand(public, secret, ctypes.create_string_buffer(seed, SEED_BYTES)) != 0:
            raise BackendUnavailableError(f"liboqs {symbol} failed")
        return _OqsPrivateKey(algorithm, self._oqs, secret.raw, public.raw)

    def public_key(self, algorithm: Algorithm, raw: bytes) -> PublicKey:
        if len(raw) != algorithm.public_key_bytes:
            raise SignatureError(
                f"{algorithm.label} public keys are {algorithm.public_key_bytes} bytes, "
                f"got {len(raw)}"
            )
        return _OqsPublicKey(algorithm, bytes(raw), self)


# --- selection --------------------------------------------------------------------------------

BACKENDS: dict[str, type[Backend]] = {
    CryptographyBackend.name: CryptographyBackend,
    OqsBackend.name: OqsBackend,
}
DEFAULT_BACKEND = CryptographyBackend.name

_instances: dict[str, Backend] = {}
_instances_lock = threading.Lock()


def get_backend(name: str = DEFAULT_BACKEND) -> Backend:
    """The named backend; BackendUnavailableError if it is unknown or cannot run here."""
    if name not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise BackendUnavailableError(f"unknown ML-DSA backend {name!r} (known: {known})")
    with _instances_lock:
        if name not in _instances:
            _instances[name] = BACKENDS[name]()
        return _instances[name]


def resolve_backend(name: str) -> str:
    """``auto``: liboqs where its library and liboqs-python work here (an image built with
    WITH_LIBOQS=1), else cryptography; a named backend is taken as it is."""
    if name != "auto":
        return name
    return "liboqs" if available_backends().get("liboqs") is None else DEFAULT_BACKEND


def available_backends() -> dict[str, str | None]:
    """Every known backend mapped to None if usable here, else the reason it is not."""
    result: dict[str, str | None] = {}
    for name in BACKENDS:
        try:
            get_backend(name)
        except BackendUnavailableError as exc:
            result[name] = exc.reason
        else:
            result[name] = None
    return result
