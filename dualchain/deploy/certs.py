"""`dualchain certs`: a testbed certificate authority and one certificate per process, for
mutual TLS between every dualchain process.

    dualchain certs --dir runs/default                     # every process of a written testbed
    dualchain certs --dir D --names ctbc-0 node-0=<id hex> --hosts 10.0.0.2 box-1

writes under ``DIR/tls`` (``--out``): ``ca.pem`` and ``ca.key`` (the CA, kept and reused when
it is already there, so certificates added later chain to the same root) and ``NAME.pem`` /
``NAME.key`` per process; private keys are mode 0600. ``--configure`` also puts the ``tls``
section into each process config it read (``dualchain up --tls`` does all of this itself).

Each certificate names its process:

- subject ``O=dualchain testbed, OU=<process name>, CN=<identity id hex>``: the ML-DSA identity
  id (dualchain.chain.identity) of the process's key, or the process name when it has none
  (``operator``: the certificate tools such as ``dualchain up`` itself use to query processes);
- subject alternative names: ``urn:dualchain:id:<id hex>`` (URI), the process name and
  ``localhost`` (DNS), ``127.0.0.1`` and ``::1`` (IP), and the host of its listen address plus
  every ``--hosts`` entry, so gRPC's hostname check passes whether a peer dials ``127.0.0.1``,
  a namespace address or a compose service name such as ``ctbc-0``;
- key usage for both TLS ends (serverAuth and clientAuth): a daemon serves and dials its peers.

Where the processes come from: with ``--names``, the names given (``NAME=ID`` sets the id;
otherwise it is read from ``DIR/keys/NAME.key`` when that exists); without, every process config
in DIR (a JSON file with a ``key``: daemon, node and client configs; the name is the file's stem)
and every key in ``DIR/keys`` that no config names (a miner's), plus ``operator`` (the launcher's
and the operator commands' certificate; the identity of ``keys/operator.key`` where it exists).

Keys are ECDSA P-256, signed with SHA-256: fast, and accepted by the TLS stack gRPC builds on
(gRPC's BoringSSL refuses Ed25519 certificates: NO_COMMON_SIGNATURE_ALGORITHMS). TLS
authenticates membership of the testbed; every message keeps its ML-DSA signature regardless.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dualchain.chain.identity import load_key_file
from dualchain.chain.rpc import TlsFiles

CA_VALID_DAYS = 3650
CERT_VALID_DAYS = 825
CLOCK_SKEW = datetime.timedelta(hours=1)  # hosts of a testbed may disagree a little on the time
ORGANIZATION = "dualchain testbed"
ID_URI_PREFIX = "urn:dualchain:id:"
OPERATOR = "operator"
TLS_DIR = "tls"
_ALWAYS_HOSTS = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = ("0.0.0.0", "::", "")

PrivateKey = ec.EllipticCurvePrivateKey


class CertsError(ValueError):
    """Certificates cannot be made as asked (bad name, id or directory); the message says why."""


@dataclass(frozen=True)
class CertSpec:
    """What one process's certificate says: its name, its identity id (hex) and its hosts."""

    name: str
    identity: str | None = None
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise CertsError(f"process name {self.name!r} cannot name a certificate file")
        if self.identity is not None:
            try:
                if len(bytes.fromhex(self.identity)) != 32:
                    raise ValueError
            except ValueError:
                raise CertsError(f"{self.name}: identity id {self.identity!r} is not 64 hex "
                                 "digits") from None


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def address_host(address: str) -> str:
    """The host of ``host:port`` (brackets of an IPv6 literal removed)."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host.strip("[]")


class CertificateAuthority:
    """The testbed's root: a self-signed CA certificate and its key."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def generate(cls, common_name: str = "dualchain testbed CA") -> CertificateAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        directory = Path(directory)
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertsError(f"{directory / 'ca.key'} is not an ECDSA key")
        return cls(cert, key)

    @classmethod
    def load_or_generate(cls, directory: Path) -> CertificateAuthority:
        """The CA in ``directory`` if there is one, else a new one saved there."""
        directory = Path(directory)
        if (directory / "ca.pem").exists() and (directory / "ca.key").exists():
            return cls.load(directory)
        ca = cls.generate()
        ca.save(directory)
        return ca

    def save(self, directory: Path) -> None:
        _write_pair(Path(directory), "ca", self.cert, self.key)

    def issue(self, spec: CertSpec) -> tuple[x509.Certificate, PrivateKey]:
        """A certificate for one process, signed by this CA, and its new private key."""
        key = _new_key()
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, spec.name),
            x509.NameAttribute(NameOID.COMMON_NAME, spec.identity or spec.name),
        ])
        hosts = list(dict.fromkeys((spec.name, *_ALWAYS_HOSTS, *spec.hosts)))
        names: list[x509.GeneralName] = [_general_name(h) for h in hosts
                                         if h not in _WILDCARDS]
        if spec.identity is not None:
            names.insert(0, x509.UniformResourceIdentifier(ID_URI_PREFIX + spec.identity))
        now = datetime.datetime.now(datetime.UTC)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                key_cert_sign=False, crl_sign=False, encipher_only=False,
                decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert, key


