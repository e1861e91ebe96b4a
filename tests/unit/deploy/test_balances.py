"""`dualchain status`'s balances: per identity, named by the testbed's key files, the parts on
CTBC and CMBC and their sum."""

from __future__ import annotations

from pathlib import Path

from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import Algorithm
from dualchain.deploy.balances import identity_names, summed


def test_balances_are_summed_over_the_chains_and_named(tmp_path: Path) -> None:
    client, miner = (Signer.generate(Algorithm.ML_DSA_44) for _ in range(2))
    client.save(tmp_path / "client-0.key")
    miner.save(tmp_path / "miner-0.key")
    (tmp_path / "broken.key").write_text("not a key")
    names = identity_names(tmp_path)
    assert names == {client.id: "client-0", miner.id: "miner-0"}
    stranger = bytes(32)
    per_chain = {"ctbc": (7, {client.id: 5_000_000, stranger: 1}),
                 "cmbc": (12, {client.id: 2, miner.id: 300})}
    assert summed(per_chain, names) == {
        "client-0": {"total": 5_000_002, "ctbc": 5_000_000, "cmbc": 2},
        "miner-0": {"total": 300, "ctbc": 0, "cmbc": 300},
        stranger.hex(): {"total": 1, "ctbc": 1, "cmbc": 0},
    }
    assert summed({"ctbc": (3, {client.id: 4})}, names) == {"client-0": {"total": 4, "ctbc": 4}}


def test_the_report_keeps_the_final_balances(tmp_path: Path) -> None:
    from dualchain.deploy.report import write_report

    final = {"client-0": {"total": 3, "ctbc": 3, "cmbc": 0}}
    report = write_report(tmp_path, {}, {}, {"ctbc": 4, "balances": final}, {}, {}, False)
    assert report["balances"] == final
    assert write_report(tmp_path, {}, {}, {"ctbc": 4}, {}, {}, False)["balances"] is None
