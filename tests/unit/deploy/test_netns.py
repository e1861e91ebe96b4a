"""The pure parts of a network-namespace testbed: link specs, which host gets which spec, the
shaper's timing, names and addresses, where each testbed process runs, and reading a namespace's
TCP connections. Nothing here touches the machine's network."""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from dualchain.cli import build_parser
from dualchain.cli.common import netem_table
from dualchain.deploy import netns
from dualchain.deploy.netem import NetemError, NetemSpec, Shaper, parse_netem_options, resolve
from dualchain.deploy.up import Testbed, UpConfig, UpError


def test_a_spec_reads_units_and_becomes_tc_netem_arguments() -> None:
    spec = NetemSpec.parse("delay=50ms,jitter=5ms,rate=10mbit,loss=0.1%")
    assert spec == NetemSpec(delay_ms=50, jitter_ms=5, loss_pct=0.1, rate_bps=10_000_000)
    assert spec.tc_args() == ["netem", "delay", "50ms", "5ms", "loss", "0.1%", "rate",
                              "10000000bit", "limit", "10000"]
    assert NetemSpec.parse(str(spec)) == spec
    assert NetemSpec.parse({"delay": "1s", "rate": "2kbps"}) == NetemSpec(delay_ms=1000,
                                                                        rate_bps=16_000)
    assert NetemSpec.parse("delay=250us,limit=50") == NetemSpec(delay_ms=0.25, limit=50)


@pytest.mark.parametrize("bad", ["delay=50", "delay=fast", "rate=10mb", "loss=120%",
                                 "delay=5ms,jitter=10ms", "latency=5ms", "delay"])
def test_a_bad_spec_is_refused_with_its_reason(bad: str) -> None:
    with pytest.raises(NetemError):
        NetemSpec.parse(bad)


def test_netem_options_are_host_equals_spec() -> None:
    assert parse_netem_options(["node-1=delay=50ms", "clients-*=rate=1mbit"]) == {
        "node-1": "delay=50ms", "clients-*": "rate=1mbit"}
    with pytest.raises(NetemError):
        parse_netem_options(["delay=50ms"])  # no host: "delay" would be taken as one
    args = build_parser().parse_args(["up", "--hosts", "netns", "--netem", "node-1=delay=50ms"])
    assert args.hosts == "netns" and netem_table(args) == {"node-1": "delay=50ms"}
    args = build_parser().parse_args(["bench", "fl", "--netem", "*=delay=50ms"])
    assert args.hosts == "local" and netem_table(args) == {"*": "delay=50ms"}


def test_an_exact_host_wins_over_a_glob_and_a_pattern_must_name_a_host() -> None:
    hosts = ["node-0", "node-1", "clients-0"]
    specs = resolve(hosts, {"*": "delay=10ms", "node-1": "delay=50ms"})
    assert specs["node-1"].delay_ms == 50
    assert specs["node-0"].delay_ms == specs["clients-0"].delay_ms == 10
    assert set(resolve(hosts, {"clients-*": "loss=1%"})) == {"clients-0"}
    with pytest.raises(NetemError, match="node-7"):
        resolve(hosts, {"node-7": "delay=1ms"})


def test_the_shaper_delays_serialises_at_the_rate_and_keeps_order() -> None:
    delay = Shaper(NetemSpec(delay_ms=50))
    assert delay.admit(1500, now=10.0) == pytest.approx(10.05)
    rate = Shaper(NetemSpec(rate_bps=1_000_000))  # 1250 bytes take 10 ms
    assert rate.admit(1250, now=0.0) == pytest.approx(0.01)
    assert rate.admit(1250, now=0.0) == pytest.approx(0.02)  # waits for the first
    assert rate.admit(1250, now=1.0) == pytest.approx(1.01)  # an idle link starts afresh
    jitter = iter([-5.0, 5.0, -5.0])
    shaky = Shaper(NetemSpec(delay_ms=10, jitter_ms=5), uniform=lambda a, b: next(jitter))
    first, second, third = (shaky.admit(100, now=t) for t in (0.0, 0.0, 0.001))
    assert first == pytest.approx(0.005) and second == pytest.approx(0.015)
    assert third == second  # would overtake: leaves with the one before it


def test_the_shaper_drops_at_the_loss_rate_and_beyond_the_limit() -> None:
    draws = iter([0.05, 50.0])  # percent draws: the first under 0.1 %, the second not
    lossy = Shaper(NetemSpec(loss_pct=0.1), uniform=lambda a, b: next(draws))
    assert lossy.admit(100, now=0.0) is None
    assert lossy.admit(100, now=0.0) == 0.0
    assert Shaper(NetemSpec(limit=2)).admit(100, now=0.0, backlog=2) is None


