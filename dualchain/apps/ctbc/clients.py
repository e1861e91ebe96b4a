"""Clients' standing in the CTBC state: offences, reputation, exclusion, re-admission (issue 15's
consequences on chain; docs/threat-model.md).

- **Offence (the evidence).** A model commit names every update its defense discarded, with the
  reason, and every replica re-executes the defense before it applies the commit (a commit whose
  discard set does not reproduce is refused). Applying a commit records each discarded update as
  an offence of the update's client. A separate EVIDENCE transaction would carry the same facts,
  signed by one node, and every replica would have to re-execute the same defense to believe it:
  the committed discard set already is that evidence, checked by the committee. Only a
  discarded update at most ``offence_max_staleness`` (genesis defense section, 2) versions older
  than the commit's parent counts: in fedasync a slow honest client's stale update points where
  the model was, not where it is, and the clustering discards it (measured live: honest updates
  at staleness 4 and 9 had cosine -0.24 to 0 with the fresh ones). It is still discarded.
- **Reputation** ``1 / (1 + counted)``, ``counted`` the offences since the client's last
  re-admission: 1 for a clean client, halved by the first offence (beside the validators'
  reputation of seed 001 eq. 2, ``reputation.py``).
- **Exclusion**: ``counted >= exclude_after`` (the genesis defense section; 0: never). The
  committee refuses a model commit that names an update (kept or discarded) of a client excluded
  at the commit's parent state (``excluded_client``), so no node can launder its updates; the
  nodes' gates read the same flag from the chain.
- **Re-admission**: a CLIENT_READMIT transaction (``ClientReadmit``) from an operator the genesis
  names (``operators``) sets ``counted`` back to 0; its total of offences stays on record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.errors import ValidationError
from dualchain.chain.identity import ID_BYTES

if TYPE_CHECKING:
    from dualchain.apps.ctbc.fl import ModelCommit

READMIT_TAG = b"DCR1"


@dataclass(frozen=True)
class ClientRecord:
    """What the chain holds about one client with at least one offence."""

    offences: int = 0  # every update of it a committed commit discarded
    counted: int = 0  # of those, the ones since its last re-admission
    readmissions: int = 0
    last_version: int = 0  # the version whose commit recorded its latest offence
    last_reason: str = ""

    def offend(self, version: int, reason: str) -> ClientRecord:
        return replace(self, offences=self.offences + 1, counted=self.counted + 1,
                       last_version=version, last_reason=reason)

    def readmitted(self) -> ClientRecord:
        return replace(self, counted=0, readmissions=self.readmissions + 1)

    @property
    def reputation(self) -> float:
        return 1.0 / (1 + self.counted)

    def excluded(self, exclude_after: int) -> bool:
        return exclude_after > 0 and self.counted >= exclude_after


@dataclass(frozen=True)
class ClientReadmit:
    """The payload of CLIENT_READMIT: lifts ``client``'s exclusion."""

    client: bytes  # identity id

    def encode(self) -> bytes:
        return Writer(READMIT_TAG).fixed(self.client, ID_BYTES).bytes()

    @classmethod
    def decode(cls, data: bytes) -> ClientReadmit:
        r = Reader(data, READMIT_TAG, "client readmit")
        value = cls(r.fixed(ID_BYTES, "client"))
        r.finish()
        return value


@dataclass(frozen=True)
class Readmission:
    """A checked CLIENT_READMIT, ready to apply."""

    client: bytes


def offences_of(commit: ModelCommit, named: Mapping[bytes, tuple[bytes, int]], max_staleness: int
                ) -> tuple[tuple[bytes, str], ...]:
    """(client, reason) of each update ``commit`` discarded that counts as an offence: at most
    ``max_staleness`` versions older than the commit's parent (module docstring).
    ``named``: digest -> (client, base version), as the commit checker returns it."""
    out = []
    for digest, reason in commit.discarded:
        client, base_version = named[digest]
        if commit.parent_version - base_version <= max_staleness:
            out.append((client, reason))
    return tuple(out)


def record_offences(records: dict[bytes, ClientRecord], version: int,
                    offenders: Sequence[tuple[bytes, str]]) -> None:
    """Records one offence per (client, reason) of a commit of ``version`` applied."""
    for client, reason in offenders:
        records[client] = records.get(client, ClientRecord()).offend(version, reason)


def check_not_excluded(records: Mapping[bytes, ClientRecord], clients: Iterable[bytes],
                       exclude_after: int) -> None:
    """Refuses a commit that names an update of an excluded client."""
    for client in clients:
        record = records.get(client)
        if record is not None and record.excluded(exclude_after):
            raise ValidationError(
                f"the commit names an update of client {client.hex()[:16]}, excluded after "
                f"{record.counted} offences", code="excluded_client")


def check_readmit(records: Mapping[bytes, ClientRecord], sender: bytes,
                  operators: Sequence[bytes], readmit: ClientReadmit,
                  exclude_after: int) -> Readmission:
    """An operator's re-admission of an excluded client; anything else is refused."""
    if sender not in operators:
        raise ValidationError(f"{sender.hex()[:16]} is not an operator named in the genesis",
                              code="not_an_operator")
    record = records.get(readmit.client)
    if record is None or not record.excluded(exclude_after):
        raise ValidationError(f"client {readmit.client.hex()[:16]} is not excluded",
                              code="not_excluded")
    return Readmission(readmit.client)


def encode_records(w: Writer, records: Mapping[bytes, ClientRecord]) -> None:
    """The records in the state's canonical encoding (the app hash covers them)."""
    w.count(len(records))
    for client in sorted(records):
        r = records[client]
        w.fixed(client, ID_BYTES).u64(r.offences).u64(r.counted).u64(r.readmissions)
        w.u64(r.last_version).text(r.last_reason)


def standing_rows(records: Mapping[bytes, ClientRecord],
                  exclude_after: int) -> list[dict[str, object]]:
    """The records as ``ChainStatus.clients`` (``ClientStanding``) fields, by client id."""
    return [{"client": client, "offences": r.offences, "counted": r.counted,
             "readmissions": r.readmissions, "reputation": r.reputation,
             "excluded": r.excluded(exclude_after), "last_version": r.last_version,
             "last_reason": r.last_reason}
            for client, r in sorted(records.items())]
