"""Clients' standing at a server node: offences read from committed discard sets, a client
reputation, and exclusion of repeat offenders (issue 15's consequences; docs/threat-model.md).

The record of an offence is on CTBC already: a committed model commit names each update its
defense discarded with the reason, and every committee replica re-ran the defense before the
commit was applied, so a node that counts offences from committed commits counts only what the
committee reproduced. Reputation is ``1 / (1 + offences)`` (1 for a clean client, halved by the
first offence); a client with ``exclude_after`` offences (0: never) is excluded: the node's gate
refuses its updates (``excluded``) until ``readmit``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class ClientStanding:
    exclude_after: int = 2
    offences: dict[bytes, list[tuple[int, str]]] = field(default_factory=dict)
    _readmitted_at: dict[bytes, int] = field(default_factory=dict)  # offences forgiven

    def record(self, client: bytes, version: int, reason: str) -> bool:
        """Counts one offence (a discarded update of ``version``); True if it excludes now."""
        was = self.excluded(client)
        self.offences.setdefault(client, []).append((version, reason))
        return not was and self.excluded(client)

    def count(self, client: bytes) -> int:
        return len(self.offences.get(client, ())) - self._readmitted_at.get(client, 0)

    def reputation(self, client: bytes) -> float:
        return 1.0 / (1 + self.count(client))

    def excluded(self, client: bytes) -> bool:
        return self.exclude_after > 0 and self.count(client) >= self.exclude_after

    def readmit(self, client: bytes) -> None:
        """An operator's decision: the offences so far no longer count."""
        self._readmitted_at[client] = len(self.offences.get(client, ()))


async def record_commit(standing: ClientStanding, version: int,
                        discarded: Sequence[tuple[bytes, str]],
                        client_of: Callable[[bytes], Awaitable[bytes | None]]) -> None:
    """Counts the offences a committed commit of ``version`` names and prints one ``offence``
    line each; ``client_of`` maps an update digest to its client (None: unknown here)."""
    for digest, reason in discarded:
        client = await client_of(digest)
        if client is None:
            continue
        newly = standing.record(client, version, reason)
        print(json.dumps({
            "event": "offence", "client": client.hex(), "version": version, "reason": reason,
            "offences": standing.count(client), "reputation": standing.reputation(client),
            "excluded": standing.excluded(client), "newly_excluded": newly,
            "time": time.time()}), flush=True)
