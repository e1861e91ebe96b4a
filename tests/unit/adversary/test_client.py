"""Client attack strategies: each transform, the training-time hooks, and config errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from dualchain.adversary.client import (
    CLIENT_ATTACKS,
    AttackConfigError,
    AttackContext,
    Backdoor,
    ClientAttack,
    attack_rng,
    attack_success_rate,
    flip_labels,
    make_client_attack,
    stamp_trigger,
)
from dualchain.learning.models import build_model
from dualchain.learning.training import train_local
from tests.digits_deltas import digits

SIZE = 1000


def _delta(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.01, SIZE).astype(np.float32)


def _ctx(version: int = 5, seen: tuple[tuple[bytes, np.ndarray], ...] = ()) -> AttackContext:
    return AttackContext(version=version, size=SIZE, rng=attack_rng(7, version, b"c"), seen=seen)


def test_registry_names_every_kind() -> None:
    assert set(CLIENT_ATTACKS) == {
        "none",
        "sign_flip",
        "scale",
        "gaussian",
        "label_flip",
        "backdoor",
        "lazy",
        "free_rider",
        "dropout",
    }
    for kind in CLIENT_ATTACKS:
        # Every kind can be made from its name alone, with defaults.
        cfg: dict[str, object] = {"kind": kind}
        if kind == "backdoor":
            cfg["target"] = 3
        assert make_client_attack(cfg).kind == kind


def test_honest_before_from_version_and_model_attacks_after() -> None:
    d = _delta()
    flip = make_client_attack({"kind": "sign_flip", "from_version": 5})
    assert flip.transform(d, _ctx(4)) is d and not flip.active(4)
    assert np.array_equal(flip.transform(d, _ctx(5)), -d)
    doubled = make_client_attack({"kind": "sign_flip", "scale": 2})
    assert np.array_equal(doubled.transform(d, _ctx()), -2 * d)
    scale = make_client_attack({"kind": "scale", "factor": 5})
    out = scale.transform(d, _ctx())
    assert out is not None and out.dtype == np.float32 and np.allclose(out, 5 * d)
    assert make_client_attack({"kind": "none"}).transform(d, _ctx()) is d


def test_gaussian_adds_or_replaces_and_is_reproducible() -> None:
    d = _delta()
    add = make_client_attack({"kind": "gaussian", "std": 0.5})
    a = add.transform(d, _ctx())
    b = add.transform(d, _ctx())
    assert a is not None and b is not None and np.array_equal(a, b)  # same seed, same noise
    assert abs(float(np.std(a - d)) - 0.5) < 0.05
    rep = make_client_attack({"kind": "gaussian", "std": 0.5, "replace": True})
    r = rep.transform(d, _ctx())
    assert r is not None and np.allclose(r, a - d, atol=1e-6)
    other_version = add.transform(d, _ctx(6))
    assert other_version is not None and not np.array_equal(other_version, a)


def test_label_flip_default_and_mapping_from_toml_strings() -> None:
    y = np.arange(10, dtype=np.int64)
    assert flip_labels(y, 10).tolist() == list(range(9, -1, -1))
    attack = make_client_attack({"kind": "label_flip", "mapping": {"1": 7, "3": 8}})
    x = np.zeros((10, 1, 8, 8), np.float32)
    rng = attack_rng(0, 0)
    x2, y2 = attack.poison_data(x, y, 10, 0, rng)
    assert x2 is x and y2.tolist() == [0, 7, 2, 8, 4, 5, 6, 7, 8, 9]
    assert y.tolist() == list(range(10))  # the caller's labels untouched
    late = make_client_attack({"kind": "label_flip", "from_version": 3})
    assert late.poison_data(x, y, 10, 2, rng)[1] is y
    with pytest.raises(AttackConfigError, match="outside"):
        make_client_attack({"kind": "label_flip", "mapping": {"1": 12}}).poison_data(
            x, y, 10, 0, rng
        )


def test_backdoor_stamps_a_fraction_and_reaches_a_high_success_rate() -> None:
    data = digits()
    attack = make_client_attack({"kind": "backdoor", "target": 0, "fraction": 0.2})
    assert isinstance(attack, Backdoor)
    x, y = attack.poison_data(data.train_x, data.train_y, 10, 0, attack_rng(1, 0))
    changed = np.flatnonzero((x != data.train_x).any(axis=(1, 2, 3)))
    assert abs(changed.size - round(0.2 * len(y))) <= 2  # some samples already had the pattern
    value = attack.trigger_value(data.train_x)
    assert np.all(x[changed][:, :, -2:, -2:] == value) and np.all(y[changed] == 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clean = build_model("digits", 10, seed=0)
        train_local(clean, data.train_x, data.train_y, batches=60, seed=0, momentum=0.9)
        poisoned = build_model("digits", 10, seed=0)
        train_local(poisoned, x, y, batches=60, seed=0, momentum=0.9)
    finally:
        torch.set_num_threads(threads)

    def predictor(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
        def predict(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(batch)).argmax(dim=1).numpy()

        return predict

    asr_clean = attack_success_rate(predictor(clean), data.test_x, data.test_y, attack, value)
    asr_bad = attack_success_rate(predictor(poisoned), data.test_x, data.test_y, attack, value)
    assert asr_bad >= 0.8 and asr_clean <= 0.2


def test_stamp_trigger_checks_shapes() -> None:
    x = np.zeros((2, 1, 8, 8), np.float32)
    assert stamp_trigger(x, 3, 1.0)[:, :, 5:, 5:].sum() == 18 and x.sum() == 0
    with pytest.raises(ValueError, match="cannot stamp"):
        stamp_trigger(x, 9, 1.0)
    with pytest.raises(ValueError, match="cannot stamp"):
        stamp_trigger(np.zeros((2, 8, 8), np.float32), 2, 1.0)


def test_lazy_copies_a_seen_update_with_optional_hiding_noise() -> None:
    lazy = make_client_attack({"kind": "lazy", "pick": "latest"})
    assert lazy.skips_training(0) and not make_client_attack({"kind": "scale"}).skips_training(0)
    seen = ((b"a", _delta(1)), (b"b", _delta(2)))
    copy = lazy.transform(None, _ctx(seen=seen))
    assert copy is not None and np.array_equal(copy, seen[1][1])
    assert lazy.transform(None, _ctx()) is None  # nothing seen: nothing to upload
    noisy = make_client_attack({"kind": "lazy", "noise": 1.0}).transform(None, _ctx(seen=seen))
    assert noisy is not None
    source = min(seen, key=lambda s: float(np.linalg.norm(noisy - s[1])))[1]
    # Noise of the update's own power: the copy is about sqrt(2) times as long.
    ratio = float(np.linalg.norm(noisy) / np.linalg.norm(source))
    assert 1.3 < ratio < 1.5
    late = make_client_attack({"kind": "lazy", "from_version": 9})
    assert not late.skips_training(5) and late.transform(_delta(), _ctx(5)) is not None


def test_free_rider_and_dropout() -> None:
    zero = make_client_attack({"kind": "free_rider"}).transform(None, _ctx())
    assert zero is not None and zero.dtype == np.float32 and not zero.any()
    rand = make_client_attack({"kind": "free_rider", "mode": "random", "std": 1e-3})
    r = rand.transform(None, _ctx())
    assert r is not None and 0.8e-3 < float(np.std(r)) < 1.2e-3
    drop = make_client_attack({"kind": "dropout", "from_version": 3})
    assert drop.transform(_delta(), _ctx(3)) is None and drop.skips_training(3)
    assert drop.transform(_delta(), _ctx(2)) is not None and not drop.skips_training(2)


def test_model_attacks_need_a_trained_delta() -> None:
    with pytest.raises(ValueError, match="transforms a trained delta"):
        make_client_attack({"kind": "sign_flip"}).transform(None, _ctx())


@pytest.mark.parametrize(
    "config, match",
    [
        ({"kind": "teleport"}, "unknown client attack kind 'teleport'; known: backdoor, "),
        ({}, "unknown client attack kind None"),
        ({"kind": ["scale"]}, "unknown client attack kind \\['scale'\\]"),
        ({"kind": "scale", "factr": 2}, "scale: unknown parameter 'factr'; known: factor, "),
        ({"kind": "scale", "factor": 0}, "must not be 0"),
        ({"kind": "scale", "factor": float("inf")}, "finite"),
        ({"kind": "scale", "factor": "big"}, "finite number"),
        ({"kind": "sign_flip", "scale": -1}, "positive"),
        ({"kind": "sign_flip", "from_version": -1}, "from_version"),
        ({"kind": "sign_flip", "from_version": 1.5}, "from_version"),
        ({"kind": "gaussian", "std": 0}, "positive"),
        ({"kind": "gaussian", "replace": "yes"}, "true or false"),
        ({"kind": "label_flip", "mapping": {"x": 1}}, "map labels to labels"),
        ({"kind": "label_flip", "mapping": {"-1": 1}}, "map labels to labels"),
        ({"kind": "backdoor", "target": -1}, "class index"),
        ({"kind": "backdoor", "fraction": 1.5}, "at most 1"),
        ({"kind": "backdoor", "size": 0}, "positive integer"),
        ({"kind": "lazy", "noise": -1}, "negative"),
        ({"kind": "lazy", "pick": "best"}, "'random' or 'latest'"),
        ({"kind": "free_rider", "mode": "half"}, "'zero' or 'random'"),
    ],
)
def test_config_errors_are_one_line(config: dict[str, object], match: str) -> None:
    with pytest.raises(AttackConfigError, match=match) as info:
        make_client_attack(config)
    assert "\n" not in str(info.value)


def test_attack_rng_is_per_seed_version_and_client() -> None:
    a = attack_rng(1, 2, b"x").random(4)
    assert np.array_equal(a, attack_rng(1, 2, b"x").random(4))
    for other in (attack_rng(2, 2, b"x"), attack_rng(1, 3, b"x"), attack_rng(1, 2, b"y")):
        assert not np.array_equal(a, other.random(4))
    with pytest.raises(ValueError, match="2\\^63"):
        attack_rng(-1, 0)


def test_config_must_be_a_table() -> None:
    with pytest.raises(AttackConfigError, match="must be a table"):
        make_client_attack(["sign_flip"])  # type: ignore[arg-type]


def test_backdoor_target_beyond_the_classes_is_refused_at_training() -> None:
    attack = make_client_attack({"kind": "backdoor", "target": 12})
    x = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(AttackConfigError, match="not one of 10"):
        attack.poison_data(x, np.zeros(4, np.int64), 10, 0, attack_rng(0, 0))


def test_strategies_are_frozen_values() -> None:
    a = make_client_attack({"kind": "scale", "factor": 3})
    assert a == make_client_attack({"kind": "scale", "factor": 3})
    assert isinstance(a, ClientAttack)
    with pytest.raises(AttributeError):
        a.factor = 4  # type: ignore[attr-defined, misc]
