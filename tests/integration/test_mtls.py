"""Mutual TLS on real CTBC daemons: with a ``tls`` section in their configs, two replicas reach
consensus over TLS peer links, a client with a certificate from the testbed CA is served, and a
client without one (plaintext, no certificate, or a certificate from another CA) is refused.
Last, ``dualchain up --tls``: a whole small testbed commits model versions with every channel
mutual TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from dualchain.chain import wire
from dualchain.chain.rpc import TlsFiles, channel_options, open_channel
from dualchain.deploy.certs import OPERATOR, CertSpec, make_certs, write_certs
from dualchain.deploy.up import Testbed
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from tests.integration.cluster import Cluster

HEIGHT = 3  # blocks the two replicas must commit together: their peer links carry TLS
RPC_S = 5.0  # a refused handshake must fail fast, not hang


@dataclass
class TlsTestnet:
    cluster: Cluster
    operator: TlsFiles  # a certificate the testbed CA signed
    rogue: TlsFiles  # the testbed CA as root, but our certificate is from another CA

    @property
    def address(self) -> str:
        return self.cluster.addresses[0]


@pytest_asyncio.fixture
async def tls_testnet(tmp_path: Path) -> AsyncIterator[TlsTestnet]:
    cluster = Cluster(tmp_path / "ctbc", nodes=2, start=False)
    try:
        files = make_certs(cluster.directory, configure_configs=True)
        assert set(files) == {"node-0", "node-1", OPERATOR}
        other = write_certs(tmp_path / "other-ca", [CertSpec(OPERATOR)])[OPERATOR]
        rogue = TlsFiles(ca=files[OPERATOR].ca, cert=other.cert, key=other.key)
        await cluster.astart_many([0, 1])
        yield TlsTestnet(cluster, files[OPERATOR], rogue)
    finally:
        await cluster.aclose()  # every daemon killed by PID


async def _status(channel: grpc.aio.Channel) -> chain_pb.ChainStatus:
    return await chain_grpc.ChainServiceStub(channel).GetStatus(chain_pb.GetStatusRequest(),
                                                                timeout=RPC_S)


async def _refused(channel: grpc.aio.Channel) -> grpc.aio.AioRpcError:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _status(channel)
    return refused.value


@pytest.mark.timeout(120)
async def test_replicas_commit_over_mtls_and_a_ca_signed_client_is_served(
        tls_testnet: TlsTestnet) -> None:
    async with open_channel(tls_testnet.address, tls_testnet.operator) as channel:
        status = await _status(channel)
        assert status.kind == "ctbc"
        # Both replicas vote on every block: the chain grows only if the peer links, mutual TLS
        # too, carry proposals and votes.
        stream = chain_grpc.ChainServiceStub(channel).SubscribeBlocks(
            chain_pb.SubscribeBlocksRequest(from_height=HEIGHT), timeout=60)
        block = wire.block_from_proto(await stream.read())
        stream.cancel()
        assert block.height == HEIGHT
        qc = block.header.parent_qc
        assert qc is not None
        assert {voter for voter, _ in qc.signatures} == set(tls_testnet.cluster.ids)


@pytest.mark.timeout(60)
async def test_a_client_without_a_certificate_is_refused(tls_testnet: TlsTestnet) -> None:
    # It trusts the testbed CA (so the server's certificate checks out) but shows none of its
    # own: the server requires one and ends the handshake.
    no_cert = grpc.ssl_channel_credentials(root_certificates=tls_testnet.operator.ca
                                           .read_bytes())
    error = await _refused(grpc.aio.secure_channel(tls_testnet.address, no_cert,
                                                   options=channel_options()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.timeout(60)
async def test_a_plaintext_client_is_refused(tls_testnet: TlsTestnet) -> None:
    error = await _refused(grpc.aio.insecure_channel(tls_testnet.address,
                                                     options=channel_options()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.timeout(60)
async def test_a_certificate_from_another_ca_is_refused(tls_testnet: TlsTestnet) -> None:
    error = await _refused(open_channel(tls_testnet.address, tls_testnet.rogue))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # The daemon still serves its own testbed afterwards.
    async with open_channel(tls_testnet.address, tls_testnet.operator) as channel:
        assert (await _status(channel)).kind == "ctbc"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_up_tls_runs_a_whole_testbed_over_mutual_tls(make_testbed: Callable[..., Testbed]) -> None:
    tb = make_testbed(nodes=2, clients=2, miners=1, rounds=2, batches=5, tls=True)
    # Clients reach their nodes, nodes their daemons, the miner its CMBC daemon: all TLS.
    tb.wait_for(lambda proc, event: event["event"] == "version" and event["version"] >= 2,
                timeout=120)
    heights = tb._chain_heights()  # the launcher asks over TLS with its operator certificate
    assert heights["ctbc"] > 0 and heights["cmbc"] > 0, heights
    plaintext = grpc.insecure_channel(tb.proc("ctbc-0").address)
    with plaintext, pytest.raises(grpc.RpcError) as refused:
        chain_grpc.ChainServiceStub(plaintext).GetStatus(chain_pb.GetStatusRequest(),
                                                         timeout=RPC_S)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
