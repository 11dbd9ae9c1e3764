"""The selective state-space (Mamba) encoder stack (docs/method.md, "The model").

A stack is `n_layers` residual blocks `y = MambaBlock(RMSNorm(x)) + x` and nothing else (no
embedding, no final norm). Initialisation follows the reference (mambapy 1.2.0 on PyTorch
defaults): linear and convolution weights uniform in +-1/sqrt(fan_in), `dt_proj` weight uniform
in +-dt_rank^-1/2, `dt_proj` bias the inverse softplus of a log-uniform dt in [1e-3, 1e-1]
floored at 1e-4, `A_log[i, n] = ln(n + 1)`, `D = 1`.

Weights are stored in JAX layout: a linear map's `kernel` is (in, out), the depthwise
convolution's `conv_weight` is (d_conv, d_inner).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ouroboros_jax.model.selective_scan import (
    ScanImpl,
    resolve_scan_impl,
    selective_ssm,
)

_RMS_EPS = 1e-5
_DT_MIN, _DT_MAX, _DT_FLOOR = 1e-3, 1e-1, 1e-4


def uniform_init(bound: float) -> nnx.Initializer:
    """PyTorch's default init for linear/conv layers: U(-bound, bound), bound = fan_in^-1/2."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _inverse_softplus(y: jax.Array) -> jax.Array:
    return y + jnp.log(-jnp.expm1(-y))


class MambaBlock(nnx.Module):
    """One selective-SSM mixer: in_proj, causal depthwise conv + SiLU, selective scan, gate."""

    def __init__(self, d_model: int, d_inner: int, d_state: int, d_conv: int, *, rngs: nnx.Rngs):
        dt_rank = math.ceil(d_model / 16)
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.in_proj = nnx.Linear(
            d_model, 2 * d_inner, use_bias=False, kernel_init=uniform_init(d_model**-0.5), rngs=rngs
        )
        conv_bound = d_conv**-0.5  # fan_in of a depthwise conv = in_channels/groups * width = width
        self.conv_weight = nnx.Param(uniform_init(conv_bound)(rngs.params(), (d_conv, d_inner)))
        self.conv_bias = nnx.Param(uniform_init(conv_bound)(rngs.params(), (d_inner,)))
        self.x_proj = nnx.Linear(
            d_inner, dt_rank + 2 * d_state, use_bias=False, kernel_init=uniform_init(d_inner**-0.5),
            rngs=rngs,
        )
        dt = jnp.exp(
            jax.random.uniform(rngs.params(), (d_inner,)) * (math.log(_DT_MAX) - math.log(_DT_MIN))
            + math.log(_DT_MIN)
        )
        dt_bias = _inverse_softplus(jnp.maximum(dt, _DT_FLOOR))
        self.dt_proj = nnx.Linear(
            dt_rank, d_inner, kernel_init=uniform_init(dt_rank**-0.5),
            bias_init=lambda *_: dt_bias, rngs=rngs,
        )
        self.A_log = nnx.Param(jnp.log(jnp.tile(jnp.arange(1, d_state + 1, dtype=jnp.float32), (d_inner, 1))))
        self.D = nnx.Param(jnp.ones((d_inner,)))
        self.out_proj = nnx.Linear(
            d_inner, d_model, use_bias=False, kernel_init=uniform_init(d_inner**-0.5), rngs=rngs
        )

    def __call__(self, u: jax.Array, scan_impl: ScanImpl = "auto") -> jax.Array:
        """u: (B, T, d_model) -> (B, T, d_model)."""
        xb, zb = self._projected_conv(u)
        xb = jax.nn.silu(xb)
        delta_raw, b, c = jnp.split(self.x_proj(xb), [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        delta = jax.nn.softplus(self.dt_proj(delta_raw))  # (B, T, d_inner)
        y = selective_ssm(delta, xb, -jnp.exp(self.A_log[...]), b, c, scan_impl) + self.D[...][None, None] * xb
        return self.out_proj(y * jax.nn.silu(zb))

    def _projected_conv(self, u: jax.Array):
        """(conv(in_proj_x(u)), in_proj_z(u)), each (B, T, d_inner), as one matrix product.

        The depthwise causal convolution out_t = bias + sum_k w_k * xb_{t - (d_conv-1) + k} of the
        projection xb = u W_x is linear in u, so it equals [u_{t-d_conv+1}, ..., u_t] times
        the (d_conv d_model, d_inner) weights w_k W_x stacked: d_conv d_model = 8 input channels
        instead of convolving d_inner = 20 (measured on CPU at the defaults: a layer's forward +
        backward 69 -> 50 ms, docs/performance.md). The gate z = u_t W_z joins
        as further columns, nonzero in the rows of u_t. Zero padding before t = 0 is exact: the
        projection has no bias.
        """
        w = self.conv_weight[...]  # (d_conv, d_inner)
        kernel = self.in_proj.kernel[...]  # (d_model, 2 d_inner): [W_x | W_z]
        (d_conv, d_inner), (d_model, length) = w.shape, (u.shape[-1], u.shape[1])
        padded = jnp.pad(u, ((0, 0), (d_conv - 1, 0), (0, 0)))
        window = jnp.concatenate([padded[:, k : k + length] for k in range(d_conv)], axis=-1)  # (B, T, d_conv d_model)
        conv_kernel = (w[:, None, :] * kernel[None, :, :d_inner]).reshape(d_conv * d_model, d_inner)
        gate_kernel = jnp.zeros((d_conv * d_model, d_inner), kernel.dtype).at[(d_conv - 1) * d_model :].set(
            kernel[:, d_inner:])
        xz = window @ jnp.concatenate([conv_kernel, gate_kernel], axis=1)
        return xz[..., :d_inner] + self.conv_bias[...][None, None], xz[..., d_inner:]


class RMSNorm(nnx.Module):
    """x / sqrt(mean(x^2) + 1e-5) * g, with g initialised to 1."""

    def __init__(self, d_model: int):
        self.weight = nnx.Param(jnp.ones((d_model,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T, d_model) -> (B, T, d_model)."""
        return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + _RMS_EPS) * self.weight[...][None, None]


class ResidualBlock(nnx.Module):
    def __init__(self, d_model: int, d_inner: int, d_state: int, d_conv: int, *, rngs: nnx.Rngs):
        self.norm = RMSNorm(d_model)
        self.mixer = MambaBlock(d_model, d_inner, d_state, d_conv, rngs=rngs)

    def __call__(self, x: jax.Array, scan_impl: ScanImpl) -> jax.Array:
        if resolve_scan_impl(scan_impl, self.mixer.d_inner) == "numba":
            # The whole block as one kernel: the XLA work around the scan costs more than the scan.
            from ouroboros_jax.model.numba_layer import residual_block

            return residual_block(self, x)
        return self.mixer(self.norm(x), scan_impl) + x


class MambaEncoder(nnx.Module):
    """A stack of residual Mamba blocks mapping (B, T, d_model) -> (B, T, d_model)."""

    def __init__(
        self, d_model: int, n_layers: int, d_state: int, d_conv: int, expand_factor: int, *, rngs: nnx.Rngs
    ):
        d_inner = expand_factor * d_model
        self.layers = nnx.List(
            [ResidualBlock(d_model, d_inner, d_state, d_conv, rngs=rngs) for _ in range(n_layers)]
        )

    def __call__(self, x: jax.Array, scan_impl: ScanImpl = "auto") -> jax.Array:
        for layer in self.layers:
            x = layer(x, scan_impl)
        return x
