"""End to end on digits: the pieces together learn, centrally and in a simulated async FL loop.

Both use momentum 0.9 with the paper's lr 0.01: plain SGD gets there too but needs about three
times the steps (see the learning package report); these tests must stay fast.
"""

from __future__ import annotations

import heapq

import pytest

from dualchain.learning.aggregation import StalenessRule, Update, aggregate_async, check_update
from dualchain.learning.codec import decode_params, encode_params
from dualchain.learning.datasets import Dataset, load_dataset
from dualchain.learning.models import build_model, get_flat, param_shapes, set_flat
from dualchain.learning.partition import partition
from dualchain.learning.training import evaluate, train_central, train_local


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


def test_central_digits(digits: Dataset) -> None:
    history = train_central(digits, epochs=6, seed=0, momentum=0.9)
    assert len(history) == 6
    accuracy, loss = history[-1]
    assert accuracy >= 0.95 and loss < history[0][1]


def test_simulated_async_fl_digits(digits: Dataset) -> None:
    """8 IID clients of different speeds; every 4 arrivals make a version (so updates go stale)."""
    clients, per_version, versions, batches = 8, 4, 15, 10
    parts = partition(digits.train_y, clients, "iid", seed=0)
    duration = [batches * (1.0 + 0.25 * c) for c in range(clients)]  # simulated seconds per task
    rule = StalenessRule("eq2", max_staleness=8)
    model = build_model("digits", digits.num_classes, seed=0)
    shapes = param_shapes(model)
    history = {0: get_flat(model)}
    local = build_model("digits", digits.num_classes, seed=0)
    pending: list[tuple[float, int, int, bytes, int]] = []
    tasks = 0

    def start(client: int, now: float) -> None:
        nonlocal tasks
        version = len(history) - 1
        set_flat(local, history[version])
        x, y = digits.train_x[parts[client]], digits.train_y[parts[client]]
        stats = train_local(local, x, y, batches=batches, seed=tasks, momentum=0.9)
        tasks += 1
        # The upload travels encoded, as it would on the wire.
        blob = encode_params(get_flat(local) - history[version], shapes)
        heapq.heappush(pending, (now + duration[client], client, version, blob, stats.samples))

    for client in range(clients):
        start(client, 0.0)
    window: list[Update] = []
    staleness: list[int] = []
    while len(history) <= versions:
        now, client, base, blob, samples = heapq.heappop(pending)
        delta = decode_params(blob).flat
        check_update(delta, delta.size, max_norm=1e3)
        window.append(Update(bytes([client]), base, samples, delta))
        if len(window) == per_version:
            current = len(history) - 1
            staleness += [current - u.base_version for u in window]
            history[current + 1] = aggregate_async(history[current], window, current, rule).params
            window = []
        start(client, now)

    assert max(staleness) >= 1  # the loop really was asynchronous
    set_flat(model, history[versions])
    accuracy, _ = evaluate(model, digits.test_x, digits.test_y)
    assert accuracy >= 0.92
