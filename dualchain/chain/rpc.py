"""gRPC settings, the health service and error mapping, in one place for every dualchain process.

Channel and server options (every server and channel of the daemons, nodes, miners and clients):

- message sizes: a block of a full proposal can be tens of megabytes, so the limits come from
  the chain's own block size bound (plus headroom for framing), never from gRPC's 4 MiB default;
  model blobs and updates travel in 1 MiB chunks, so they fit the default limit below;
- keepalive: peers hold long-lived gossip streams that may carry nothing for a while (an idle
  chain), and miners and server nodes hold block and tip streams. Clients ping every 20 s and
  give up on a peer that does not answer within 10 s, so a dead peer (killed, partitioned) is
  noticed in seconds instead of waiting for TCP's own timeout (minutes). Servers accept such
  pings (``min_ping_interval`` at half the ping period) instead of answering them with GOAWAY,
  and ping idle clients the same way, so a half-open connection is dropped on both sides;
- reconnects: after a peer restarts, channels retry within 0.2 to 2 s; our own backoff (with
  jitter) sits above this.

The health service is the standard ``grpc.health.v1.Health``: ``add_health`` puts it on a server
as NOT_SERVING, the process flips it to SERVING once it is ready and back to NOT_SERVING when a
SIGTERM starts its shutdown, so an orchestrator stops sending work before the server goes away.

Typed errors raised by the logic become gRPC statuses here, with their reason as the details;
``make_server`` puts the edge (``edge.ErrorEdge``) in front of every method: requests decoded
there, every exception mapped to a status, every detail one line without paths, refusals
logged under a rate limit.

Transport security: a process whose config has a ``tls`` section (``TlsFiles``: the testbed CA,
its own certificate and key, see ``dualchain certs``) serves only mutual TLS (``listen``: a
client without a certificate the CA signed is refused during the handshake) and opens every
channel with its certificate (``open_channel``); without it both stay plaintext. TLS only keeps
strangers off the wire: every transaction, block, vote and update still carries its ML-DSA
signature and every receiver still checks it, whatever the transport.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from dualchain.chain.edge import ErrorEdge, RefusalLog
from dualchain.chain.errors import (
    BackendUnavailableError,
    DecodeError,
    DualchainError,
    MempoolError,
    NotFoundError,
    OversizedError,
    QuotaError,
    ReplayError,
    SignatureError,
    ValidationError,
)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_KEEPALIVE_TIME_MS = 20_000
_KEEPALIVE_TIMEOUT_MS = 10_000


def message_limit(max_block_bytes: int) -> int:
    """The gRPC message limit for a chain whose blocks are at most ``max_block_bytes``."""
    return max(DEFAULT_MAX_MESSAGE_BYTES, 2 * max_block_bytes + 1024 * 1024)


def _shared_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """What channels and servers set alike (see the module docstring for the reasons)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options of every channel a dualchain process opens."""
    return [
        *_shared_options(max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options of every gRPC server a dualchain process runs."""
    return [
        *_shared_options(max_message_bytes),
        ("grpc.http2.min_ping_interval_without_data_ms", _KEEPALIVE_TIME_MS // 2),
    ]


def make_server(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                refusals: RefusalLog | None = None) -> grpc.aio.Server:
    """A gRPC server of a dualchain process, with the error edge on every method."""
    return grpc.aio.server(options=server_options(max_message_bytes),
                           interceptors=[ErrorEdge(status_for, refusals)])


# -- transport security ------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A process's ``tls`` config section: PEM files of the testbed CA, its certificate and its
    private key (absolute paths once a config is loaded)."""

    ca: Path
    cert: Path
    key: Path


def tls_from_paths(ca: Path | str | None, cert: Path | str | None,
                   key: Path | str | None) -> TlsFiles | None:
    """``TlsFiles`` from command-line flags: all three given, or none (plaintext)."""
    given = [p for p in (ca, cert, key) if p is not None]
    if not given:
        return None
    if len(given) != 3:
        raise ValueError("TLS needs all three of the CA, certificate and key files")
    return TlsFiles(*(Path(p).resolve() for p in given))


@functools.cache
def _pem(path: Path) -> bytes:
    """A PEM file's bytes, read once per process (every channel shares them)."""
    return Path(path).read_bytes()


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Mutual TLS: the server shows its certificate and accepts only clients whose certificate
    the testbed CA signed."""
    return grpc.ssl_server_credentials(
        [(_pem(tls.key), _pem(tls.cert))], root_certificates=_pem(tls.ca),
        require_client_auth=True)


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """The client side: trusts only servers the testbed CA signed and shows our certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(tls.ca), private_key=_pem(tls.key),
        certificate_chain=_pem(tls.cert))


