"""The polynomial kernel K = sum_ij W[i, j] x^i (x')^j and its structural zeros (docs/method.md, "The model")."""

import jax
import jax.numpy as jnp
import numpy as np


def power_vector(u: jax.Array, size: int) -> jax.Array:
    """[1, u, u^2, ..., u^(size-1)] along a new last axis. u: (...) -> (..., size).

    Built by repeated multiplication, not `u ** arange`, whose gradient is NaN at u = 0 (digital
    silence and zero-velocity initial conditions are exactly 0).
    """
    powers = [jnp.ones_like(u)]
    for _ in range(size - 1):
        powers.append(powers[-1] * u)
    return jnp.stack(powers, axis=-1)


def kernel_value(weights: jax.Array, x: jax.Array, v: jax.Array) -> jax.Array:
    """K = sum_ij W[i, j] x^i v^j. weights: (..., P, P); x, v: (...) -> (...)."""
    size = weights.shape[-1]
    return jnp.einsum("...ij,...i,...j->...", weights, power_vector(x, size), power_vector(v, size))


def structural_mask(size: int, keep_const: bool) -> np.ndarray:
    """(P, P) mask of the coefficients the model may use.

    W[1, 0] and W[0, 1] are always 0 (the linear terms belong to omega and gamma); W[0, 0], a
    constant forcing, is kept only with `keep_const`.
    """
    mask = np.ones((size, size), dtype=np.float32)
    mask[1, 0] = mask[0, 1] = 0.0
    if not keep_const:
        mask[0, 0] = 0.0
    return mask
