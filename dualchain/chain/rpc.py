"""gRPC settings and error mapping, in one place for every dualchain process.

Channel and server options:

- message sizes: a block of a full proposal can be tens of megabytes, so the limits come from
  the chain's own block size bound (plus headroom for framing), never from gRPC's 4 MiB default;
- keepalive: peers hold long-lived gossip streams that may carry nothing for a while (an idle
  chain). Clients ping every 20 s and give up on a peer that does not answer within 10 s, so a
  dead peer (killed, partitioned) is noticed in seconds instead of waiting for TCP's own timeout.
  Servers accept such pings (``min_ping_interval``) instead of answering them with GOAWAY.

Typed errors raised by the logic become gRPC statuses here, with their reason as the details.
"""

from __future__ import annotations

import grpc

from dualchain.chain.errors import (
    BackendUnavailableError,
    DecodeError,
    DualchainError,
    MempoolError,
    NotFoundError,
    OversizedError,
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


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect quickly after a peer restarts; backoff of our own sits above this.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def server_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _KEEPALIVE_TIME_MS // 2),
        ("grpc.http2.max_pings_without_data", 0),
    ]


_MEMPOOL_STATUS = {
    "full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "sender_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "duplicate": grpc.StatusCode.ALREADY_EXISTS,
    "oversized": grpc.StatusCode.INVALID_ARGUMENT,
}


def status_for(error: DualchainError) -> grpc.StatusCode:
    """The gRPC status of a typed error."""
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
    """Ends the call with the error's status; the details are ``code: reason``."""
    await context.abort(status_for(error), f"{error.code}: {error.reason}")
