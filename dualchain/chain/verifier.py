"""Signature verification with a parsed-key cache, a verified-signature cache and batches on a pool.

The verifier is the one place the rest of dualchain checks ML-DSA signatures:

- parsed public keys are kept in an LRU, so a key seen before is not parsed again;
- a signature that verified once is remembered by the SHA-256 digest of everything it covers
  (parameter set, public key, context, message, signature), so a transaction checked on admission
  to the mempool is not checked again when its block is validated; only successes are cached;
- batches run on a thread pool. Both backends release the GIL inside verify (pyca/cryptography in
  its Rust layer, liboqs through ctypes), so threads use every core without pickling keys and
  messages to worker processes; ``verify_batch_async`` keeps the event loop free.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dualchain.chain.errors import SignatureError
from dualchain.chain.identity import Domain
from dualchain.chain.mldsa import DEFAULT_BACKEND, Algorithm, Backend, PublicKey, get_backend


@dataclass(frozen=True)
class VerifyRequest:
    algorithm: Algorithm
    public_key: bytes
    domain: Domain
    message: bytes
    signature: bytes


class _LRU:
    """A small thread-safe LRU map."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: OrderedDict[bytes, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> object | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: bytes, value: object) -> None:
        if self._capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


_DIGEST_HEADER = struct.Struct(">16sHII")


def signature_digest(
    algorithm: Algorithm, public_key: bytes, domain: Domain, message: bytes, signature: bytes
) -> bytes:
    """The cache key of a signature check: a digest of everything the check depends on.

    One SHA-256 call over a fixed-size header of lengths and the concatenated parts: this is on
    the path of every uncached verify, so it is kept to a single pass over the bytes.
    """
    header = _DIGEST_HEADER.pack(
        algorithm.label.encode(), len(domain.value), len(message), len(signature)
    )
    return hashlib.sha256(
        b"".join((header, domain.value, message, signature, public_key))
    ).digest()


BACKGROUND_NICE = 10


def lower_thread_priority() -> None:
    """Thread initializer: this thread yields the CPU to the process's other threads (Linux
    keeps a nice value per thread). Bulk work such as checking the signatures of incoming
    client transactions then waits while the event loop handles votes, proposals and block
    announcements, whose delays make consensus slow (and, on a proof-of-work chain, forks).
    Where the OS refuses, the thread keeps its priority."""
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        # Relative to the process's own nice: setpriority sets an absolute value, and a
        # process already started nicer than that must not get its priority raised.
        nice = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(nice + BACKGROUND_NICE, 19))


class SignatureVerifier:
    def __init__(
        self,
        backend: Backend | str = DEFAULT_BACKEND,
        *,
        cache_size: int = 65_536,
        key_cache_size: int = 4_096,
        workers: int | None = None,
    ) -> None:
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self._verified = _LRU(cache_size)
        self._keys: dict[Algorithm, _LRU] = {a: _LRU(key_cache_size) for a in Algorithm}
        self.workers = workers or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None
        self._background: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._hits = 0
        self._checked = 0
        self._hits_lock = threading.Lock()  # batches run on several threads

    @property
    def cache_hits(self) -> int:
        """How many checks the verified-signature cache answered."""
        return self._hits

    @property
    def checked(self) -> int:
        """How many signatures were checked by the backend (cache misses, valid or not)."""
        return self._checked

    def _key(self, algorithm: Algorithm, raw: bytes) -> PublicKey | None:
        cache = self._keys[algorithm]
        key = cache.get(raw)
        if key is None:
            try:
                key = self.backend.public_key(algorithm, raw)
            except SignatureError:
                return None
            cache.put(raw, key)
        return key  # type: ignore[return-value]

    def verify(
        self, algorithm: Algorithm, public_key: bytes, domain: Domain, message: bytes,
        signature: bytes,
    ) -> bool:
        digest = signature_digest(algorithm, public_key, domain, message, signature)
        if self._verified.get(digest) is not None:
            with self._hits_lock:
                self._hits += 1
            return True
        key = self._key(algorithm, public_key)
        with self._hits_lock:
            self._checked += 1
        if key is None or not key.verify(signature, message, domain.value):
            return False
        self._verified.put(digest, True)
        return True

    def verify_request(self, request: VerifyRequest) -> bool:
        return self.verify(
            request.algorithm, request.public_key, request.domain, request.message,
            request.signature,
        )

    def _executor(self, background: bool = False) -> ThreadPoolExecutor:
        with self._pool_lock:
            if background:
                if self._background is None:
                    self._background = ThreadPoolExecutor(
                        self.workers, thread_name_prefix="verify-bg",
                        initializer=lower_thread_priority)
                return self._background
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="verify")
            return self._pool

    def _chunks(self, requests: Sequence[VerifyRequest]) -> list[Sequence[VerifyRequest]]:
        # One contiguous slice per worker: a future per signature would cost more in pool
        # hand-offs (and GIL round trips) than the split gains.
        if not requests:
            return []
        size = -(-len(requests) // self.workers)
        return [requests[i : i + size] for i in range(0, len(requests), size)]

    def _verify_chunk(self, chunk: Sequence[VerifyRequest]) -> list[bool]:
        return [self.verify_request(r) for r in chunk]

    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[bool]:
        """Checks many signatures on the pool; results are in request order."""
        if len(requests) < 2 or self.workers == 1:
            return self._verify_chunk(requests)
        pool = self._executor()
        results: list[bool] = []
        for part in pool.map(self._verify_chunk, self._chunks(requests)):
            results.extend(part)
        return results

    async def verify_batch_async(self, requests: Sequence[VerifyRequest],
                                 background: bool = False) -> list[bool]:
        """verify_batch without blocking the event loop; ``background`` runs it on threads of
        lower scheduling priority (see ``lower_thread_priority``)."""
        loop = asyncio.get_running_loop()
        pool = self._executor(background)
        parts = await asyncio.gather(
            *(loop.run_in_executor(pool, self._verify_chunk, c) for c in self._chunks(requests))
        )
        return [ok for part in parts for ok in part]

    def close(self) -> None:
        with self._pool_lock:
            for pool in (self._pool, self._background):
                if pool is not None:
                    pool.shutdown(wait=True)
            self._pool = self._background = None

    def __enter__(self) -> SignatureVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
