"""Which validators may not commit model versions: those with proven misbehaviour.

Seed 003 §V-E: once the ledger shows that an edge server poisoned the global model, the chain
"temporarily disregards it" while aggregation goes on. Here that is a rule of the CTBC
application: a validator with misbehaviour recorded (EVIDENCE applied: a tampered or poisoned
model commit, an equivocation) in the reputation window (the last ``window_epochs`` epochs,
the window whose history term decides the next committee election, ``reputation.py``) may not
commit model versions. It takes effect at the block after the evidence, not at the next epoch
boundary, and ends when the offence leaves the window. Its committee seat is lost at the
epoch's election when another validator can take it (the history term is then 0).

Derived from the statistics the state already holds, so every replica excludes the same
validators and the state's encoding (and app hash) is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dualchain.apps.ctbc.reputation import ValidatorStats


def excluded(stats: Mapping[int, Mapping[bytes, ValidatorStats]], epoch: int,
             window_epochs: int, validators: Iterable[bytes]) -> frozenset[bytes]:
    """Of ``validators``, those with misbehaviour recorded in epochs
    ``epoch - window_epochs + 1 .. epoch``."""
    first = epoch - window_epochs + 1
    return frozenset(v for v in validators
                     if any(stats.get(e, {}).get(v, ValidatorStats()).misbehaviour
                            for e in range(max(0, first), epoch + 1)))
