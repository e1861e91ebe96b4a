"""Structure of the crypto benchmark's report (no timing assertions)."""

from __future__ import annotations

import json
import statistics

from dualchain.bench.crypto import crypto_benchmark
from dualchain.chain.mldsa import BACKENDS, Algorithm, available_backends


def _positive(value: object) -> bool:
    return isinstance(value, float | int) and value > 0


def test_crypto_benchmark_report() -> None:
    report = crypto_benchmark(seconds=0.05, algorithms=[Algorithm.ML_DSA_44])
    assert json.loads(json.dumps(report)) == report  # JSON-serialisable as is

    machine = report["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"].startswith("3.")
    assert machine["cryptography"]
    assert report["settings"]["algorithms"] == ["ML-DSA-44"]
    assert report["settings"]["workers"] >= 1

    found = available_backends()
    assert set(report["backends"]) == set(BACKENDS)
    for name, entry in report["backends"].items():
        if found[name] is not None:
            assert entry == {"available": False, "reason": found[name]}
            continue
        assert entry["available"] is True
        assert set(entry["algorithms"]) == {"ML-DSA-44"}
        result = entry["algorithms"]["ML-DSA-44"]
        single, pooled, overhead = (
            result["single_thread"], result["all_cores"], result["api_overhead"]
        )
        for key in ("keygen_per_s", "sign_per_s", "verify_per_s"):
            assert _positive(single[key]), key
        assert pooled["threads"] == report["settings"]["workers"]
        for key in ("sign_per_s", "verify_per_s"):
            assert _positive(pooled[key]), key
        for key in ("raw_verify_per_s", "api_verify_per_s", "api_over_raw",
                    "cached_hit_verify_per_s"):
            assert _positive(overhead[key]), key
        assert len(overhead["raw_rounds_per_s"]) == len(overhead["api_rounds_per_s"])
        assert len(overhead["raw_rounds_per_s"]) == overhead["rounds"]
        assert all(map(_positive, overhead["raw_rounds_per_s"] + overhead["api_rounds_per_s"]))
        paired = statistics.median(
            a / r for a, r in zip(overhead["api_rounds_per_s"], overhead["raw_rounds_per_s"],
                                  strict=True)
        )
        # Rounds are reported rounded to 0.1/s, hence the tolerance.
        assert abs(overhead["api_over_raw"] - paired) < 0.01


def test_crypto_benchmark_unknown_backend_reported() -> None:
    report = crypto_benchmark(seconds=0.01, backends=["nope"], algorithms=[Algorithm.ML_DSA_44])
    assert report["backends"]["nope"]["available"] is False
    assert "nope" in report["backends"]["nope"]["reason"]
