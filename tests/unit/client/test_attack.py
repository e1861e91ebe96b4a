"""The client's hooks: its PN watermark on every upload, and the attack it is configured with."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dualchain.adversary.client import make_client_attack
from dualchain.chain.daemon.config import ConfigError
from dualchain.client.attack import ClientAdversary, parse_attack, parse_watermark
from dualchain.client.worker import ClientData
from dualchain.learning.screening import seed_for_key
from dualchain.learning.watermark import WatermarkParams, carries_own_mark

WM = WatermarkParams(length=512)
ME, OTHER = b"\x01" * 32, b"\x02" * 32


def _adversary(attack: dict, watermark: WatermarkParams | None = None, seen=None):
    return ClientAdversary(make_client_attack(attack), watermark, 7, ME, b"my-public-key", seen)


def _delta(size: int = 2000) -> np.ndarray:
    return np.random.default_rng(1).normal(0, 0.01, size).astype(np.float32)


def test_every_upload_carries_the_mark_of_the_registered_key() -> None:
    adv = _adversary({"kind": "none"}, WM)
    marked = adv.mark(_delta(), 5)
    assert carries_own_mark(marked, seed_for_key(b"my-public-key"), 5, WM)
    assert not carries_own_mark(marked, seed_for_key(b"another-key"), 5, WM)
    assert not carries_own_mark(marked, seed_for_key(b"my-public-key"), 6, WM)
    zero = np.zeros(100, np.float32)
    assert adv.mark(zero, 5) is zero  # no power, no mark
    assert _adversary({"kind": "none"}).mark(marked, 5) is marked  # watermark off


def test_model_attacks_transform_the_trained_delta_from_their_version_on() -> None:
    adv = _adversary({"kind": "sign_flip", "from_version": 3})
    d = _delta()
    assert adv.transform(d, 2) is d
    assert np.array_equal(adv.transform(d, 3), -d)
    scaled = _adversary({"kind": "scale", "factor": 4}).transform(d, 0)
    assert np.allclose(scaled, 4 * d)
    assert not adv.skips(5)


def test_label_flip_poisons_the_training_set_once_active() -> None:
    data = ClientData(x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 9]),
                      num_classes=10)
    adv = _adversary({"kind": "label_flip", "from_version": 2})
    assert adv.data_for(1, data) is data
    assert list(adv.data_for(2, data).y) == [9, 8, 7, 0]
    assert adv.data_for(3, data) is adv.data_for(2, data)  # made once
    backdoor = _adversary({"kind": "backdoor", "target": 3, "fraction": 0.5})
    poisoned = backdoor.data_for(0, data)
    assert int(np.sum(poisoned.y == 3)) == 2


def test_skipping_clients_upload_a_copy_zeros_or_nothing() -> None:
    source = _delta()

    async def seen():
        return [(ME, np.ones(source.size, np.float32)), (OTHER, source)]

    lazy = _adversary({"kind": "lazy"}, seen=seen)
    assert lazy.skips(0)
    copy = asyncio.run(lazy.skipped_delta(4, source.size))
    assert copy is not None and np.array_equal(copy, source)  # never its own earlier update
    free = asyncio.run(_adversary({"kind": "free_rider"}).skipped_delta(4, 10))
    assert free is not None and not free.any()
    assert asyncio.run(_adversary({"kind": "dropout"}).skipped_delta(4, 10)) is None
    assert asyncio.run(_adversary({"kind": "lazy"}).skipped_delta(4, 10)) is None  # saw none


def test_bad_attack_and_watermark_configs_are_one_line_errors() -> None:
    assert parse_attack(None).kind == "none"
    assert parse_watermark(None) is None
    assert parse_watermark({"length": 256}) == WatermarkParams(length=256)
    for bad, match in (({"kind": "nuke"}, "unknown client attack kind"),
                       ({"kind": "scale", "factor": "big"}, "scale factor")):
        with pytest.raises(ConfigError, match=match) as info:
            parse_attack(bad)
        assert "\n" not in str(info.value)
    for bad in ({"length": 8}, {"colour": 1}, [4096]):
        with pytest.raises(ConfigError, match="watermark"):
            parse_watermark(bad)


def test_the_client_config_carries_the_attack_the_watermark_and_the_ctbc_address(
        tmp_path) -> None:
    from dualchain.client.config import ClientConfig
    from tests.unit.client.test_config import base_config

    config = ClientConfig.from_json(base_config(
        attack={"kind": "lazy", "noise": 1.0}, watermark={"length": 1024},
        ctbc="127.0.0.1:7000"), tmp_path)
    assert config.attack.kind == "lazy" and config.watermark == WatermarkParams(length=1024)
    assert config.ctbc == "127.0.0.1:7000"
    plain = ClientConfig.from_json(base_config(), tmp_path)
    assert plain.attack.kind == "none" and plain.watermark is None and plain.ctbc is None
    with pytest.raises(ConfigError, match="'ctbc'"):
        ClientConfig.from_json(base_config(ctbc="nowhere"), tmp_path)
