"""The edge of every dualchain gRPC server: where requests are decoded and errors become statuses.

One server interceptor (``ErrorEdge``) wraps every method of every service a process serves
(chain daemons, server nodes, the health service alike), so no servicer has to get these right
on its own:

- requests are decoded here, not by gRPC: bytes that are not the method's request message end
  the call with INVALID_ARGUMENT and a one-line reason (gRPC's own decoding answered UNKNOWN
  ``Unexpected <class 'DecodeError'>`` and logged a traceback per request);
- a typed ``DualchainError`` a handler raises becomes its status (``rpc.status_for``) with
  ``code: reason``; any other exception becomes INTERNAL with a fixed text, and its real text
  goes to the log only;
- every status detail that leaves (also those a servicer sends itself with ``context.abort``)
  is one line, at most ``MAX_DETAILS`` characters, with filesystem paths replaced by
  ``<path>``, and errors the logic could not name (INTERNAL, UNKNOWN) never carry their text;
- refusals are logged one line each under the transport address (``context.peer()``), as
  warnings for malformed or forged input and INFO for the refusals of normal operation
  (busy, nonce races), rate-limited per peer host and method and overall (``RefusalLog``), so
  garbage cannot buy log volume: what was suppressed is counted in the next line written.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from dualchain.chain.errors import DecodeError, DualchainError

log = logging.getLogger("dualchain.edge")

MAX_DETAILS = 300
INTERNAL_DETAILS = "internal: the server could not complete this request"
# Statuses that name a failure of the server, not of the request: their text stays in the log.
_OPAQUE = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS)
# Refusals logged as warnings: malformed or forged input, or our own failure. The others (busy,
# nonce races, not found, duplicates) are part of normal operation: INFO.
_WARN = (*_OPAQUE, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
         grpc.StatusCode.PERMISSION_DENIED)
# An absolute path of at least two parts (/tmp/x, /work/a/b.sqlite), not a ratio like 1/2.
_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.\-~]+/)+[\w.\-~]*")


def safe_details(text: str) -> str:
    """Status details fit to send: one line, no filesystem path, at most MAX_DETAILS long."""
    line = " ".join(text.split())
    line = _PATH.sub("<path>", line)
    if len(line) > MAX_DETAILS:
        line = line[: MAX_DETAILS - 3] + "..."
    return line


def peer_host(peer: str) -> str:
    """The host part of ``context.peer()`` (``ipv4:127.0.0.1:5000`` -> ``ipv4:127.0.0.1``): a
    client's port changes with every connection, its host does not."""
    return peer.rsplit(":", 1)[0] if peer.count(":") > 1 else peer


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


