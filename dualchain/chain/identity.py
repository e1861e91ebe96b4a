"""Post-quantum identities: signers, public identities, domain separation and key files.

An identity is an ML-DSA key pair; its id is SHA-256 of the raw public key. Every signature is made
under a context string naming the kind of message (``Domain``), so a signature made for a
transaction never verifies as a vote, a block or a model update.

Key files hold only the 32-byte seed, are created with mode 0600, and are refused on load when
group or others can read them.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dualchain.chain.errors import KeyFileError
from dualchain.chain.mldsa import (
    DEFAULT_ALGORITHM,
    DEFAULT_BACKEND,
    SEED_BYTES,
    Algorithm,
    Backend,
    get_backend,
)

ID_BYTES = 32

KEY_FORMAT = "dualchain-mldsa-seed/1"
PUBLIC_FORMAT = "dualchain-mldsa-public/1"


class Domain(enum.Enum):
    """The ML-DSA context string of each kind of signed message."""

    TRANSACTION = b"dualchain/v1/transaction"
    BLOCK = b"dualchain/v1/block"
    PROPOSAL = b"dualchain/v1/proposal"
    VOTE = b"dualchain/v1/vote"
    MODEL_UPDATE = b"dualchain/v1/model-update"
    STATE_REPORT = b"dualchain/v1/state-report"
    BLOB_UPLOAD = b"dualchain/v1/blob-upload"


def identity_id(public_key: bytes) -> bytes:
    """The id of an identity: SHA-256 of its raw public key."""
    return hashlib.sha256(public_key).digest()


@dataclass(frozen=True)
class PublicIdentity:
    """Someone else's identity: enough to check their signatures."""

    algorithm: Algorithm
    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != self.algorithm.public_key_bytes:
            raise ValueError(
                f"{self.algorithm.label} public keys are {self.algorithm.public_key_bytes} bytes, "
                f"got {len(self.public_key)}"
            )

    @property
    def id(self) -> bytes:
        return identity_id(self.public_key)

    def to_json(self) -> dict[str, str]:
        return {
            "format": PUBLIC_FORMAT,
            "algorithm": self.algorithm.label,
            "public_key": self.public_key.hex(),
            "id": self.id.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> PublicIdentity:
        try:
            if data.get("format") != PUBLIC_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {PUBLIC_FORMAT!r}")
            ident = cls(Algorithm.parse(data["algorithm"]), bytes.fromhex(data["public_key"]))
            if "id" in data and bytes.fromhex(data["id"]) != ident.id:
                raise ValueError("id does not match SHA-256 of the public key")
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise KeyFileError(f"malformed public identity: {exc}") from exc
        return ident


class Signer:
    """Our own identity: signs messages of a given domain."""

    def __init__(
        self,
        seed: bytes,
        algorithm: Algorithm = DEFAULT_ALGORITHM,
        backend: Backend | str = DEFAULT_BACKEND,
    ) -> None:
        if len(seed) != SEED_BYTES:
            raise KeyFileError(f"an ML-DSA seed is {SEED_BYTES} bytes, got {len(seed)}")
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.algorithm = algorithm
        self._seed = bytes(seed)
        self._key = self.backend.private_key_from_seed(algorithm, self._seed)
        self.public = PublicIdentity(algorithm, self._key.public_key)
        self.id = self.public.id

    @classmethod
    def generate(
        cls, algorithm: Algorithm = DEFAULT_ALGORITHM, backend: Backend | str = DEFAULT_BACKEND
    ) -> Signer:
        return cls(os.urandom(SEED_BYTES), algorithm, backend)

    @property
    def public_key(self) -> bytes:
        return self.public.public_key

    def sign(self, domain: Domain, message: bytes) -> bytes:
        return self._key.sign(message, domain.value)

    def save(self, path: Path) -> None:
        """Writes the seed to a new file of mode 0600 (refuses to overwrite)."""
        write_key_file(path, self._seed, self.algorithm)

    def __repr__(self) -> str:
        return f"Signer({self.algorithm.label}, id={self.id.hex()[:16]}...)"


def write_key_file(path: Path, seed: bytes, algorithm: Algorithm) -> None:
    body = json.dumps({"format": KEY_FORMAT, "algorithm": algorithm.label, "seed": seed.hex()})
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"key file {path} already exists; not overwriting it") from exc
    with os.fdopen(fd, "w") as handle:
        handle.write(body + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def load_key_file(path: Path, backend: Backend | str = DEFAULT_BACKEND) -> Signer:
    """Loads a seed file; refuses one that group or others may access, or another user owns.

    The mode is checked on the opened descriptor (fstat), so the file checked is the file read.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist") from exc
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be opened: {exc}") from exc
    with os.fdopen(fd, "r") as handle:
        info = os.fstat(handle.fileno())
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"key file {path} has mode {mode:04o}: group or others can access it; "
                f"run 'chmod 600 {path}'"
            )
        if info.st_uid != os.geteuid():
            raise KeyFileError(f"key file {path} belongs to uid {info.st_uid}, not to this user")
        try:
            data = json.loads(handle.read())
            if data.get("format") != KEY_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {KEY_FORMAT!r}")
            algorithm = Algorithm.parse(data["algorithm"])
            seed = bytes.fromhex(data["seed"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyFileError(f"key file {path} is malformed: {exc}") from exc
    return Signer(seed, algorithm, backend)


def write_public_file(path: Path, public: PublicIdentity) -> None:
    Path(path).write_text(json.dumps(public.to_json(), indent=2) + "\n")


def load_public_file(path: Path) -> PublicIdentity:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"public identity file {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise KeyFileError(f"public identity file {path} is not a JSON object")
    return PublicIdentity.from_json(data)
