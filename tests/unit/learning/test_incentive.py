"""The theta of a pool on the real path (``learning.incentive``): excluded keys earn nothing,
and a pool too small for a dense group around its anchor is weighed by similarity alone."""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.learning.aggregation import Update
from dualchain.learning.contribution import ClusterParams
from dualchain.learning.incentive import pool_incentives, pool_theta, reward_verdict

PARAMS = ClusterParams(metric="euclidean", eps=1.0, anchor="median")


def _update(key: int, delta: list[float]) -> Update:
    return Update(bytes([key]) * 32, 0, 1, np.array(delta, dtype=np.float32))


def test_a_pool_of_one_cannot_be_judged_so_it_moves_the_model_but_earns_nothing() -> None:
    only = _update(1, [0.1, 0.2, 0.3])
    assert pool_theta([only], PARAMS) == {only.client_id: 1.0}  # the fair rule still uses it
    theta, rewards = pool_incentives([only], {only.client_id: b"c" * 32}, (), PARAMS, 7)
    assert theta == {only.client_id: 1.0} and rewards == ()


def test_one_client_is_one_point_however_many_updates_it_sends() -> None:
    """A flipper's three updates in a pool of six would hold the median anchor and take the
    base (measured live); judged by its newest update only, it earns nothing."""
    rng = np.random.default_rng(4)
    direction = rng.normal(0, 1, 256)
    honest = [Update(bytes([i]) * 32, 2, 64, (direction + rng.normal(0, 0.6, 256))
                     .astype(np.float32)) for i in (1, 2, 3)]
    flips = [Update(bytes([9 + i]) * 32, i, 64, (-direction + rng.normal(0, 0.05, 256))
                    .astype(np.float32)) for i in range(3)]
    owner = {u.client_id: u.client_id for u in honest} | {u.client_id: b"F" * 32 for u in flips}
    per_update = pool_theta([*honest, *flips], PARAMS)
    assert all(per_update[u.client_id] > 0 for u in flips)  # the capture, per update
    theta, rewards = pool_incentives([*honest, *flips], owner, (), PARAMS, 1000)
    assert all(theta[u.client_id] == 0.0 for u in flips)
    paid = dict(rewards)
    assert b"F" * 32 not in paid and sum(paid.values()) == 1000


def test_excluded_and_watermark_discarded_updates_earn_nothing() -> None:
    rng = np.random.default_rng(1)
    direction = rng.normal(0, 1, 16)
    pool = [_update(i, list(direction + rng.normal(0, 0.1, 16))) for i in range(1, 6)]
    keys = [u.client_id for u in pool]
    theta = pool_theta(pool, PARAMS, excluded={keys[0]})
    assert theta[keys[0]] == 0.0 and all(theta[k] > 0.9 for k in keys[1:])
    clients = {k: bytes([k[0] + 100]) * 32 for k in keys}
    _, rewards = pool_incentives(pool, clients, ((keys[1], "copy"), (keys[2], "not_selected")),
                                 PARAMS, 1000)
    paid = dict(rewards)
    assert set(paid) == {clients[k] for k in (keys[0], *keys[3:])} and sum(paid.values()) == 1000


def test_the_verdict_names_what_is_wrong_in_one_line() -> None:
    a, b = b"a" * 32, b"b" * 32
    assert reward_verdict(10, ((a, 4), (b, 6)), ((b, 6), (a, 4))) is None
    assert reward_verdict(0, None, None) is None
    assert "sum to 11" in reward_verdict(10, ((a, 4), (b, 6)), ((a, 5), (b, 6)))
    assert "recomputed 4" in reward_verdict(10, ((a, 4), (b, 6)), ((a, 3), (b, 7)))
    assert "carries no reward list" in reward_verdict(10, ((a, 10),), None)


def test_a_noise_free_rider_inside_the_cluster_earns_about_nothing() -> None:
    rng = np.random.default_rng(2)
    direction = rng.normal(0, 0.1, 2000)
    honest = [_update(i, list(direction + rng.normal(0, 0.05, 2000))) for i in range(1, 7)]
    riders = [_update(i, list(rng.normal(0, 1e-3, 2000))) for i in (7, 8)]
    theta = pool_theta([*honest, *riders], PARAMS)
    # Both stay in the median anchor's cluster (tiny updates lie near it), but measured against
    # the others' sum, unrelated noise scores about 0 and the honest about 0.9.
    assert all(theta[u.client_id] < 0.05 for u in riders)
    assert all(theta[u.client_id] > 0.8 for u in honest)


def test_theta_samples_pays_by_declared_samples_up_to_four_times_the_median() -> None:
    rng = np.random.default_rng(3)
    direction = rng.normal(0, 1, 64)
    samples = [100, 200, 300, 400, 10**9]  # the last one lies about its data
    pool = [Update(bytes([i + 1]) * 32, 0, n, (direction + rng.normal(0, 0.05, 64))
                   .astype(np.float32)) for i, n in enumerate(samples)]
    clients = {u.client_id: u.client_id for u in pool}
    _, by_theta = pool_incentives(pool, clients, (), PARAMS, 10**6, "theta")
    _, by_samples = pool_incentives(pool, clients, (), PARAMS, 10**6, "theta_samples")
    flat, weighted = dict(by_theta), dict(by_samples)
    assert max(flat.values()) - min(flat.values()) < 0.01 * 10**6  # theta alone: about equal
    paid = [weighted[u.client_id] for u in pool]
    assert paid == sorted(paid) and sum(paid) == 10**6
    assert paid[1] / paid[0] == pytest.approx(2, rel=0.02)
    # The liar's billion samples count as 4 x the median (300): 1200, three times client 3's 400.
    assert paid[4] / paid[3] == pytest.approx(1200 / 400, rel=0.02)
    with pytest.raises(ValueError, match="reward weight"):
        pool_incentives(pool, clients, (), PARAMS, 10**6, "samples")
