"""Zero-phase Gaussian low-pass along time (SPEC a.4; also the envelope filter of SPEC c.6).

Taps exp(-(n/sigma)^2 / 2) for n = -r..r, normalised to sum 1; the signal is reflect-padded by r
(edge sample not repeated) and correlated, so the output has the input's length and no phase
shift. The radius is round(3 sigma), capped at L - 1 so reflect padding is always possible
(DESIGN.md decision 5) and floored at 1.
"""

import jax
import jax.numpy as jnp
import numpy as np


def gaussian_radius(sigma: float, length: int) -> int:
    """Filter radius in samples: max(1, min(round(3 sigma), length - 1))."""
    return max(1, min(round(3.0 * sigma), length - 1))


def gaussian_taps(sigma: float, radius: int) -> np.ndarray:
    """Normalised Gaussian taps, shape (2 radius + 1,), float64."""
    n = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (n / sigma) ** 2)
    return taps / taps.sum()


def gaussian_lowpass(x: jax.Array, sigma: float, axis: int = -1) -> jax.Array:
    """Zero-phase Gaussian smoothing of `x` along `axis`.

    Args:
      x: any shape with at least 2 samples along `axis`.
      sigma: standard deviation in samples (static).
      axis: the time axis.

    Returns:
      Array of x's shape and dtype.
    """
    x = jnp.moveaxis(x, axis, -1)
    lead, length = x.shape[:-1], x.shape[-1]
    radius = gaussian_radius(sigma, length)
    taps = jnp.asarray(gaussian_taps(sigma, radius), dtype=x.dtype)
    flat = x.reshape(-1, 1, length)
    padded = jnp.pad(flat, ((0, 0), (0, 0), (radius, radius)), mode="reflect")
    # The taps are symmetric, so XLA's correlation is the convolution we want.
    out = jax.lax.conv_general_dilated(
        padded, taps[None, None, :], window_strides=(1,), padding="VALID",
        precision=jax.lax.Precision.HIGHEST,
    )
    return jnp.moveaxis(out.reshape(*lead, length), -1, axis)
