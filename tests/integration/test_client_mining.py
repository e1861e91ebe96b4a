"""Clients that also mine CMBC, on a real testbed (`dualchain up --client-mining 1`): 2 server
nodes, 2 clients, one dedicated miner, every role its own process. Each client starts a miner
process of its own (through the supervisor, for the client's identity's account); blocks whose
reward credits the client identities appear, and on every CMBC replica each account's balance is
its blocks times the genesis's block reward (replayed to a final height and checked against the
replica's own next header, and against what its GetBalances answers). A client killed with
SIGKILL takes its miner with it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import psutil
import pytest

from dualchain.apps.cmbc.app import CmbcApp
from dualchain.apps.genesis import Genesis
from dualchain.chain import wire
from dualchain.chain.consensus.reward import Reward
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc
from tests.integration.testbed_reads import blocks_up_to, chain_stub
from tests.integration.testbeds import running_testbed

EVENT_TIMEOUT_S = 180.0
THETA = 1.0  # a miner duty of 1/2


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    workdir = tmp_path_factory.mktemp("clientmining") / "testbed"
    with running_testbed(workdir, nodes=2, clients=2, miners=1, rounds=3, batches=5,
                         min_updates=1, window_s=2.0, max_staleness=60,
                         client_mining=THETA) as tb:
        yield tb


def final_height_crediting(stub: chain_pb2_grpc.ChainServiceStub, accounts: set[bytes]) -> int:
    """The first height by which final blocks have credited every account in ``accounts``."""
    stream = stub.SubscribeBlocks(chain_pb2.SubscribeBlocksRequest(from_height=1,
                                                                   final_only=True),
                                  timeout=EVENT_TIMEOUT_S)
    try:
        for message in stream:
            block = wire.block_from_proto(message)
            accounts.discard(Reward.decode(block.transactions[0].payload).account)
            if not accounts:
                return block.height
    finally:
        stream.cancel()
    raise AssertionError(f"no final block credits {len(accounts)} of the clients")


def first_final(stub: chain_pb2_grpc.ChainServiceStub, height: int) -> None:
    """Returns once ``height`` is final on the replica behind ``stub``."""
    stream = stub.SubscribeBlocks(chain_pb2.SubscribeBlocksRequest(from_height=height,
                                                                   final_only=True),
                                  timeout=EVENT_TIMEOUT_S)
    try:
        next(iter(stream))
    finally:
        stream.cancel()


def test_client_blocks_credit_the_client_accounts_on_every_replica(testbed: Testbed) -> None:
    clients = {p.name: bytes.fromhex(p.ready["id"]) for p in testbed.procs
               if p.role == "client"}
    for name in clients:
        started = testbed.wait_for(lambda p, e, n=name: p.name == n and e["event"] == "miner",
                                   EVENT_TIMEOUT_S, past=True)
        assert started["duty"] == 0.5 and started["reward_account"] == clients[name].hex()
        mined = testbed.wait_for(lambda p, e, n=name: p.name == n and e["event"] == "mined",
                                 EVENT_TIMEOUT_S, past=True)
        assert mined["reward_account"] == clients[name].hex()
    # The clients train too: a version is committed with their miners running.
    testbed.wait_for(lambda p, e: e["event"] == "version", EVENT_TIMEOUT_S, past=True)

    genesis = Genesis.load(testbed.workdir / "cmbc-genesis.json")
    reward = genesis.pow.block_reward
    assert reward > 0
    stubs = [chain_stub(testbed, f"cmbc-{i}") for i in range(2)]
    # A mined block may still be reorged out: follow cmbc-0's final blocks until one credits
    # each client, then wait until that height is final on every replica.
    final = final_height_crediting(stubs[0], set(clients.values()))
    for stub in stubs:
        first_final(stub, final)
    views = []
    for stub in stubs:
        # Blocks 1..final+1 of this replica: the header of final+1 names the state the replica
        # itself computed after block `final` (it refuses a block whose app hash differs).
        blocks = blocks_up_to(stub, final + 1)
        app = CmbcApp(block_reward=reward)
        for block in blocks[:-1]:
            app.apply_block(block)
        assert app.app_hash() == blocks[-1].header.app_hash
        counts = Counter(Reward.decode(b.transactions[0].payload).account for b in blocks[:-1])
        assert app.balances() == {account: n * reward for account, n in counts.items()}
        views.append((app.balances(), [b.hash for b in blocks[:-1]]))
        # The replica's own answer, at its head (final blocks never go: at least their credit).
        reply = stub.GetBalances(chain_pb2.GetBalancesRequest(), timeout=10)
        live = {bytes(b.account): b.amount for b in reply.balances}
        assert reply.height >= final
        assert {a: live.get(a, 0) >= n * reward and live[a] % reward == 0
                for a, n in counts.items()} == dict.fromkeys(counts, True)
        for name, account in clients.items():
            assert counts[account] >= 1, f"no block of {name} in the first {final} blocks"
            # The client's miner signs with a key of its own: the account is the client's.
            assert all(b.header.proposer != account for b in blocks)
    assert views[0] == views[1]  # the same final blocks, the same balances, on both replicas


def test_a_clients_miner_dies_with_the_client(testbed: Testbed) -> None:
    started = testbed.wait_for(lambda p, e: p.name == "client-1" and e["event"] == "miner",
                               EVENT_TIMEOUT_S, past=True)
    miner = psutil.Process(started["pid"])
    assert miner.is_running() and "miner" in miner.cmdline()
    testbed.kill("client-1")  # SIGKILL: no clean shutdown
    miner.wait(timeout=30)  # its lifeline broke: it stops itself
    assert not psutil.pid_exists(started["pid"]) or miner.status() == psutil.STATUS_ZOMBIE
