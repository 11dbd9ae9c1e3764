"""The selective state-space (Mamba) encoder stack (SPEC a.2).

A stack is `n_layers` residual blocks `y = MambaBlock(RMSNorm(x)) + x` and nothing else (no
embedding, no final norm). Initialisation follows the reference (mambapy 1.2.0 on PyTorch
defaults): linear and convolution weights uniform in +-1/sqrt(fan_in), `dt_proj` weight uniform
in +-dt_rank^-1/2, `dt_proj` bias the inverse softplus of a log-uniform dt in [1e-3, 1e-1]
floored at 1e-4, `A_log[i, n] = ln(n + 1)`, `D = 1`.

Weights are stored in JAX layout: a linear map's `kernel` is (in, out), the depthwise
convolution's `conv_weight` is (d_conv, d_inner).
"""

import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

ScanImpl = Literal["auto", "associative", "sequential", "chunked"]
SCAN_IMPLS = ("auto", "associative", "sequential", "chunked")


def resolve_scan_impl(impl: ScanImpl) -> ScanImpl:
    """"auto" is the fastest measured per backend: "sequential" on CPU (0.95 s against 1.09 s
    for "associative" per default-size training step at H = 2048, docs/performance.md), and
    "associative" on accelerators, where each sequential step costs a fixed ~10 us."""
    if impl != "auto":
        return impl
    return "sequential" if jax.default_backend() == "cpu" else "associative"

_RMS_EPS = 1e-5
_DT_MIN, _DT_MAX, _DT_FLOOR = 1e-3, 1e-1, 1e-4


def uniform_init(bound: float) -> nnx.Initializer:
    """PyTorch's default init for linear/conv layers: U(-bound, bound), bound = fan_in^-1/2."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _inverse_softplus(y: jax.Array) -> jax.Array:
    return y + jnp.log(-jnp.expm1(-y))


def selective_scan(decay: jax.Array, inputs: jax.Array, impl: ScanImpl = "auto") -> jax.Array:
    """Solves h_t = decay_t * h_{t-1} + inputs_t with h_{-1} = 0 along axis 1.

    Args:
      decay: (B, T, D, N), the discretised state matrix exp(delta_t A).
      inputs: (B, T, D, N), the discretised input delta_t B_t x_t.
      impl: "auto" (see `resolve_scan_impl`), "associative" (parallel prefix: O(log T) depth, O(T log T) work), "sequential" (one
        `lax.scan` step per sample) or "chunked" (two levels of ~sqrt(T) vectorised steps). All
        compute the same recurrence and differ only in execution and rounding.

    Returns:
      h: (B, T, D, N).
    """
    impl = resolve_scan_impl(impl)
    if impl == "associative":

        def combine(earlier, later):
            a1, b1 = earlier
            a2, b2 = later
            return a1 * a2, a2 * b1 + b2

        _, h = jax.lax.associative_scan(combine, (decay, inputs), axis=1)
        return h
    if impl == "sequential":
        return _sequential_scan(decay, inputs, axis=1)[0]
    if impl == "chunked":
        return _chunked_scan(decay, inputs)
    raise ValueError(f"unknown selective scan implementation {impl!r}; use one of {SCAN_IMPLS}")


def _sequential_scan(decay: jax.Array, inputs: jax.Array, axis: int):
    """h_t = decay_t h_{t-1} + inputs_t along `axis` by `lax.scan`; also returns prod(decay_0..t).

    Returns:
      (h, cumulative decay), each of the inputs' shape.
    """

    def step(carry, ab):
        h, p = carry
        a, b = ab
        h, p = a * h + b, a * p
        return (h, p), (h, p)

    a, b = jnp.moveaxis(decay, axis, 0), jnp.moveaxis(inputs, axis, 0)
    _, (h, p) = jax.lax.scan(step, (jnp.zeros_like(b[0]), jnp.ones_like(a[0])), (a, b))
    return jnp.moveaxis(h, 0, axis), jnp.moveaxis(p, 0, axis)


def _chunked_scan(decay: jax.Array, inputs: jax.Array) -> jax.Array:
    """Two-level scan: ~2 sqrt(T) sequential steps of O(T) total work, each vectorised.

    The sequence is cut into chunks of ~sqrt(T). Every chunk is scanned from a zero state at once
    (a scan over the position inside the chunk); then the chunks' final states are carried across
    chunks (a short scan), and each chunk adds its incoming state times its cumulative decay.
    """
    batch, length = inputs.shape[:2]
    chunk = max(1, math.isqrt(length))
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    # Padding at the end (decay 1, input 0) cannot change earlier states.
    a = jnp.pad(decay, ((0, 0), (0, pad), (0, 0), (0, 0)), constant_values=1.0)
    b = jnp.pad(inputs, ((0, 0), (0, pad), (0, 0), (0, 0)))
    a = a.reshape(batch, n_chunks, chunk, *a.shape[2:])
    b = b.reshape(batch, n_chunks, chunk, *b.shape[2:])
    local, cumulative = _sequential_scan(a, b, axis=2)  # (B, C, K, D, N)
    carried, _ = _sequential_scan(cumulative[:, :, -1], local[:, :, -1], axis=1)  # state after each chunk
    incoming = jnp.concatenate([jnp.zeros_like(carried[:, :1]), carried[:, :-1]], axis=1)  # (B, C, D, N)
    h = local + cumulative * incoming[:, :, None]
    return h.reshape(batch, n_chunks * chunk, *h.shape[3:])[:, :length]


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
        xb, zb = jnp.split(self.in_proj(u), 2, axis=-1)
        xb = jax.nn.silu(self._causal_conv(xb))
        delta_raw, b, c = jnp.split(self.x_proj(xb), [self.dt_rank, self.dt_rank + self.d_state], axis=-1)
        delta = jax.nn.softplus(self.dt_proj(delta_raw))  # (B, T, d_inner)
        a = -jnp.exp(self.A_log[...])[None, None]  # (1, 1, d_inner, N)
        decay = jnp.exp(delta[..., None] * a)
        inputs = (delta * xb)[..., None] * b[:, :, None, :]
        h = selective_scan(decay, inputs, scan_impl)
        y = jnp.einsum("btdn,btn->btd", h, c) + self.D[...][None, None] * xb
        return self.out_proj(y * jax.nn.silu(zb))

    def _causal_conv(self, xb: jax.Array) -> jax.Array:
        """Depthwise causal convolution: out_t = bias + sum_k w_k * x_{t - (d_conv-1) + k}."""
        w = self.conv_weight[...][:, None, None]  # (d_conv, 1, 1, d_inner)
        d_conv, length = w.shape[0], xb.shape[1]
        padded = jnp.pad(xb, ((0, 0), (d_conv - 1, 0), (0, 0)))
        return self.conv_bias[...][None, None] + sum(w[k] * padded[:, k : k + length] for k in range(d_conv))


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
