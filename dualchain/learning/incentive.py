"""Theta of one aggregation's pool, as the aggregating node and every committee replica compute it.

The reward list of a version (``rewards.reward_list``) and the fair rule (``fair``, seed 002
eq. II.4) both weigh an update by its theta (``contribution``: the cosine similarity to the
pool's anchor, clamped at 0, for updates in the anchor's DBSCAN cluster; 0 for the others).
This module fixes which pool that is on the real path and what happens at its edges:

- **The pool** is what the defense clusters: the updates the rule admits (staleness), less those
  the PN watermark discarded (copies, unmarked). Updates the defense discarded for any reason
  (``excluded``: low contribution, not selected by Krum) earn theta 0. With the ``cluster``
  defense this is the very clustering that discarded them, so the two agree.
- **theta against the others' mean.** theta_i is the cosine similarity of update i to the
  temporary global update of the *other* high-contribution updates (the sum, in canonical
  order, of the updates in the anchor's cluster less update i; Algorithm 3 line 20 over what
  Algorithm 4 keeps), clamped at 0; 0 outside the cluster. Not to the anchor: the chain's
  robust anchor is the coordinate-wise median, an order statistic that picks near-zero
  coordinates from the smallest updates and so correlates with them (measured on digits: free
  riders uploading N(0, 1e-3^2) noise had cosine 0.04-0.12 to it). Not to a mean that includes
  update i: its own share of that mean grows as honest updates shrink with training (the same
  free riders rose from 0.03 to 0.15 in four rounds). Leaving it out, unrelated noise scores
  about 0. A cluster of one is compared with itself (theta 1).
- **Keep, not discard.** The clustering runs with strategy ``keep``: whether a low update is
  aggregated is the defense's decision; here it only earns nothing.
- **One client, one point.** A client's updates in the pool (a fast client, or a free rider
  whose "training" costs nothing, sends several per version in fedasync) are represented by its
  newest one (``screening.newest_per_client``, as the cluster defense does): only that one is
  clustered, weighed and paid; the others earn theta 0. Otherwise one client's three updates
  make a dense group of their own: measured live, a sign-flipping client's three flipped
  updates in a pool of six held the median anchor and took the whole base of the version.
- **An anchor that is noise.** With too few clients for a dense group (fewer than
  ``min_samples = 3`` updates in the anchor's group, ``contribution``) nothing can be judged
  high. Then the version pays nothing (an empty list: the base is not minted): measured live
  before this rule, a free rider that skipped training was alone in the first pool of a fedasync
  testbed and took the whole base. For the fair rule every update is still weighed by its
  clamped similarity to the mean of the pool, so the model never stalls there.

**The reward weight** (genesis ``fl.reward_weight``). ``theta`` pays ``theta_i / sum theta``
(seed 002 §II-D as written): honest updates of one pool have similar theta, so a client with
five times the data earns about what a small one does. ``theta_samples`` (what ``dualchain
up`` writes) pays ``theta_i n_i / sum theta_k n_k``, eq. II.4's aggregation weight, with n_i the
samples the update declares (the count FedAvg weighs it by). A client declares n_i itself; to
bound what a lie buys, n_i counts only up to 4 times the pool's low median
(``aggregation.counted_samples``, as in FedAvg): a client claiming a billion samples earns
what one with 4 times the median does, and nothing at all when its update is low contribution.

Updates are keyed by a unique key (the signed update's digest) in ``Update.client_id``, as in
``screening``, so one client's two updates in a pool are weighed separately; the caller maps
keys back to clients for the reward list. Deterministic as ``contribution`` is.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

import numpy as np

from dualchain.learning.aggregation import Update, counted_samples
from dualchain.learning.contribution import (
    ClusterParams,
    cosine_similarity,
    identify_contributions,
)
from dualchain.learning.rewards import (
    RewardError,
    RewardList,
    check_conservation,
    reward_list,
    verify_reward_list,
)
from dualchain.learning.screening import REASON_COPY, REASON_UNMARKED, newest_per_client

REWARD_WEIGHTS: tuple[str, ...] = ("theta", "theta_samples")


def pool_theta(keyed: Sequence[Update], params: ClusterParams,
               excluded: Collection[bytes] = ()) -> dict[bytes, float]:
    """Theta per key of ``keyed`` (see the module docstring); ``excluded`` keys earn 0."""
    return _theta(keyed, params, excluded)[0]


def _theta(keyed: Sequence[Update], params: ClusterParams, excluded: Collection[bytes]
           ) -> tuple[dict[bytes, float], bool]:
    """Theta per key, and whether the clustering could judge the pool (its anchor not noise)."""
    if not keyed:
        return {}, False
    result = identify_contributions(keyed, replace(params, strategy="keep"))
    by_key = {u.client_id: u.delta.astype(np.float64) for u in keyed}
    members = [k for k, high in zip(result.client_ids, result.high, strict=True)
               if high or result.average_is_noise]
    total = np.zeros(keyed[0].delta.size)
    for key in members:  # canonical order: the same float64 sum on every replica
        total += by_key[key]

    def theta(key: bytes) -> float:
        if key not in chosen or key in excluded:
            return 0.0
        others = total - by_key[key] if len(members) > 1 else total  # a pool of one: itself
        return max(0.0, cosine_similarity(by_key[key], others))

    chosen = set(members)
    return {key: theta(key) for key in result.client_ids}, not result.average_is_noise


def reward_weights(pool: Sequence[Update], theta: Mapping[bytes, float],
                   weight: str) -> list[tuple[bytes, float]]:
    """(key, weight) per update of ``pool`` under the chain's ``reward_weight`` (module doc)."""
    if weight not in REWARD_WEIGHTS:
        raise ValueError(f"reward weight {weight!r} is not one of {', '.join(REWARD_WEIGHTS)}")
    if weight == "theta" or not pool:
        return [(u.client_id, theta[u.client_id]) for u in pool]
    return [(u.client_id, theta[u.client_id] * n)
            for u, n in zip(pool, counted_samples(pool), strict=True)]


