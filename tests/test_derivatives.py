"""The 9-point derivative stencils (docs/method.md, "The model")."""

import math

import numpy as np
import pytest

from ouroboros_jax.objective.derivatives import first_derivative, second_derivative

EDGE = 4  # samples at each end that see the mirrored padding


@pytest.mark.parametrize("degree", range(0, 9))
def test_first_derivative_exact_on_polynomials_up_to_degree_8(degree):
    t = np.arange(60, dtype=np.float64) / 10.0 - 3.0
    coeffs = np.random.default_rng(degree).standard_normal(degree + 1)
    x = np.polyval(coeffs, t)
    expected = np.polyval(np.polyder(coeffs), t) * 0.1  # per sample: d/dn = d/dt * dt/dn
    np.testing.assert_allclose(first_derivative(x)[EDGE:-EDGE], expected[EDGE:-EDGE], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("degree", range(0, 10))
def test_second_derivative_exact_on_polynomials_up_to_degree_9(degree):
    t = np.arange(60, dtype=np.float64) / 10.0 - 3.0
    coeffs = np.random.default_rng(degree).standard_normal(degree + 1)
    x = np.polyval(coeffs, t)
    expected = np.polyval(np.polyder(coeffs, 2), t) * 0.01 if degree >= 2 else np.zeros_like(t)
    np.testing.assert_allclose(second_derivative(x)[EDGE:-EDGE], expected[EDGE:-EDGE], rtol=1e-8, atol=1e-8)


def test_first_derivative_is_not_exact_beyond_its_order():
    t = np.arange(60, dtype=np.float64) / 10.0 - 3.0
    x = t**9
    err = first_derivative(x)[EDGE:-EDGE] - 9 * t[EDGE:-EDGE] ** 8 * 0.1
    # The leading error term is -h^8 f^(9) / 630 per unit step: 9! / 630 * 0.1^9 here.
    np.testing.assert_allclose(err, -math.factorial(9) / 630 * 1e-9, rtol=1e-3)


def test_edges_mirror_including_the_edge_sample():
    x = np.random.default_rng(0).standard_normal(20)
    padded = np.concatenate([x[3::-1], x, x[:-5:-1]])  # x3 x2 x1 x0 | x | x_{L-1} ... x_{L-4}
    c = np.array([3, -32, 168, -672, 0, 672, -168, 32, -3]) / 840.0
    naive = np.array([np.dot(c, padded[t : t + 9]) for t in range(20)])
    np.testing.assert_allclose(first_derivative(x), naive, rtol=1e-12, atol=1e-14)


def test_batched_over_leading_axes():
    x = np.random.default_rng(1).standard_normal((3, 2, 50))
    out = first_derivative(x)
    assert out.shape == x.shape
    np.testing.assert_allclose(out[1, 1], first_derivative(x[1, 1]))


def test_golden_parity(golden):
    x = golden["small/input/x"]
    np.testing.assert_allclose(first_derivative(x), golden["small/input/dxdt"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(second_derivative(x), golden["small/input/d2x"], rtol=1e-5, atol=1e-7)
