"""ML-DSA throughput per backend and parameter set, and the cost of dualchain's verify wrapper.

For every available backend and parameter set this measures keygen/s, sign/s and verify/s on one
thread, sign/s and verify/s on a thread pool of ``workers`` threads (both backends release the GIL),
and compares the raw library's verify with the API path (``SignatureVerifier`` with its cache off:
digest, key lookup, verify). Raw and API are measured in alternating rounds and the median of the
per-round rates is reported, with the median of the paired per-round ratios as api_over_raw.

`dualchain bench crypto --json` prints the result.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dualchain.chain.errors import BackendUnavailableError
from dualchain.chain.identity import Domain
from dualchain.chain.mldsa import BACKENDS, Algorithm, Backend, get_backend
from dualchain.chain.verifier import SignatureVerifier, VerifyRequest

MESSAGE_BYTES = 200
DOMAIN = Domain.TRANSACTION
ROUNDS = 11  # alternating raw/API rounds; odd, so the median is one paired round
BATCH = 64  # requests per verify_batch / sign batch on the pool


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (one warm-up call first)."""
    fn()
    count = 0
    chunk = 1
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        chunk_start = time.perf_counter()
        for _ in range(chunk):
            fn()
        count += chunk
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)
        if now - chunk_start < 0.002:
            chunk *= 2  # amortise the clock reads for very fast calls (cache hits)


def _batch_rate(run_batch: Callable[[], object], batch: int, seconds: float) -> float:
    """Items per second of a function that processes ``batch`` items per call."""
    return _rate(run_batch, seconds) * batch


def _alternating(
    first: Callable[[], object], second: Callable[[], object], seconds: float, rounds: int
) -> tuple[list[float], list[float]]:
    """Per-round rates of two functions in interleaved rounds (order swapped each round)."""
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            a.append(_rate(first, seconds))
            b.append(_rate(second, seconds))
        else:
            b.append(_rate(second, seconds))
            a.append(_rate(first, seconds))
    return a, b


def _raw_verifier(backend: Backend, algorithm: Algorithm, public_key: bytes) -> Callable[..., Any]:
    """The underlying library's own verify for ``public_key``, with no dualchain wrapper.

    Returns ``verify(signature, message, context)``; it raises or returns False on a bad signature,
    as the library does.
    """
    if backend.name == "cryptography":
        from cryptography.hazmat.primitives.asymmetric import mldsa

        classes = {
            Algorithm.ML_DSA_44: mldsa.MLDSA44PublicKey,
            Algorithm.ML_DSA_65: mldsa.MLDSA65PublicKey,
            Algorithm.ML_DSA_87: mldsa.MLDSA87PublicKey,
        }
        return classes[algorithm].from_public_bytes(public_key).verify
    if backend.name == "liboqs":
        import oqs  # only reached when the backend is available, i.e. the library was found

        handle = oqs.Signature(algorithm.label)

        def verify(signature: bytes, message: bytes, context: bytes) -> bool:
            return bool(handle.verify_with_ctx_str(message, signature, context, public_key))

        return verify
    raise BackendUnavailableError(f"no raw verify known for backend {backend.name!r}")


def _r(value: float) -> float:
    return round(value, 1)


