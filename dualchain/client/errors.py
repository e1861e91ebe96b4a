"""The client's fatal error."""

from __future__ import annotations

from dualchain.chain.errors import DualchainError


class ClientError(DualchainError):
    """A condition the client cannot work around (wrong dataset, model layout mismatch)."""

    code = "client"