def listen(server: grpc.aio.Server, address: str, tls: TlsFiles | None) -> int:
    """Binds ``server`` to ``address``, mutual TLS with ``tls``; the port, 0 when it failed."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(tls))


def open_channel(address: str, tls: TlsFiles | None,
                 options: Sequence[tuple[str, int]] | None = None) -> grpc.aio.Channel:
    """An asyncio channel to ``address``: mutual TLS with ``tls``, plaintext without."""
    options = channel_options() if options is None else list(options)
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=options)


def open_blocking_channel(address: str, tls: TlsFiles | None) -> grpc.Channel:
    """A synchronous channel (launchers, status tools): mutual TLS with ``tls``."""
    if tls is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, channel_credentials(tls))


# -- health ------------------------------------------------------------------------------------


def service_names(*pb2_modules: ModuleType) -> list[str]:
    """The full names of the services in generated ``*_pb2`` modules (``dualchain.v1.X``)."""
    return [service.full_name for module in pb2_modules
            for service in module.DESCRIPTOR.services_by_name.values()]


class Health:
    """The health status of one server: overall (``""``) and per service, flipped together."""

    def __init__(self, services: Sequence[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self.services = ("", *services)

    async def serving(self) -> None:
        """Ready: every service answers. Ignored once shutdown began."""
        await self._set(health_pb2.HealthCheckResponse.SERVING)

    async def not_serving(self) -> None:
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def shutting_down(self) -> None:
        """NOT_SERVING for good (later ``serving`` calls are ignored); Watch streams see it."""
        await self.servicer.enter_graceful_shutdown()

    async def _set(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in self.services:
            await self.servicer.set(service, status)


async def add_health(server: grpc.aio.Server, services: Sequence[str]) -> Health:
    """Adds ``grpc.health.v1.Health`` to ``server`` (before it starts), every one of
    ``services`` and the server as a whole NOT_SERVING until ``Health.serving``."""
    health = Health(services)
    await health.not_serving()
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    return health


_MEMPOOL_STATUS = {
    "full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "sender_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "duplicate": grpc.StatusCode.ALREADY_EXISTS,
    "oversized": grpc.StatusCode.INVALID_ARGUMENT,
}


def status_for(error: DualchainError) -> grpc.StatusCode:
    """The gRPC status of a typed error."""
    if isinstance(error, QuotaError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(error, DecodeError | OversizedError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, SignatureError):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(error, ReplayError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, MempoolError):
        return _MEMPOOL_STATUS.get(error.code, grpc.StatusCode.FAILED_PRECONDITION)
    if isinstance(error, ValidationError):
        if error.code in ("nonce_gap", "stale_timestamp", "unknown_epoch"):
            return grpc.StatusCode.FAILED_PRECONDITION
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, NotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, BackendUnavailableError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


async def abort(context: grpc.aio.ServicerContext, error: DualchainError) -> None:
    """Ends the call with the error's status; the details are ``code: reason`` (made safe by
    the edge: one line, no path; no text at all for INTERNAL)."""
    await context.abort(status_for(error), f"{error.code}: {error.reason}")