def _bench_algorithm(
    backend: Backend, algorithm: Algorithm, seconds: float, workers: int
) -> dict[str, Any]:
    seeds = [os.urandom(32) for _ in range(16)]
    seed_index = iter(range(1 << 62))
    key = backend.private_key_from_seed(algorithm, seeds[0])
    context = DOMAIN.value
    messages = [os.urandom(MESSAGE_BYTES) for _ in range(BATCH)]
    message = messages[0]
    signature = key.sign(message, context)
    signatures = [key.sign(m, context) for m in messages]
    public = backend.public_key(algorithm, key.public_key)
    if not public.verify(signature, message, context):
        raise RuntimeError(f"{backend.name} {algorithm.label}: a fresh signature does not verify")

    def keygen() -> object:
        return backend.private_key_from_seed(algorithm, seeds[next(seed_index) % len(seeds)])

    result: dict[str, Any] = {
        "public_key_bytes": algorithm.public_key_bytes,
        "signature_bytes": algorithm.signature_bytes,
        "single_thread": {
            "keygen_per_s": _r(_rate(keygen, seconds)),
            "sign_per_s": _r(_rate(lambda: key.sign(message, context), seconds)),
            "verify_per_s": _r(_rate(lambda: public.verify(signature, message, context), seconds)),
        },
    }

    # All cores: a thread pool for signing, SignatureVerifier.verify_batch for verification.
    requests = [
        VerifyRequest(algorithm, key.public_key, DOMAIN, m, s)
        for m, s in zip(messages, signatures, strict=True)
    ]
    with ThreadPoolExecutor(workers, thread_name_prefix="bench-sign") as pool:
        sign_mt = _batch_rate(
            lambda: list(pool.map(lambda m: key.sign(m, context), messages)), BATCH, seconds
        )
    with SignatureVerifier(backend, cache_size=0, workers=workers) as pooled:
        results = pooled.verify_batch(requests)
        if not all(results):
            raise RuntimeError(f"{backend.name} {algorithm.label}: batch verification failed")
        verify_mt = _batch_rate(lambda: pooled.verify_batch(requests), BATCH, seconds)
    result["all_cores"] = {
        "threads": workers,
        "sign_per_s": _r(sign_mt),
        "verify_per_s": _r(verify_mt),
    }

    # Raw library verify against the uncached API path, in alternating rounds.
    raw_verify = _raw_verifier(backend, algorithm, key.public_key)
    raw_verify(signature, message, context)  # raises if the raw call is wired wrongly
    api = SignatureVerifier(backend, cache_size=0, workers=1)
    if not api.verify(algorithm, key.public_key, DOMAIN, message, signature):
        raise RuntimeError(f"{backend.name} {algorithm.label}: API verify failed")
    round_seconds = seconds / 4
    raw_rates, api_rates = _alternating(
        lambda: raw_verify(signature, message, context),
        lambda: api.verify(algorithm, key.public_key, DOMAIN, message, signature),
        round_seconds,
        ROUNDS,
    )
    raw_median = statistics.median(raw_rates)
    api_median = statistics.median(api_rates)
    # Each round measures raw and API back to back, so their ratio cancels slow drift of the
    # machine (frequency, neighbours); the median of the paired ratios is the headline figure.
    paired = statistics.median(a / r for a, r in zip(api_rates, raw_rates, strict=True))

    cached = SignatureVerifier(backend, workers=1)
    cached.verify(algorithm, key.public_key, DOMAIN, message, signature)
    hits_before = cached.cache_hits
    cached_rate = _rate(
        lambda: cached.verify(algorithm, key.public_key, DOMAIN, message, signature),
        seconds / 2,
    )
    if cached.cache_hits == hits_before:
        raise RuntimeError("the cached-hit measurement did not hit the cache")

    result["api_overhead"] = {
        "rounds": ROUNDS,
        "round_seconds": round_seconds,
        "raw_verify_per_s": _r(raw_median),
        "api_verify_per_s": _r(api_median),
        "api_over_raw": round(paired, 4),
        "raw_rounds_per_s": [_r(r) for r in raw_rates],
        "api_rounds_per_s": [_r(r) for r in api_rates],
        "cached_hit_verify_per_s": _r(cached_rate),
    }
    return result


def _machine() -> dict[str, Any]:
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend as openssl

    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cryptography": cryptography.__version__,
        "openssl": openssl.openssl_version_text(),
    }


def crypto_benchmark(
    seconds: float = 1.0,
    backends: list[str] | None = None,
    algorithms: list[Algorithm] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Measures every requested backend and parameter set; returns a JSON-serialisable dict.

    ``seconds`` is the length of each single measurement (each raw/API round lasts half of it);
    the default run takes about 10 s per backend and parameter set. Backends that cannot run here
    are reported with their reason.
    """
    cpu_count = os.cpu_count() or 1
    workers = workers or cpu_count
    names = list(BACKENDS) if backends is None else list(backends)
    chosen = list(Algorithm) if algorithms is None else list(algorithms)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": _machine(),
        "settings": {
            "seconds": seconds,
            "workers": workers,
            "message_bytes": MESSAGE_BYTES,
            "context": DOMAIN.value.decode(),
            "algorithms": [a.label for a in chosen],
        },
        "backends": {},
    }
    for name in names:
        try:
            backend = get_backend(name)
        except BackendUnavailableError as exc:
            report["backends"][name] = {"available": False, "reason": exc.reason}
            continue
        report["backends"][name] = {
            "available": True,
            "algorithms": {
                alg.label: _bench_algorithm(backend, alg, seconds, workers) for alg in chosen
            },
        }
    report["elapsed_s"] = round(time.perf_counter() - started, 2)
    return report
