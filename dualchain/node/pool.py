"""Updates waiting for the next model version, and when to aggregate them.

- ``fedasync``: aggregate as soon as ``min_updates`` wait, or the oldest has waited ``window_s``
  (one update is enough then): fast clients never wait for slow ones.
- ``fedavg``: synchronous rounds: aggregate when every registered client sent an update on the
  current version, or ``fedavg_timeout_s`` after the first one arrived (a client that died must
  not stop training forever; the report counts the round as incomplete).
- policy ``plan`` (ddmlts): when every client of the final task plan sent an update on the
  current version (their tasks were sized to finish together), or ``deadline_s`` after the
  first arrived; updates that miss it join a later version with their staleness weight.
- policy ``quorum`` (semisync, PerFedS2-like): when ``quorum`` of the clients sent one, or at
  the deadline.

Every server node keeps the pool (updates are relayed to all nodes), so whichever node is the
aggregator has them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from dualchain.apps.ctbc.fl import FlRules, ModelCommit, aggregate_pool
from dualchain.node.config import AggregationParams
from dualchain.node.gate import CheckedUpdate


@dataclass
class Pending:
    checked: CheckedUpdate
    arrived: float = field(default_factory=time.monotonic)


class UpdatePool:
    def __init__(self, rules: FlRules, params: AggregationParams) -> None:
        self.rules = rules
        self.params = params
        self._pending: dict[bytes, Pending] = {}  # by update digest

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, checked: CheckedUpdate) -> bool:
        """Pools an update; False (ignored) for one already pooled, or the same delta of the
        same client on the same version under another task: every aggregation rule refuses a
        pool holding such a pair, so one of them would stall every commit."""
        u = checked.update
        if u.digest in self._pending or any(
                (p.checked.update.client, p.checked.update.base_version,
                 p.checked.update.params_hash) == (u.client, u.base_version, u.params_hash)
                for p in self._pending.values()):
            return False
        self._pending[u.digest] = Pending(checked)
        return True

    def prune(self, current_version: int) -> list[bytes]:
        """Drops updates now too stale (or, in fedavg, from an earlier round); returns their
        clients."""
        dropped = []
        for digest, p in list(self._pending.items()):
            if not self._admissible(p.checked.update.base_version, current_version):
                dropped.append(p.checked.update.client)
                del self._pending[digest]
        return dropped

    def pooled(self) -> dict:
        """Digest -> (signed update, delta) of everything waiting."""
        return {d: (p.checked.update, p.checked.delta) for d, p in self._pending.items()}

    def remove(self, digests: list[bytes]) -> None:
        for d in digests:
            self._pending.pop(d, None)

    def ready(self, current_version: int, expected: set[bytes],
              now: float | None = None) -> bool:
        """Whether to aggregate now; ``expected``: the clients a round waits for."""
        if not self._pending:
            return False
        now = time.monotonic() if now is None else now
        oldest = min(p.arrived for p in self._pending.values())
        current = [p for p in self._pending.values()
                   if p.checked.update.base_version == current_version]
        senders = {p.checked.update.client for p in current}
        if self.rules.mode == "fedavg":
            return senders >= expected or now - oldest >= self.params.fedavg_timeout_s
        if self.params.policy in ("plan", "quorum"):
            if not current:  # only late updates of earlier rounds: they wait for this round's
                return False
            waited = now - min(p.arrived for p in current)
            if self.params.policy == "plan":
                return senders >= expected or waited >= self.params.deadline_s
            needed = math.ceil(self.params.quorum * len(expected))
            return len(senders & expected) >= needed or waited >= self.params.deadline_s
        return (len(self._pending) >= self.params.min_updates
                or now - oldest >= self.params.window_s)

    def candidates(self, current_version: int) -> list[tuple]:
        """What the next version would aggregate, in digest order: (signed update, delta) of
        every update the rule admits. A snapshot, so ``build_version`` may run in a worker
        thread while the event loop keeps pooling."""
        chosen = sorted(self._pending.values(), key=lambda p: p.checked.update.digest)
        # Only updates the rule admits: the commit must name exactly what was aggregated, since
        # every committee member re-executes the aggregate over the updates it names.
        return [(p.checked.update, p.checked.delta) for p in chosen
                if self._admissible(p.checked.update.base_version, current_version)]

    def build(self, base, current_version: int):
        """``build_version`` over the current candidates (in the caller's thread)."""
        return build_version(self.rules, base, self.candidates(current_version), current_version)

    def _admissible(self, base_version: int, current_version: int) -> bool:
        if self.rules.mode == "fedavg":
            return base_version == current_version
        return 0 <= current_version - base_version <= self.rules.rule.max_staleness


def build_version(rules: FlRules, base, updates: list[tuple], current_version: int):
    """The next version from ``updates`` (``UpdatePool.candidates``): (new params, commit
    without its hash, digests). ``base`` is the current global model (float32 flat). The defense
    and the aggregation are the ones every committee member re-executes
    (``ctbc.fl.aggregate_pool``); the digests include the updates the defense discarded (the
    commit names them too). Pure: safe in a worker thread."""
    result = aggregate_pool(rules, base, updates, current_version)
    commit = ModelCommit(current_version + 1, current_version, b"", result.updates,
                         result.discarded, result.rewards)
    return result.params, commit, commit.digests
