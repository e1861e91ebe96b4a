"""Consequences for a detected client: offences from committed discard sets lower its
reputation, a repeat offender's updates are refused at the gate, an operator re-admits it."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from dualchain.node.gate import UpdateGate
from dualchain.node.standing import ClientStanding, record_commit
from tests.unit.node.test_gate import SIZE, client, refused, rules, update, verifier

__all__ = ["client", "verifier"]  # pytest fixtures from test_gate

A, B = b"\xaa" * 32, b"\xbb" * 32


def test_offences_lower_reputation_and_exclude_from_the_threshold_on() -> None:
    standing = ClientStanding(exclude_after=2)
    assert standing.reputation(A) == 1.0 and not standing.excluded(A)
    assert standing.record(A, 3, "low_contribution") is False
    assert standing.reputation(A) == 0.5 and not standing.excluded(A)
    assert standing.record(A, 4, "copy") is True  # the second offence excludes
    assert standing.excluded(A) and standing.count(A) == 2
    assert standing.record(A, 5, "copy") is False  # already excluded
    assert not standing.excluded(B)
    standing.readmit(A)
    assert not standing.excluded(A) and standing.reputation(A) == 1.0
    assert ClientStanding(exclude_after=0).record(B, 1, "copy") is False  # never excludes


def test_a_committed_discard_set_is_counted_per_client(capsys) -> None:
    standing = ClientStanding(exclude_after=1)
    owners = {b"\x01" * 32: A, b"\x02" * 32: None}

    async def client_of(digest: bytes) -> bytes | None:
        return owners[digest]

    asyncio.run(record_commit(standing, 7, [(b"\x01" * 32, "copy"), (b"\x02" * 32, "copy")],
                              client_of))
    assert standing.excluded(A) and standing.count(A) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["client"], e["reason"], e["newly_excluded"]) for e in events] == [
        (A.hex(), "copy", True)]


def test_the_gate_refuses_an_excluded_client(verifier, client) -> None:
    standing = ClientStanding(exclude_after=1)
    gate = UpdateGate(rules(), verifier, {client.id: client.public_key}.get, SIZE,
                      standing.excluded)
    delta = np.full(SIZE, 0.01, np.float32)
    gate.check(update(client, delta, task=1).encoded, 3)
    standing.record(client.id, 3, "low_contribution")
    assert refused(gate, update(client, delta, task=2).encoded) == "excluded"
    standing.readmit(client.id)
    gate.check(update(client, delta, task=3).encoded, 3)
