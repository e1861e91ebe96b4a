"""Consequences for a detected client at a node: its copy of the chain's client records
(``ChainStatus.clients``) says who is excluded, what changed is printed as events, and the gate
refuses an excluded client until the chain says it was re-admitted."""

from __future__ import annotations

import numpy as np

from dualchain.node.gate import UpdateGate
from dualchain.node.standing import ClientStanding
from dualchain.proto.v1 import chain_pb2
from tests.unit.node.test_gate import SIZE, client, refused, rules, update, verifier

__all__ = ["client", "verifier"]  # pytest fixtures from test_gate

A, B = b"\xaa" * 32, b"\xbb" * 32


def row(client: bytes, counted: int, offences: int | None = None, readmissions: int = 0,
        exclude_after: int = 2) -> chain_pb2.ClientStanding:
    return chain_pb2.ClientStanding(
        client=client, offences=counted if offences is None else offences, counted=counted,
        readmissions=readmissions, reputation=1 / (1 + counted),
        excluded=counted >= exclude_after, last_version=3, last_reason="low_contribution")


def test_the_chain_records_say_who_is_excluded_and_changes_become_events() -> None:
    standing = ClientStanding()
    assert not standing.excluded(A) and standing.of(A).reputation == 1.0
    [event] = standing.update([row(A, 1)])
    assert event["event"] == "offence" and event["client"] == A.hex()
    assert event["offences"] == 1 and event["reputation"] == 0.5
    assert not event["excluded"] and not standing.excluded(A)
    [event] = standing.update([row(A, 2)])
    assert event["newly_excluded"] and standing.excluded(A)
    assert standing.update([row(A, 2)]) == []  # nothing new
    assert not standing.excluded(B)
    [event] = standing.update([row(A, 0, offences=2, readmissions=1)])
    assert event["event"] == "readmitted" and not standing.excluded(A)


def test_the_gate_refuses_an_excluded_client_until_the_chain_readmits_it(verifier,
                                                                          client) -> None:
    standing = ClientStanding()
    gate = UpdateGate(rules(), verifier, {client.id: client.public_key}.get, SIZE,
                      standing.excluded)
    delta = np.full(SIZE, 0.01, np.float32)
    gate.check(update(client, delta, task=1).encoded, 3)
    standing.update([row(client.id, 2)])
    assert refused(gate, update(client, delta, task=2).encoded) == "excluded"
    standing.update([row(client.id, 0, offences=2, readmissions=1)])
    gate.check(update(client, delta, task=3).encoded, 3)
