"""The zero-phase Gaussian low-pass (docs/method.md, "The model": the drive low-pass)."""

import jax.numpy as jnp
import numpy as np
import pytest

from ouroboros_jax.model.lowpass import gaussian_lowpass, gaussian_radius, gaussian_taps


def numpy_lowpass(x, sigma):
    r = max(1, min(round(3 * sigma), len(x) - 1))
    n = np.arange(-r, r + 1)
    taps = np.exp(-0.5 * (n / sigma) ** 2)
    taps /= taps.sum()
    return np.correlate(np.pad(x, r, mode="reflect"), taps, mode="valid")


@pytest.mark.parametrize("sigma,length,radius", [(44.1, 2205, 132), (88.2, 2048, 265), (44.1, 10, 9), (0.2, 50, 1)])
def test_radius_rule(sigma, length, radius):
    assert gaussian_radius(sigma, length) == radius


def test_impulse_response_is_symmetric_and_sums_to_one():
    sigma = 44.1
    x = np.zeros(1001, dtype=np.float32)
    x[500] = 1.0
    y = np.asarray(gaussian_lowpass(jnp.asarray(x), sigma))
    r = gaussian_radius(sigma, 1001)
    np.testing.assert_allclose(y[500 - r : 501 + r], y[500 - r : 501 + r][::-1], atol=1e-9)
    np.testing.assert_allclose(y.sum(), 1.0, rtol=1e-5)
    assert np.argmax(y) == 500  # zero phase: the peak does not move
    np.testing.assert_allclose(y[500 - r : 501 + r], gaussian_taps(sigma, r), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("length", [3, 10, 131, 500])
def test_matches_numpy_including_short_signals(length):
    x = np.random.default_rng(length).standard_normal(length)
    y = np.asarray(gaussian_lowpass(jnp.asarray(x, dtype=jnp.float32), 44.1))
    np.testing.assert_allclose(y, numpy_lowpass(x, 44.1), rtol=1e-5, atol=1e-6)


def test_constant_is_preserved_and_axis_argument():
    x = np.random.default_rng(0).standard_normal((3, 400, 2)).astype(np.float32)
    y = np.asarray(gaussian_lowpass(jnp.asarray(x), 10.0, axis=1))
    np.testing.assert_allclose(y[1, :, 0], numpy_lowpass(x[1, :, 0].astype(np.float64), 10.0), rtol=1e-5, atol=1e-6)
    const = np.asarray(gaussian_lowpass(jnp.full((2, 30), 0.7), 44.1))
    np.testing.assert_allclose(const, 0.7, rtol=1e-6)
