"""A server node configured as an adversary (``"adversary"`` in its config; threat-model.md).

The node builds its honest commit first (``UpdatePool.build``), then the strategy changes it:

- ``poison`` (seed 003 §V-E): the model of the chosen versions becomes ``w - rho q``, and
  ``tamper_model`` shifts every version; the committee re-executes the aggregate, so the commit
  is refused and BAD_MODEL evidence follows;
- ``lie_discard``: the node claims another discard set (an honest update left out, or flagged
  ones kept) and aggregates what it claims; the committee re-runs the defense and refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dualchain.adversary.node import DiscardLie, NodeAttack
from dualchain.apps.ctbc.fl import FlRules, ModelCommit, SignedUpdate, aggregate


def attacked_commit(attack: NodeAttack, rules: FlRules, base: np.ndarray, params: np.ndarray,
                    commit: ModelCommit,
                    pool: Mapping[bytes, tuple[SignedUpdate, np.ndarray]]
                    ) -> tuple[np.ndarray, ModelCommit]:
    """The (model, commit) the adversary submits instead of the honest ``(params, commit)``;
    ``pool`` maps the digest of every update the commit names to the update and its delta."""
    if not isinstance(attack, DiscardLie):  # honest, poison, tamper_model: the model only
        return attack.apply(params, commit.version), commit
    honest_kept = [d for d, _ in commit.updates]
    kept, discarded = attack.claim(commit.version, honest_kept, commit.discarded)
    if kept == honest_kept:
        return params, commit
    result = aggregate(rules, base, [pool[d] for d in kept], commit.parent_version)
    weights = dict(result.weights)
    updates = tuple((d, weights.get(pool[d][0].client, 0.0)) for d in kept)
    return result.params, ModelCommit(commit.version, commit.parent_version, b"", updates,
                                      tuple(discarded), commit.rewards)
