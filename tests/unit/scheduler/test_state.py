"""eq. 8: the weighted, min-max normalised state vector."""

from __future__ import annotations

import numpy as np
import pytest

from dualchain.scheduler import ClientState, StateWeights, gamma


def _state(i: int, rtt: float, fin: float, speed: float, mu: float = 0.0) -> ClientState:
    return ClientState(bytes([i]), rtt, fin, speed, mu)


def test_columns_are_min_max_normalised_then_weighted() -> None:
    states = [_state(1, 0.1, 10.0, 1.0, 0.5), _state(2, 0.3, 5.0, 3.0, 0.0),
              _state(3, 0.2, 0.0, 2.0, 1.0)]
    g = gamma(states, StateWeights(0.5, 0.25, 0.25))
    expected = np.array([
        [0.0, 0.25, 0.0, 0.5],
        [0.5, 0.125, 0.25, 0.0],
        [0.25, 0.0, 0.125, 1.0],
    ])
    assert g.shape == (3, 4)
    np.testing.assert_allclose(g, expected, atol=1e-12)


def test_rows_follow_the_input_order() -> None:
    a, b = _state(1, 0.1, 1.0, 1.0), _state(2, 0.5, 2.0, 4.0)
    np.testing.assert_array_equal(gamma([a, b])[::-1], gamma([b, a]))


def test_constant_column_becomes_zero() -> None:
    g = gamma([_state(1, 0.2, 3.0, 1.0), _state(2, 0.2, 4.0, 1.0)])
    assert np.all(g[:, 0] == 0.0) and np.all(g[:, 2] == 0.0)
    np.testing.assert_allclose(g[:, 1], [0.0, round(1 / 3, 9)])


def test_single_and_empty_inputs() -> None:
    np.testing.assert_array_equal(gamma([_state(1, 0.2, 3.0, 1.0, 0.25)]), [[0, 0, 0, 0.25]])
    assert gamma([]).shape == (0, 4)


def test_values_are_rounded_to_nine_decimals() -> None:
    g = gamma([_state(1, 0.0, 0.0, 0.0), _state(2, 1.0, 1.0, 1.0), _state(3, 1 / 3, 0.0, 0.0)])
    assert np.array_equal(g, np.round(g, 9))
    assert g[2, 0] == round(1 / 9, 9)


def test_default_weights_are_equal_thirds() -> None:
    w = StateWeights()
    assert w.rtt == w.completion == w.speed == pytest.approx(1 / 3)


@pytest.mark.parametrize("parts", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1), (0.3, 0.3, 0.3)])
def test_weights_must_be_non_negative_and_sum_to_one(parts: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        StateWeights(*parts)


def test_weights_on_the_simplex_are_accepted() -> None:
    StateWeights(1.0, 0.0, 0.0)
    StateWeights(0.2, 0.3, 0.5)
