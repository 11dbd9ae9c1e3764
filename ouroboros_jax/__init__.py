"""ouroboros_jax: the polynomial Ouroboros neural ODE of birdsong in JAX/Flax."""

from ouroboros_jax.derivatives import first_derivative, second_derivative
from ouroboros_jax.errors import InputError
from ouroboros_jax.model.lowpass import gaussian_lowpass

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "first_derivative",
    "gaussian_lowpass",
    "second_derivative",
]