def test_a_plan_names_one_namespace_and_address_per_host() -> None:
    plan = netns.plan_network("dcab12cd", ["node-0", "node-1", "clients-0"],
                              {"node-1": "delay=50ms"})
    assert plan.subnet.subnet_of(netns.SUBNETS) and plan.subnet.prefixlen == 24
    assert [h.namespace for h in plan.hosts] == ["dcab12cd-node-0", "dcab12cd-node-1",
                                                 "dcab12cd-clients-0"]
    assert [h.address for h in plan.hosts] == [str(plan.subnet[i]) for i in (2, 3, 4)]
    assert plan.gateway == str(plan.subnet[1]) and plan.switch == "dcab12cd-switch"
    assert plan.host("node-1").netem == NetemSpec(delay_ms=50)
    assert plan.host("node-0").netem is None
    network = netns.Network(plan)
    assert network.exec_prefix("clients-0") == ["ip", "netns", "exec", "dcab12cd-clients-0"]
    with pytest.raises(netns.NetnsError):
        plan.host("node-9")


@pytest.mark.parametrize("prefix, hosts", [("DC", ["a"]), ("dc-1", ["a"]),
                                           ("dc1234567890", ["a"]), ("dc1", ["a", "a"]),
                                           ("dc1", ["switch"]), ("dc1", ["Node 0"])])
def test_bad_names_are_refused(prefix: str, hosts: list[str]) -> None:
    with pytest.raises(netns.NetnsError):
        netns.plan_network(prefix, hosts)


def test_the_subnet_avoids_networks_in_use_and_the_prefix_is_stable() -> None:
    prefix = netns.run_prefix("/runs/a")
    assert prefix == netns.run_prefix("/runs/a") != netns.run_prefix("/runs/b")
    first = netns.choose_subnet(prefix, [])
    assert netns.choose_subnet(prefix, [first]) != first
    assert not netns.choose_subnet(prefix, [IPv4Network("10.77.0.0/17"),
                                            first]).overlaps(IPv4Network("10.77.0.0/17"))
    with pytest.raises(netns.NetnsError):
        netns.choose_subnet(prefix, [IPv4Network("10.0.0.0/8")])


def test_proc_net_tcp_lists_established_connections() -> None:
    v4 = ("  sl  local_address rem_address   st tx_queue rx_queue\n"
          "   0: 024D0A0A:1F90 034D0A0A:D431 01 00000000:00000000\n"
          "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000\n")
    assert netns.parse_proc_net_tcp(v4) == [("10.10.77.2", 8080, "10.10.77.3", 54321)]
    v6 = ("  sl  local_address                         remote_address                        st\n"
          "   0: 0000000000000000FFFF0000024D0A0A:1F90 0000000000000000FFFF0000034D0A0A:D431 01\n")
    assert netns.parse_proc_net_tcp(v6) == [("10.10.77.2", 8080, "10.10.77.3", 54321)]


def test_up_refuses_unknown_hosts_and_netem_without_namespaces() -> None:
    with pytest.raises(UpError):
        UpConfig(hosts="docker")
    with pytest.raises(UpError):
        UpConfig(netem={"node-0": "delay=50ms"})
    assert UpConfig(hosts="netns", netem={"node-0": "delay=50ms"}).hosts == "netns"


def test_a_netns_testbed_places_each_process_on_its_host(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Plan only: no namespace is created until a process is launched.
    monkeypatch.setattr(netns, "prepare", lambda prefix, names, table, backend: netns.Network(
        netns.plan_network(prefix, names, table), backend))
    workdir = tmp_path / "tb"
    tb = Testbed(UpConfig(nodes=2, clients=3, miners=2, workdir=str(workdir), hosts="netns",
                          netem={"node-1": "delay=50ms"}), progress=lambda line: None)
    tb.write()
    plan = tb.network.plan
    assert [h.name for h in plan.hosts] == ["node-0", "node-1", "clients-0", "clients-1"]
    address = {h.name: h.address for h in plan.hosts}

    def config(name: str) -> dict:
        return json.loads((workdir / f"{name}.json").read_text())

    assert config("ctbc-0")["listen"].startswith(address["node-0"] + ":")
    assert [p.split(":")[0] for p in config("ctbc-0")["peers"]] == [address["node-1"]]
    node1 = config("node-1")
    assert {a.split(":")[0] for a in (node1["listen"], node1["ctbc"], node1["cmbc"])} == {
        address["node-1"]}
    assert config("client-2")["node"].startswith(address["node-0"] + ":")
    hosts = {p.name: tb._host_of(p) for p in tb.procs}
    assert hosts["cmbc-1"] == hosts["miner-1"] == "node-1" and hosts["miner-0"] == "node-0"
    assert hosts["client-0"] == hosts["client-2"] == "clients-0"
    assert hosts["client-1"] == "clients-1"
    assert all(p.address.split(":")[0] in address.values() for p in tb.procs)
