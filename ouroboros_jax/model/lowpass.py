"""Zero-phase Gaussian low-pass along time: the drive low-pass, and the envelope filter of the objective.

Taps exp(-(n/sigma)^2 / 2) for n = -r..r, normalised to sum 1; the signal is reflect-padded by r
(edge sample not repeated) and correlated, so the output has the input's length and no phase
shift. The radius is round(3 sigma), capped at L - 1 so reflect padding is always possible
and floored at 1 (docs/method.md, "The model" and "Objective").

With a traced `length` the signal is the first `length` samples of a longer buffer (a rollout
whose horizon is data, not shape): the reflection happens at sample length - 1, and outputs past
it are left for the caller to mask.
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


def reflect_indices(n_padded: int, pad: int, length):
    """Which sample each position of a reflect-padded signal reads (edge sample not repeated).

    Position p of the signal padded by `pad` on the left reads sample |p - pad|, reflected at
    `length` - 1. Positions that reflect past sample 0 (only past a traced `length`, where the
    caller masks them) read sample 0.

    Args:
      n_padded: number of positions (static).
      pad: left padding (static).
      length: number of valid samples: a Python int (NumPy indices) or a traced scalar.

    Returns:
      (n_padded,) integer indices.
    """
    xp = np if isinstance(length, int) else jnp
    i = xp.abs(xp.arange(n_padded) - pad)
    return xp.maximum(xp.where(i > length - 1, 2 * (length - 1) - i, i), 0)


def gaussian_lowpass(x: jax.Array, sigma: float, axis: int = -1, length=None) -> jax.Array:
    """Zero-phase Gaussian smoothing of `x` along `axis`.

    Args:
      x: any shape with at least 2 samples along `axis`.
      sigma: standard deviation in samples (static).
      axis: the time axis.
      length: None (the whole axis), or a traced number of valid samples n <= x.shape[axis];
        the radius is that of the whole axis and must not exceed n - 1 (the caller's promise).

    Returns:
      Array of x's shape and dtype; with `length`, entries at n and beyond are meaningless.
    """
    x = jnp.moveaxis(x, axis, -1)
    lead, size = x.shape[:-1], x.shape[-1]
    radius = gaussian_radius(sigma, size)
    taps = jnp.asarray(gaussian_taps(sigma, radius), dtype=x.dtype)
    flat = x.reshape(-1, 1, size)
    if length is None:
        padded = jnp.pad(flat, ((0, 0), (0, 0), (radius, radius)), mode="reflect")
    else:
        padded = flat[..., reflect_indices(size + 2 * radius, radius, length)]
    # The taps are symmetric, so XLA's correlation is the convolution we want.
    out = jax.lax.conv_general_dilated(
        padded, taps[None, None, :], window_strides=(1,), padding="VALID",
        precision=jax.lax.Precision.HIGHEST,
    )
    return jnp.moveaxis(out.reshape(*lead, size), -1, axis)
