"""Rewards on a real testbed (`dualchain up --reward-base 1000000 --aggregation fair`): 3 server
nodes (3 CTBC replicas), 4 clients, a miner, every role its own process. Each committed version
carries its reward list, which every replica re-executes; after 2 versions or more, GetBalances
answers the same balances on every CTBC replica, paid to the clients only, summing to a
multiple of the base (a version pays its base, or nothing when its pool could not be judged).
Bad input to GetBalances is a one-line INVALID_ARGUMENT."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from dualchain.chain.identity import load_key_file
from dualchain.deploy.balances import balances_at_one_height
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2
from tests.integration.testbed_reads import chain_stub
from tests.integration.testbeds import running_testbed

pytestmark = pytest.mark.timeout(300)

EVENT_TIMEOUT_S = 180.0
BASE = 1_000_000
NODES = 3
CLIENTS = 4


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("rewards") / "testbed"
    with running_testbed(workdir, nodes=NODES, clients=CLIENTS, miners=1, rounds=3, batches=5,
                         min_updates=2, window_s=2.0, max_staleness=60, reward_base=BASE,
                         aggregation="fair") as tb:
        yield tb


def test_every_replica_holds_the_same_balances_and_each_version_pays_its_base_or_nothing(
        testbed: Testbed) -> None:
    # Early pools may hold one client only (the others still registering): those versions pay
    # nothing. Wait for 2 versions and one that paid.
    testbed.wait_for(lambda p, e: e["event"] == "version" and e["version"] >= 2,
                     EVENT_TIMEOUT_S, past=True)
    testbed.wait_for(lambda p, e: e["event"] == "version" and e["rewarded"] == BASE,
                     EVENT_TIMEOUT_S, past=True)
    height, version, balances = balances_at_one_height(
        [testbed.proc(f"ctbc-{i}").address for i in range(NODES)])
    assert version >= 2 and height >= version
    assert all(b == balances[0] for b in balances[1:])
    # Each version pays its whole base or, when its pool could not be judged, nothing.
    paid = sum(balances[0].values())
    assert paid % BASE == 0 and 0 < paid <= version * BASE
    clients = {load_key_file(testbed.workdir / "keys" / f"client-{j}.key").id
               for j in range(CLIENTS)}
    assert balances[0] and set(balances[0]) <= clients
    # Asked for accounts: those only, an unknown one at 0; CMBC holds no client rewards.
    some = next(iter(balances[0]))
    reply = chain_stub(testbed, "ctbc-1").GetBalances(
        chain_pb2.GetBalancesRequest(accounts=[bytes(32), some]), timeout=10)
    assert [bytes(b.account) for b in reply.balances] == [bytes(32), some]
    assert reply.balances[0].amount == 0 and reply.balances[1].amount >= balances[0][some]
    cmbc = chain_stub(testbed, "cmbc-0").GetBalances(chain_pb2.GetBalancesRequest(), timeout=10)
    assert not {bytes(b.account) for b in cmbc.balances} & clients


@pytest.mark.parametrize(("request_", "reason"), [
    (chain_pb2.GetBalancesRequest(accounts=[b"short"]),
     "an account must be a 32-byte identity id"),
    (chain_pb2.GetBalancesRequest(accounts=[bytes(32)] * 1025), "at most 1024 accounts, got 1025"),
])
def test_bad_balance_requests_are_one_line_invalid_argument(
        testbed: Testbed, request_: chain_pb2.GetBalancesRequest, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        chain_stub(testbed, "ctbc-0").GetBalances(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert details.endswith(reason) and "\n" not in details and "/" not in details
