"""`dualchain certs`: a testbed CA signs one certificate per process, naming the process's
identity id and the hosts peers dial; the ``tls`` config sections; gRPC accepts the result."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dualchain.chain.daemon.config import ConfigError, DaemonConfig, parse_tls
from dualchain.chain.identity import load_key_file
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.rpc import add_health, listen, open_channel, tls_from_paths
from dualchain.cli import main
from dualchain.deploy import testnet
from dualchain.deploy.certs import (
    OPERATOR,
    CertificateAuthority,
    CertsError,
    CertSpec,
    identity_of,
    make_certs,
    secure_testbed,
    specs_from_workdir,
    write_certs,
)

NODE_ID = "ab" * 32


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _testnet(directory: Path, **plan: Any) -> list[Path]:
    """A written testnet (keys, genesis, daemon configs): what ``dualchain certs`` reads."""
    return testnet.make_testnet(directory, testnet.TestnetPlan(algorithm=Algorithm.ML_DSA_44,
                                                               **plan))


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_the_ca_signs_a_certificate_per_process_that_names_its_identity(tmp_path: Path) -> None:
    files = write_certs(tmp_path, [CertSpec("ctbc-0", NODE_ID, ("10.0.0.2",)),
                                   CertSpec("client-3")])
    ca = _cert(tmp_path / "ca.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    cert = _cert(files["ctbc-0"].cert)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NODE_ID
    assert cert.subject.get_attributes_for_oid(
        NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "ctbc-0"
    assert identity_of(cert) == NODE_ID
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)

    # Without an identity, the process name is the common name.
    plain = _cert(files["client-3"].cert)
    plain.verify_directly_issued_by(ca)
    assert plain.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "client-3"
    assert identity_of(plain) is None


def test_sans_cover_the_name_loopback_and_the_hosts_peers_dial(tmp_path: Path) -> None:
    files = write_certs(tmp_path, [CertSpec("ctbc-0", NODE_ID, ("10.0.0.2", "0.0.0.0"))],
                        hosts=("box-1",))
    sans = _sans(_cert(files["ctbc-0"].cert))
    assert set(sans.get_values_for_type(x509.DNSName)) == {"ctbc-0", "localhost", "box-1"}
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.0.0.2")}  # not the wildcard a process may bind
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"urn:dualchain:id:{NODE_ID}"]


def test_private_keys_are_private_and_the_ca_is_reused(tmp_path: Path) -> None:
    first = write_certs(tmp_path, [CertSpec("node-0")])
    for key in (tmp_path / "ca.key", first["node-0"].key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    ca_before = (tmp_path / "ca.pem").read_bytes()
    later = write_certs(tmp_path, [CertSpec("node-1")])  # e.g. a joining node
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    _cert(later["node-1"].cert).verify_directly_issued_by(_cert(tmp_path / "ca.pem"))
    _cert(first["node-0"].cert).verify_directly_issued_by(_cert(tmp_path / "ca.pem"))


def test_bad_names_and_ids_are_refused() -> None:
    with pytest.raises(CertsError):
        CertSpec("../etc")
    with pytest.raises(CertsError):
        CertSpec("node-0", "not-hex")
    with pytest.raises(CertsError):
        CertSpec("node-0", "ab" * 8)  # hex, but not an identity id


def test_a_workdir_gives_a_certificate_per_config_and_unclaimed_key(tmp_path: Path) -> None:
    _testnet(tmp_path, nodes=2, kind="cmbc", miners=1, host="127.0.0.2")
    specs = {s.name: s for s in specs_from_workdir(tmp_path)}
    assert set(specs) == {"node-0", "node-1", "miner-0", OPERATOR}
    for name in ("node-0", "node-1", "miner-0"):
        assert specs[name].identity == load_key_file(tmp_path / "keys" / f"{name}.key").id.hex()
    assert specs["node-0"].hosts == ("127.0.0.2",)  # the host of its listen address
    assert specs[OPERATOR].identity is None


def test_certs_configure_puts_a_tls_section_the_daemon_config_reads(tmp_path: Path) -> None:
    configs = _testnet(tmp_path, nodes=1)
    files = make_certs(tmp_path, configure_configs=True)
    section = json.loads(configs[0].read_text())["tls"]
    assert section == {"ca": "tls/ca.pem", "cert": "tls/node-0.pem", "key": "tls/node-0.key"}
    assert DaemonConfig.load(configs[0]).tls == files["node-0"]
    assert DaemonConfig.load(configs[0]).tls.ca == (tmp_path / "tls" / "ca.pem").resolve()


def test_a_tls_section_must_name_three_existing_files(tmp_path: Path) -> None:
    assert parse_tls(None, tmp_path) is None
    with pytest.raises(ConfigError):
        parse_tls({"ca": "ca.pem", "cert": "x.pem"}, tmp_path)
    with pytest.raises(ConfigError, match="not a file"):
        parse_tls({"ca": "ca.pem", "cert": "x.pem", "key": "x.key"}, tmp_path)


def test_tls_flags_are_all_or_nothing(tmp_path: Path) -> None:
    assert tls_from_paths(None, None, None) is None
    with pytest.raises(ValueError):
        tls_from_paths(tmp_path / "ca.pem", None, None)
    files = tls_from_paths("ca.pem", "a.pem", "a.key")
    assert files is not None and files.cert.is_absolute()


@dataclass
class _Proc:
    name: str
    role: str
    argv: list[str] = field(default_factory=list)
    address: str = ""


def test_up_tls_configures_every_process_and_flags_the_miners(tmp_path: Path) -> None:
    _testnet(tmp_path, nodes=1, kind="cmbc", miners=1)
    miner = _Proc("miner-0", "miner", ["dualchain", "miner", "--key", "keys/miner-0.key"])
    operator = secure_testbed(tmp_path, [_Proc("node-0", "cmbc", address="127.0.0.1:7000"),
                                         miner])
    assert operator.cert == (tmp_path / "tls" / f"{OPERATOR}.pem").resolve()
    assert json.loads((tmp_path / "node-0.json").read_text())["tls"]["cert"] == \
        "tls/node-0.pem"
    assert miner.argv[-6:] == ["--tls-ca", "tls/ca.pem", "--tls-cert", "tls/miner-0.pem",
                               "--tls-key", "tls/miner-0.key"]
    miner_id = load_key_file(tmp_path / "keys" / "miner-0.key").id.hex()
    assert identity_of(_cert(tmp_path / "tls" / "miner-0.pem")) == miner_id


def test_the_cli_writes_certificates_for_named_processes(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["certs", "--dir", str(tmp_path), "--names", "ctbc-0", f"node-0={NODE_ID}",
                 "--hosts", "10.1.0.5"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path.resolve() / "tls" / f"{n}.pem") for n in ("ctbc-0", "node-0")]
    cert = _cert(tmp_path / "tls" / "node-0.pem")
    assert identity_of(cert) == NODE_ID
    assert ipaddress.ip_address("10.1.0.5") in _sans(cert).get_values_for_type(x509.IPAddress)
    assert main(["certs", "--dir", str(tmp_path / "empty")]) == 2  # nothing to certify


async def test_grpc_accepts_the_certificates_for_mutual_tls(tmp_path: Path) -> None:
    files = write_certs(tmp_path, [CertSpec("server"), CertSpec("client")])
    assert isinstance(CertificateAuthority.load(tmp_path).cert, x509.Certificate)
    server = grpc.aio.server()
    health = await add_health(server, [])
    port = listen(server, "127.0.0.1:0", files["server"])
    assert port
    await server.start()
    try:
        await health.serving()
        async with open_channel(f"127.0.0.1:{port}", files["client"]) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # The same address by name: the certificate names localhost too.
        async with open_channel(f"localhost:{port}", files["client"]) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=5)
        # Without a client certificate the handshake is refused.
        no_cert = grpc.ssl_channel_credentials(root_certificates=files["client"].ca.read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", no_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
