"""Incentive settings of a testbed: `--aggregation` and `--reward-base` (and their TOML keys)
become the CTBC genesis's fl section, which every committee member re-executes; bad values are
one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualchain.apps.genesis import Genesis
from dualchain.cli import build_parser
from dualchain.deploy.up import Testbed, UpConfig, UpError


def test_flags_and_toml_reach_the_ctbc_genesis(tmp_path: Path) -> None:
    args = build_parser().parse_args(["up", "--aggregation", "fair", "--reward-base", "5000",
                                      "--reward-weight", "theta"])
    assert (args.aggregation, args.reward_base, args.reward_weight) == ("fair", 5000, "theta")
    toml = tmp_path / "up.toml"
    toml.write_text('aggregation = "fair"\nreward_base = 1000000\nreward_weight = "theta"\n')
    config = UpConfig.from_toml(toml, {"nodes": 1, "clients": 1,
                                       "workdir": str(tmp_path / "tb")})
    Testbed(config, progress=lambda line: None).write()
    fl = Genesis.load(tmp_path / "tb" / "ctbc-genesis.json").fl
    assert (fl.aggregation, fl.reward_base, fl.reward_weight) == ("fair", 1_000_000, "theta")
    plain = tmp_path / "plain"
    Testbed(UpConfig(nodes=1, clients=1, workdir=str(plain)), progress=lambda line: None).write()
    fl = Genesis.load(plain / "ctbc-genesis.json").fl
    # A testbed pays by theta times samples unless told otherwise (docs/incentives.md).
    assert (fl.aggregation, fl.reward_base, fl.reward_weight) == ("staleness", 0, "theta_samples")


@pytest.mark.parametrize(("bad", "message"), [
    ({"aggregation": "mean"}, "aggregation 'mean': staleness or fair"),
    ({"reward_base": -5}, "reward_base: an integer of micro-units, at least 0"),
    ({"reward_weight": "samples"}, "reward_weight 'samples': theta or theta_samples"),
    ({"aggregation": "fair", "aggregator": "examples.wine:median"},
     "aggregation fair and a plug-in aggregator exclude each other"),
])
def test_bad_settings_are_one_line(bad: dict, message: str) -> None:
    with pytest.raises(UpError) as err:
        UpConfig(**bad)
    assert str(err.value) == message
