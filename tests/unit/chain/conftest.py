"""Fixtures of the chain tests: ``backend``, every ML-DSA backend in turn (an unavailable one is
skipped with its reason)."""

from __future__ import annotations

from typing import Any

import pytest

from dualchain.chain.mldsa import Backend, available_backends, get_backend


def backend_params() -> list[Any]:
    """One pytest param per known backend; unavailable ones are skipped with their reason."""
    params = []
    for name, reason in available_backends().items():
        marks = [] if reason is None else [pytest.mark.skip(reason=f"{name}: {reason}")]
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.fixture(params=backend_params())
def backend(request: pytest.FixtureRequest) -> Backend:
    return get_backend(request.param)