def pool_incentives(admitted: Sequence[Update], client_of: Mapping[bytes, bytes],
                    discarded: Sequence[tuple[bytes, str]], params: ClusterParams,
                    reward_base: int, weight: str = "theta"
                    ) -> tuple[dict[bytes, float], RewardList | None]:
    """Theta per key and the version's reward list (None with ``reward_base`` 0).

    ``admitted``: the pool the rule admits, keyed; ``client_of``: key -> client id;
    ``discarded``: the defense's (key, reason) pairs (``screening``); ``weight``: the chain's
    ``reward_weight``.
    """
    marked = {k for k, reason in discarded if reason in (REASON_COPY, REASON_UNMARKED)}
    stands = set(newest_per_client((u.client_id, client_of[u.client_id], u.base_version)
                                   for u in admitted if u.client_id not in marked).values())
    pool = [u for u in admitted if u.client_id in stands]
    computed, judged = _theta(pool, params, {k for k, _ in discarded})
    theta = {u.client_id: computed.get(u.client_id, 0.0) for u in admitted}
    if reward_base <= 0:
        return theta, None
    if not judged:
        return theta, ()  # nothing could be judged, so nothing is paid (module docstring)
    return theta, reward_list([(client_of[key], w)
                               for key, w in reward_weights(pool, theta, weight)], reward_base)


def reward_verdict(reward_base: int, want: RewardList | None,
                   claimed: Sequence[tuple[bytes, int]] | None) -> str | None:
    """A replica's verdict on a commit's reward list against its recomputed ``want``: None when
    it conserves the base and is the same list; else why not, in one line."""
    if claimed is None or want is None:
        if claimed is None and want is None:
            return None
        return ("the commit carries a reward list, the chain pays none" if want is None else
                "the commit carries no reward list, the chain pays one per version")
    try:
        check_conservation(claimed, reward_base)
        verify_reward_list(claimed, want)
    except RewardError as exc:
        return f"the reward list is refused: {exc}"
    return None
