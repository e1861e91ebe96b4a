"""Clients' standing at a server node: a cache of the CTBC state's client records
(``apps/ctbc/clients.py``; docs/threat-model.md).

The chain decides: applying a committed model commit records each discarded update as an
offence of its client, a client with ``exclude_after`` offences since its last re-admission is
excluded, and an operator's CLIENT_READMIT lifts that. The node reads those records from its
CTBC daemon (``ChainStatus.clients``) whenever a block carries a commit or a re-admission, and at
start (so a restarted node refuses an excluded client at once); its gate refuses an excluded
client's updates (``excluded``), its rounds do not wait for one, and it prints an ``offence``
line for each new offence and a ``readmitted`` line for each re-admission it sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol


class StandingRow(Protocol):
    """What ``ChainStatus.clients`` carries about one client (``ClientStanding``)."""

    client: bytes
    offences: int
    counted: int
    readmissions: int
    reputation: float
    excluded: bool
    last_version: int
    last_reason: str


@dataclass(frozen=True)
class Standing:
    offences: int = 0  # all of the client's discarded updates
    counted: int = 0  # since its last re-admission
    readmissions: int = 0
    reputation: float = 1.0
    excluded: bool = False
    last_version: int = 0
    last_reason: str = ""


CLEAN = Standing()


class ClientStanding:
    def __init__(self) -> None:
        self._known: dict[bytes, Standing] = {}

    def of(self, client: bytes) -> Standing:
        return self._known.get(client, CLEAN)

    def excluded(self, client: bytes) -> bool:
        return self.of(client).excluded

    def update(self, rows: Iterable[StandingRow]) -> list[dict[str, Any]]:
        """Takes the chain's records; returns the event lines of what changed since."""
        events = []
        now = time.time()
        for row in rows:
            client = bytes(row.client)
            new = Standing(row.offences, row.counted, row.readmissions, row.reputation,
                           row.excluded, row.last_version, row.last_reason)
            old = self.of(client)
            self._known[client] = new
            if new.readmissions > old.readmissions:
                events.append({"event": "readmitted", "client": client.hex(),
                               "offences": new.offences, "time": now})
            if new.offences > old.offences:
                events.append({
                    "event": "offence", "client": client.hex(), "version": new.last_version,
                    "reason": new.last_reason, "offences": new.counted,
                    "reputation": new.reputation, "excluded": new.excluded,
                    "newly_excluded": new.excluded and not old.excluded, "time": now})
        return events
