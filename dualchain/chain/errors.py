"""Typed errors of the ledger engine.

Each error carries a machine-readable ``code`` (what kind of failure) and a human reason. The gRPC
edge maps the class to a status code (INVALID_ARGUMENT, UNAUTHENTICATED, ...) and sends the reason;
logic code never imports grpc.
"""

from __future__ import annotations


class DualchainError(Exception):
    """Base of every error raised on purpose by dualchain."""

    code = "error"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class DecodeError(DualchainError):
    """Bytes that are not a well-formed encoding of the expected value."""

    code = "malformed"


class ValidationError(DualchainError):
    """A well-formed value that breaks a ledger rule (size, chain id, nonce, timestamp, linkage)."""

    code = "invalid"


class SignatureError(ValidationError):
    """A signature that does not verify, or a key that does not match its claimed identity."""

    code = "bad_signature"


class ReplayError(ValidationError):
    """A transaction whose nonce was already used by its sender."""

    code = "replay"


class OversizedError(ValidationError):
    """A value above a configured size bound."""

    code = "oversized"


class QuotaError(DualchainError):
    """A request that would go over a quota or a size bound of this server (a blob upload)."""

    code = "quota"


class BackendUnavailableError(DualchainError):
    """A signature backend was selected that cannot be used on this machine."""

    code = "backend_unavailable"


class KeyFileError(DualchainError):
    """A key file that is missing, malformed or readable by others."""

    code = "key_file"


class StoreError(DualchainError):
    """The block store or blob store failed or is inconsistent."""

    code = "store"


class BlobCorruptedError(StoreError):
    """A stored blob whose content no longer matches its hash."""

    code = "blob_corrupted"


class NotFoundError(DualchainError):
    """A block, transaction or blob that is not stored here."""

    code = "not_found"


class MempoolError(DualchainError):
    """A transaction the mempool refuses (duplicate, full, nonce gap, expired)."""

    code = "mempool"
