"""`up --committee-size N --epoch-length B` become the CTBC genesis's consensus section: fewer
seats than nodes, so each epoch elects its committee by reputation; bad values are one-line
errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualchain.apps.genesis import Genesis
from dualchain.cli import build_parser
from dualchain.deploy.up import Testbed, UpConfig, UpError


def test_flags_reach_the_ctbc_genesis(tmp_path: Path) -> None:
    args = build_parser().parse_args(["up", "--committee-size", "3", "--epoch-length", "10"])
    assert (args.committee_size, args.epoch_length) == (3, 10)
    config = UpConfig(nodes=4, clients=1, committee_size=3, epoch_length=10,
                      workdir=str(tmp_path / "tb"))
    Testbed(config, progress=lambda line: None).write()
    consensus = Genesis.load(tmp_path / "tb" / "ctbc-genesis.json").consensus
    assert (consensus.committee_size, consensus.epoch_length) == (3, 10)
    Testbed(UpConfig(nodes=4, clients=1, workdir=str(tmp_path / "all")),
            progress=lambda line: None).write()
    consensus = Genesis.load(tmp_path / "all" / "ctbc-genesis.json").consensus
    assert (consensus.committee_size, consensus.epoch_length) == (4, 100)


@pytest.mark.parametrize(("bad", "message"), [
    ({"committee_size": 5}, "committee_size 5: 0 (every node) to nodes (4)"),
    ({"committee_size": -1}, "committee_size -1: 0 (every node) to nodes (4)"),
    ({"epoch_length": 0}, "epoch_length 0: at least 1 block"),
])
def test_bad_values_are_one_line(bad: dict, message: str) -> None:
    with pytest.raises(UpError) as err:
        UpConfig(nodes=4, **bad)
    assert str(err.value) == message