def _write_pair(directory: Path, stem: str, cert: x509.Certificate, key: PrivateKey) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = directory / f"{stem}.key"
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    (directory / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def identity_of(cert: x509.Certificate) -> str | None:
    """The identity id (hex) a dualchain certificate carries, from its URI name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(ID_URI_PREFIX):
            return uri.removeprefix(ID_URI_PREFIX)
    return None


def write_certs(out: Path, specs: Iterable[CertSpec],
                hosts: Sequence[str] = ()) -> dict[str, TlsFiles]:
    """The CA (reused when ``out`` has one) and a certificate per spec, written under ``out``
    (``hosts`` are added to every certificate); the ``TlsFiles`` of each process by name."""
    out = Path(out).resolve()
    ca = CertificateAuthority.load_or_generate(out)
    files: dict[str, TlsFiles] = {}
    for spec in specs:
        cert, key = ca.issue(CertSpec(spec.name, spec.identity, (*spec.hosts, *hosts)))
        _write_pair(out, spec.name, cert, key)
        files[spec.name] = TlsFiles(out / "ca.pem", out / f"{spec.name}.pem",
                                    out / f"{spec.name}.key")
    return files


# -- which processes ------------------------------------------------------------------------


def _key_id(path: Path) -> str:
    return load_key_file(path).id.hex()


def process_configs(directory: Path) -> dict[str, dict]:
    """The process configs in a testbed directory by name (the file stem): JSON objects that
    name a ``key`` (daemon, node and client configs; not genesis files or reports)."""
    found = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("key"), str):
            found[path.stem] = data
    return found


def specs_from_workdir(directory: Path) -> list[CertSpec]:
    """A spec per process of the testbed written in ``directory`` (see the module docstring)."""
    directory = Path(directory).resolve()
    specs, used = [], set()
    for name, data in process_configs(directory).items():
        key = (directory / data["key"]).resolve()
        used.add(key)
        listen = data.get("listen")
        hosts = (address_host(listen),) if isinstance(listen, str) else ()
        specs.append(CertSpec(name, _key_id(key), hosts))
    for key in sorted((directory / "keys").glob("*.key")):
        if key.resolve() not in used and key.stem != OPERATOR:
            specs.append(CertSpec(key.stem, _key_id(key)))
    if not specs:
        raise CertsError(f"{directory} holds no process configs or keys: name the processes "
                         "with --names")
    return [*specs, operator_spec(directory)]


def operator_spec(directory: Path) -> CertSpec:
    """The launcher's and the operator commands' certificate: with the identity of
    ``keys/operator.key`` (the key that signs re-admissions) when the testbed has one."""
    key = Path(directory) / "keys" / f"{OPERATOR}.key"
    return CertSpec(OPERATOR, _key_id(key) if key.exists() else None)


def specs_from_names(directory: Path, names: Sequence[str]) -> list[CertSpec]:
    """Specs for ``NAME`` or ``NAME=ID`` entries; a missing id comes from DIR/keys/NAME.key."""
    specs = []
    for entry in names:
        name, _, identity = entry.partition("=")
        key = Path(directory) / "keys" / f"{name}.key"
        if not identity and key.exists():
            identity = _key_id(key)
        specs.append(CertSpec(name, identity or None))
    return specs


def tls_section(files: TlsFiles, base: Path) -> dict[str, str]:
    """The ``tls`` config section for ``files``, paths relative to the config's directory."""
    return {k: os.path.relpath(getattr(files, k), Path(base).resolve())
            for k in ("ca", "cert", "key")}


def configure(directory: Path, files: dict[str, TlsFiles]) -> list[Path]:
    """Puts the ``tls`` section into every process config of ``directory`` that has a
    certificate in ``files``; returns the configs changed."""
    changed = []
    for name, data in process_configs(directory).items():
        if name in files:
            path = Path(directory) / f"{name}.json"
            data["tls"] = tls_section(files[name], path.parent)
            path.write_text(json.dumps(data, indent=2) + "\n")
            changed.append(path)
    return changed


def make_certs(directory: Path, names: Sequence[str] | None = None,
               hosts: Sequence[str] = (), out: Path | None = None,
               configure_configs: bool = False) -> dict[str, TlsFiles]:
    """What ``dualchain certs`` does (see the module docstring)."""
    directory = Path(directory)
    specs = specs_from_names(directory, names) if names else specs_from_workdir(directory)
    files = write_certs(out or directory / TLS_DIR, specs, hosts)
    if configure_configs:
        configure(directory, files)
    return files


# -- dualchain up --tls -----------------------------------------------------------------------


class LaunchedProcess(Protocol):
    """What ``secure_testbed`` needs of ``dualchain.deploy.up.Proc``."""

    name: str
    role: str
    argv: list[str]
    address: str


SERVING_ROLES = ("ctbc", "cmbc", "node")


def secure_testbed(workdir: Path, procs: Sequence[LaunchedProcess]) -> TlsFiles:
    """Mutual TLS for a testbed ``dualchain up`` has written: a certificate per process under
    ``WORKDIR/tls``, the ``tls`` section in every process config, the ``--tls-*`` flags on
    every miner's command line. Returns the files of the ``operator`` certificate the launcher
    itself uses to query the processes."""
    workdir = Path(workdir).resolve()
    configs = process_configs(workdir)
    specs = []
    for proc in procs:
        if proc.name in configs:
            data = configs[proc.name]
            key = workdir / data["key"]
            listen = data.get("listen")
            hosts = [address_host(listen)] if isinstance(listen, str) else []
        else:  # a miner: its key is a flag
            key = workdir / proc.argv[proc.argv.index("--key") + 1]
            hosts = []
        if proc.role in SERVING_ROLES and proc.address:
            hosts.append(address_host(proc.address))  # the address the others dial
        specs.append(CertSpec(proc.name, _key_id(key), tuple(dict.fromkeys(hosts))))
    files = write_certs(workdir / TLS_DIR, [*specs, operator_spec(workdir)])
    configure(workdir, files)
    for proc in procs:
        if proc.name not in configs:
            mine = tls_section(files[proc.name], workdir)
            proc.argv += ["--tls-ca", mine["ca"], "--tls-cert", mine["cert"],
                          "--tls-key", mine["key"]]
    return files[OPERATOR]
