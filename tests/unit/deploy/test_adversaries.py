"""Attacks and defenses of a testbed: up's flags and TOML keys, the genesis and process configs
they become, and the compose generator carrying them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dualchain.apps.genesis import Genesis
from dualchain.cli import build_parser, main
from dualchain.cli.compose import config_from_args
from dualchain.deploy import adversaries, compose
from dualchain.deploy.up import Testbed, UpConfig, UpError


def test_flag_specs_become_tables() -> None:
    assert adversaries.spec_table("sign_flip") == {"kind": "sign_flip"}
    assert adversaries.spec_table("scale:factor=5,from_version=2") == {
        "kind": "scale", "factor": 5, "from_version": 2}
    assert adversaries.spec_table("poison:versions=[20,60],rho=0.5") == {
        "kind": "poison", "versions": [20, 60], "rho": 0.5}
    assert adversaries.spec_table("lazy:pick=latest") == {"kind": "lazy", "pick": "latest"}
    with pytest.raises(ValueError, match="key=value"):
        adversaries.spec_table("scale:5")


def test_the_first_fraction_of_clients_attacks_and_named_clients_override() -> None:
    config = UpConfig(clients=10, attack={"kind": "sign_flip"}, attackers=0.3,
                      client_attacks={"9": {"kind": "lazy"}})
    kinds = [(adversaries.client_attack(config, j) or {}).get("kind") for j in range(10)]
    assert kinds == ["sign_flip"] * 3 + [None] * 6 + ["lazy"]


def test_defenses_become_the_genesis_section() -> None:
    assert adversaries.defense_params(UpConfig()) is None
    pn = adversaries.defense_params(UpConfig(defense="pn"))
    assert pn is not None and pn.rule == "none" and pn.watermark_length == 4096
    both = adversaries.defense_params(UpConfig(defense="krum", watermark=True,
                                               defense_params={"krum_f": 2}))
    assert both is not None and (both.rule, both.krum_f, both.watermark_length) == (
        "krum", 2, 4096)
    assert adversaries.watermark_table(both) == {"length": 4096, "snr_db": 6.0,
                                                 "threshold": 4.5}


@pytest.mark.parametrize("changes, match", [
    ({"defense": "magic"}, "defense 'magic'"),
    ({"attackers": 0.3}, "attackers needs attack"),
    ({"attack": {"kind": "nuke"}, "attackers": 0.5}, "unknown client attack kind"),
    ({"client_attacks": {"99": {"kind": "lazy"}}}, "not a client index"),
    ({"node_attacks": {"0": {"kind": "poison", "rho": -1}}}, "rho"),
    ({"defense_params": {"colour": 1}}, "unknown keys colour"),
    ({"defense": "cluster", "defense_params": {"cluster_eps": -1.0}}, "cluster_eps"),
    ({"defense": "cluster", "defense_params": {"cluster_max_norm_ratio": -1.0}},
     "cluster_max_norm_ratio"),
    ({"defense": "cluster", "defense_params": {"offence_max_staleness": -1}},
     "offence_max_staleness"),
])
def test_bad_settings_are_one_line_errors(changes, match) -> None:
    with pytest.raises(UpError, match=match) as info:
        UpConfig(**changes)
    assert "\n" not in str(info.value)


def test_the_testbed_files_carry_defense_and_attacks(tmp_path: Path) -> None:
    config = UpConfig(nodes=2, clients=3, miners=1, workdir=str(tmp_path / "tb"),
                      defense="cluster", watermark=True,
                      client_attacks={"1": {"kind": "lazy"}, "2": {"kind": "scale"}},
                      node_attacks={"1": {"kind": "lie_discard"}})
    tb = Testbed(config, progress=lambda line: None)
    try:
        tb.write()
    finally:
        tb.stop()
    root = tmp_path / "tb"
    genesis = Genesis.load(root / "ctbc-genesis.json")
    assert genesis.defense is not None and genesis.defense.rule == "cluster"
    clients = [json.loads((root / f"client-{j}.json").read_text()) for j in range(3)]
    assert all(c["watermark"]["length"] == 4096 for c in clients)
    assert "attack" not in clients[0] and clients[1]["attack"] == {"kind": "lazy"}
    assert clients[1]["ctbc"]  # a lazy client reads what it copies from CTBC
    nodes = [json.loads((root / f"node-{i}.json").read_text()) for i in range(2)]
    assert "adversary" not in nodes[0]
    assert nodes[1]["adversary"] == {"strategy": "lie_discard"}


def test_up_flags_and_compose_carry_the_same_settings(tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "up", "--defense", "multi_krum", "--watermark", "--attack", "scale:factor=5",
        "--attackers", "0.25", "--node-attack", "poison:versions=[2]"])
    assert (args.defense, args.watermark, args.attackers) == ("multi_krum", True, 0.25)
    assert adversaries.attack_overrides(args.attack, args.node_attack) == {
        "attack": {"kind": "scale", "factor": 5},
        "node_attacks": {"0": {"kind": "poison", "versions": [2]}}}
    config = UpConfig(nodes=2, clients=4, defense="cluster",
                      attack={"kind": "sign_flip"}, attackers=0.5)
    init = compose.compose_document(config, [], keys="init")["services"]["testbed-init"]
    argv = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", a) for a in init["command"][1:]]
    assert config_from_args(build_parser().parse_args(argv)) == config
    assert main(["up", "--attack", "scale:5", "--workdir", str(tmp_path / "x")]) == 2