class RefusalLog:
    """Rate limits for log lines about refused requests: a token bucket per (peer host,
    method) and one for all of them together. ``allow`` says whether to write a line now and
    how many lines were suppressed under that key since the last one written."""

    def __init__(self, per_key_burst: int = 5, per_key_per_min: float = 6.0,
                 total_burst: int = 30, total_per_min: float = 60.0, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_key = (float(per_key_burst), per_key_per_min / 60.0)
        self.total_limits = (float(total_burst), total_per_min / 60.0)
        self.max_keys = max_keys
        self.clock = clock
        self._keys: dict[tuple[str, str], _Bucket] = {}
        self._total = _Bucket(float(total_burst), clock())

    @staticmethod
    def _refill(bucket: _Bucket, limits: tuple[float, float], now: float) -> None:
        burst, rate = limits
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now

    def allow(self, peer: str, method: str) -> tuple[bool, int]:
        now = self.clock()
        key = (peer_host(peer), method)
        bucket = self._keys.get(key)
        if bucket is None:
            if len(self._keys) >= self.max_keys:  # many peers: forget the oldest key
                self._keys.pop(next(iter(self._keys)))
            bucket = self._keys[key] = _Bucket(self.per_key[0], now)
        self._refill(bucket, self.per_key, now)
        self._refill(self._total, self.total_limits, now)
        if bucket.tokens < 1 or self._total.tokens < 1:
            bucket.suppressed += 1
            return False, 0
        bucket.tokens -= 1
        self._total.tokens -= 1
        suppressed, bucket.suppressed = bucket.suppressed, 0
        return True, suppressed


class _Context:
    """The servicer context a handler sees: the real one, with ``abort`` made safe."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self.refusal: tuple[grpc.StatusCode, str] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, details: str = "", *args: Any) -> None:
        sent = INTERNAL_DETAILS if code in _OPAQUE else safe_details(details)
        if not sent:  # no refusal without a reason (the health service's NOT_FOUND has none)
            sent = _bare_reason(code)
        self.refusal = (code, details)
        await self._context.abort(code, sent, *args)


class _BadRequest(DecodeError):
    """A request that is not the method's message (INVALID_ARGUMENT)."""


def _decoder(deserializer: Callable[[bytes], Any] | None, method: str
             ) -> Callable[[bytes], Any]:
    if deserializer is None:
        return lambda raw: raw

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # protobuf's DecodeError, or anything a decoder raises
            raise _BadRequest(f"the request is not a valid message of {method} "
                              f"({len(raw)} bytes)") from None
    return decode


class ErrorEdge(grpc.aio.ServerInterceptor):
    """Decodes requests and maps every outcome to a documented status (see the module doc)."""

    def __init__(self, status_for: Callable[[DualchainError], grpc.StatusCode],
                 refusals: RefusalLog | None = None) -> None:
        self.status_for = status_for
        self.refusals = refusals or RefusalLog()

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.wrap(handler, handler_call_details.method)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        decode = _decoder(handler.request_deserializer, method)
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            behavior = handler.unary_unary

            async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                ctx = _Context(context)
                try:
                    response = await behavior(decode(raw), ctx)
                except Exception as exc:  # the edge maps every outcome
                    await self._fail(ctx, method, exc)
                _name_a_bare_status(ctx)
                return response

            return grpc.unary_unary_rpc_method_handler(unary_unary, None, serializer)
        if handler.stream_unary is not None:
            behavior = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[bytes],
                                   context: grpc.aio.ServicerContext) -> Any:
                ctx = _Context(context)
                try:
                    response = await behavior(_decoded(requests, decode), ctx)
                except Exception as exc:
                    await self._fail(ctx, method, exc)
                _name_a_bare_status(ctx)
                return response

            return grpc.stream_unary_rpc_method_handler(stream_unary, None, serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, method, lambda r: decode(r)),
                None, serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._streaming(handler.stream_stream, method, lambda r: _decoded(r, decode)),
            None, serializer)

    def _streaming(self, behavior: Callable[..., Any], method: str,
                   prepare: Callable[[Any], Any]) -> Callable[..., Any]:
        """A response-streaming behaviour of the same kind as ``behavior``: gRPC tells an async
        generator (yields responses) from a coroutine (writes them with ``context.write``)."""
        if inspect.isasyncgenfunction(behavior):
            async def generator(request: Any, context: grpc.aio.ServicerContext
                                ) -> AsyncIterator[Any]:
                ctx = _Context(context)
                try:
                    async for response in behavior(prepare(request), ctx):
                        yield response
                except Exception as exc:
                    await self._fail(ctx, method, exc)
            return generator

        async def writer(request: Any, context: grpc.aio.ServicerContext) -> None:
            ctx = _Context(context)
            try:
                await behavior(prepare(request), ctx)
            except Exception as exc:
                await self._fail(ctx, method, exc)
        return writer

    async def _fail(self, ctx: _Context, method: str, exc: Exception) -> None:
        """Ends a call that raised: logs the refusal (rate-limited) and sends its status."""
        if isinstance(exc, grpc.aio.AbortError):  # the handler aborted: status already sent
            if ctx.refusal is not None:
                self._log(ctx, method, *ctx.refusal)
            raise exc
        unexpected = not isinstance(exc, DualchainError)
        if isinstance(exc, DualchainError):
            code = self.status_for(exc)
            details = f"{exc.code}: {exc.reason}"
        elif isinstance(exc, NotImplementedError):  # a generated servicer's default method
            unexpected = False
            code, details = grpc.StatusCode.UNIMPLEMENTED, f"unimplemented: {method}"
        else:
            code = grpc.StatusCode.INTERNAL
            details = f"{type(exc).__name__}: {exc}"
        try:
            await ctx.abort(code, details)
        except grpc.aio.AbortError:
            self._log(ctx, method, code, details, exc if unexpected else None)
            raise

    def _log(self, ctx: _Context, method: str, code: grpc.StatusCode, details: str,
             unexpected: Exception | None = None) -> None:
        peer = ctx.peer() or "unknown"
        allowed, suppressed = self.refusals.allow(peer, method)
        if not allowed:
            return
        more = f" ({suppressed} more from this peer suppressed)" if suppressed else ""
        level = logging.WARNING if code in _WARN else logging.INFO
        # An unexpected failure is a bug of ours: its traceback, within the same rate limit.
        log.log(level, "%s from %s: %s %s%s", method, peer, code.name,
                " ".join(details.split())[:MAX_DETAILS], more, exc_info=unexpected)


def _name_a_bare_status(ctx: _Context) -> None:
    """A handler that set a status code without a reason (the health service's NOT_FOUND for
    an unknown service) gets the code's name as its reason: no refusal without one."""
    code = ctx.code()
    if code is not None and code != grpc.StatusCode.OK and not ctx.details():
        ctx.set_details(_bare_reason(code))


def _bare_reason(code: grpc.StatusCode) -> str:
    name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    return f"{name.lower()}: refused without a reason given"


async def _decoded(requests: AsyncIterator[bytes], decode: Callable[[bytes], Any]
                   ) -> AsyncIterator[Any]:
    async for raw in requests:
        yield decode(raw)
