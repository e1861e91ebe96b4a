"""The compromised aggregator of seed 003 §V-E: w <- w - rho q at chosen versions."""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.adversary.client import AttackConfigError
from dualchain.adversary.node import (
    AggregatorPoison,
    NodeAttack,
    make_node_attack,
    make_node_strategy,
)


def test_poisons_only_the_chosen_versions_with_reproducible_noise() -> None:
    attack = make_node_attack({"kind": "poison", "rho": 0.5, "versions": [60, 20], "seed": 3})
    assert isinstance(attack, AggregatorPoison) and attack.versions == (20, 60)
    w = np.linspace(-1, 1, 10_000, dtype=np.float32)
    assert attack.apply(w, 19) is w and not attack.poisons(21)
    p20 = attack.apply(w, 20)
    assert p20.dtype == np.float32 and attack.poisons(20)
    q = (w.astype(np.float64) - p20) / 0.5
    assert abs(float(np.mean(q))) < 0.05 and abs(float(np.std(q)) - 1.0) < 0.05
    assert np.array_equal(p20, attack.apply(w, 20))  # pure: same model, version, seed
    assert not np.array_equal(p20 - w, attack.apply(w, 60) - w)  # fresh q per version
    other_seed = AggregatorPoison(rho=0.5, versions=(20,), seed=4)
    assert not np.array_equal(p20, other_seed.apply(w, 20))


def test_noise_is_pinned_to_pcg64() -> None:
    attack = AggregatorPoison(rho=1.0, versions=(2,), seed=9)
    expected = np.random.Generator(np.random.PCG64(np.random.SeedSequence([9, 2])))
    assert np.array_equal(attack.noise(5, 2), expected.standard_normal(5))


def test_honest_node_and_errors() -> None:
    honest = make_node_attack({"kind": "none"})
    w = np.ones(3, np.float32)
    assert isinstance(honest, NodeAttack) and honest.apply(w, 20) is w
    for config, match in [
        ({"kind": "poison", "rho": 0}, "positive"),
        ({"kind": "poison", "rho": float("nan")}, "finite"),
        ({"kind": "poison", "versions": [-1]}, "non-negative integers"),
        ({"kind": "poison", "versions": "20"}, "list of versions"),
        ({"kind": "poison", "seed": -2}, "seed"),
        ({"kind": "poison", "when": 3}, "unknown parameter 'when'"),
        ({"kind": "equivocate"},
         "unknown node attack kind 'equivocate'; known: lie_discard, none, poison, tamper_model"),
    ]:
        with pytest.raises(AttackConfigError, match=match):
            make_node_attack(config)
    with pytest.raises(ValueError, match="1-D"):
        AggregatorPoison(versions=(0,)).apply(np.ones((2, 2), np.float32), 0)


def test_tamper_model_shifts_every_version_and_keeps_the_dtype() -> None:
    tamper = make_node_strategy({"strategy": "tamper_model", "offset": 0.25})
    w = np.zeros(4, np.float32)
    for version in (1, 2, 100):
        out = tamper.apply(w, version)
        assert out.dtype == np.float32 and np.array_equal(out, w + np.float32(0.25))
    assert tamper.poisons(7)
    assert make_node_strategy(None).apply(w, 1) is w  # no adversary table: honest


def test_the_discard_liar_claims_another_set_from_its_version_on() -> None:
    a, b, c = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    drop = make_node_attack({"kind": "lie_discard", "from_version": 2})
    assert drop.claim(1, [a, b], [(c, "copy")]) == ([a, b], [(c, "copy")])
    assert drop.claim(2, [a, b], [(c, "copy")]) == ([b], [(a, "low_contribution"), (c, "copy")])
    assert drop.claim(2, [a], []) == ([a], [])  # nothing to censor without emptying the round
    keep = make_node_attack({"kind": "lie_discard", "mode": "keep_flagged"})
    assert keep.claim(5, [a], [(c, "copy")]) == ([a, c], [])
    with pytest.raises(AttackConfigError, match="mode"):
        make_node_attack({"kind": "lie_discard", "mode": "sometimes"})
