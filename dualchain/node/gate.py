"""The checks every client update passes at a server node before it goes anywhere.

In order, cheapest first: decodes, the sender is a client registered on CMBC (final blocks only)
with exactly this key, the signature verifies, the base version is one this node knows and not
too stale, the delta has the model's shape, finite values and a bounded norm, and the client has
not sent an update for this task before. A refusal names its reason (``UpdateRefused.code``) and
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dualchain.apps.ctbc.fl import (
    FlRules,
    SignedUpdate,
    check_update_signature,
    decode_delta,
)
from dualchain.chain.errors import DecodeError, DualchainError, ValidationError
from dualchain.chain.verifier import SignatureVerifier


class UpdateRefused(DualchainError):
    """A refused update; ``code`` is the metric label and the reason's prefix."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class CheckedUpdate:
    update: SignedUpdate
    delta: np.ndarray


class UpdateGate:
    def __init__(self, rules: FlRules, verifier: SignatureVerifier,
                 client_key: Callable[[bytes], bytes | None], model_size: int,
                 excluded: Callable[[bytes], bool] = lambda client: False) -> None:
        self.excluded = excluded  # repeat offenders, as the chain says (node/standing.py)
        self.rules = rules
        self.verifier = verifier
        self.client_key = client_key
        self.model_size = model_size
        self._seen: set[tuple[bytes, int, int]] = set()  # (client, base version, task)

    def check_sender(self, update: SignedUpdate) -> None:
        """A registered, not excluded client with exactly this key, and its signature (over the
        update's ``signing_bytes``: the parameter blob enters only by its hash)."""
        key = self.client_key(update.client)
        if key is None:
            raise UpdateRefused("unknown_client",
                                f"client {update.client.hex()[:16]} is not registered on CMBC")
        if key != update.public_key:
            raise UpdateRefused("wrong_key", "the update's key is not the client's registered key")
        if self.excluded(update.client):
            raise UpdateRefused("excluded", f"client {update.client.hex()[:16]} is excluded "
                                "after repeated discarded updates, until an operator "
                                "re-admits it")
        try:
            check_update_signature(update, self.rules, self.verifier)
        except ValidationError as exc:
            raise UpdateRefused(exc.code, exc.reason) from exc

    def check_slot(self, update: SignedUpdate, current_version: int) -> None:
        """Not too stale, a sample count, and no update yet for this client, base and task."""
        staleness = current_version - update.base_version
        if staleness > self.rules.rule.max_staleness:
            raise UpdateRefused("too_stale", f"staleness {staleness} exceeds the maximum "
                                f"{self.rules.rule.max_staleness}")
        if update.samples < 1:
            raise UpdateRefused("malformed", "an update needs at least one sample")
        if (update.client, update.base_version, update.task) in self._seen:
            raise UpdateRefused("replay", f"client {update.client.hex()[:16]} already sent its "
                                f"update for task {update.task} on version {update.base_version}")

    def check(self, raw: bytes, current_version: int) -> CheckedUpdate:
        try:
            update = SignedUpdate.decode(raw)
        except DecodeError as exc:
            raise UpdateRefused("malformed", exc.reason) from exc
        self.check_sender(update)
        if update.base_version > current_version:
            raise UpdateRefused("unknown_version",
                                f"base version {update.base_version} is not committed yet")
        self.check_slot(update, current_version)
        slot = (update.client, update.base_version, update.task)
        try:
            delta = decode_delta(update, self.model_size, self.rules.max_update_norm)
        except ValidationError as exc:
            raise UpdateRefused(exc.code, exc.reason) from exc
        self._seen.add(slot)
        return CheckedUpdate(update, delta)
