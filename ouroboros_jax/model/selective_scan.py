"""The selective state-space recurrence of a Mamba layer, computed several ways (docs/method.md, "The model").

For one layer, with delta: (B, T, D), x: (B, T, D), A: (D, N), Bt, Ct: (B, T, N),

    h_t = exp(delta_t A) * h_{t-1} + (delta_t x_t) B_t,    h_{-1} = 0,    y_t = h_t . C_t,

h_t: (B, D, N), y: (B, T, D). Every implementation computes exactly this and differs only in
execution and rounding (all are checked against one naive float64 loop in the tests):

- "sequential", "associative", "chunked" form the discretised decay exp(delta A) and input
  delta x B as (B, T, D, N) arrays, solve the linear recurrence (`linear_recurrence`) and
  contract with C; JAX differentiates them.
- "fused" (`fused_selective_ssm`) never forms a (B, T, D, N) array outside its loop: one
  time-major `lax.scan` discretises, updates the state and emits y_t per sample, and its
  `jax.custom_vjp` backward is a reverse-time scan of the adjoint.
- "pallas" (`ouroboros_jax.model.pallas_scan`) is the fused scan as a Pallas kernel, for GPUs.
- "numba" (`ouroboros_jax.model.numba_scan`) is the fused scan as a Numba kernel on all CPU
  cores, behind a host callback (`ouroboros_jax.model.host_call`). `ResidualBlock` with "numba" runs
  the whole block as one kernel (`numba_layer`) instead.
"""

import math
from typing import Literal

import jax
import jax.numpy as jnp

ScanImpl = Literal["auto", "associative", "sequential", "chunked", "fused", "pallas", "numba"]
SCAN_IMPLS = ("auto", "associative", "sequential", "chunked", "fused", "pallas", "numba")


# "auto" on CPU takes the numba block kernels from this inner width (expand_factor * d_model) on.
# Their time hardly grows with the width (a block's per-sample work is mostly independent of it),
# the fused XLA scan's grows linearly: one block's forward + backward at B 8, T 1600 took 6-10 ms
# with numba at every d_inner from 4 to 20, with fused 5.5 ms at d_inner 4, 6.1 at 8, 8.7 at 10,
# 14.4 at 20 (docs/performance.md, "Which kernels auto picks").
NUMBA_MIN_D_INNER = 10


def resolve_scan_impl(impl: ScanImpl, d_inner: int, backend: str | None = None) -> ScanImpl:
    """The implementation `impl` stands for in encoders of inner width `d_inner`: "auto" is the
    fastest measured on the backend (docs/performance.md): on CPU "numba" from
    `NUMBA_MIN_D_INNER` on, else "fused"; "associative" on accelerators, where a sequential step
    costs a fixed ~10 us (not yet measured against "pallas" on a GPU)."""
    if impl != "auto":
        return impl
    if (backend or jax.default_backend()) != "cpu":
        return "associative"
    return "numba" if d_inner >= NUMBA_MIN_D_INNER else "fused"


def selective_ssm(delta: jax.Array, x: jax.Array, A: jax.Array, Bt: jax.Array, Ct: jax.Array,
                  impl: ScanImpl = "auto") -> jax.Array:
    """y of the selective recurrence (module docstring).

    Args:
      delta: (B, T, D) step sizes (> 0).
      x: (B, T, D) inputs.
      A: (D, N) state matrix (negative).
      Bt, Ct: (B, T, N) input and output projections.
      impl: one of `SCAN_IMPLS`.

    Returns:
      y: (B, T, D).
    """
    impl = resolve_scan_impl(impl, delta.shape[-1])
    if impl == "fused":
        return fused_selective_ssm(delta, x, A, Bt, Ct)
    if impl == "pallas":
        from ouroboros_jax.model.pallas_scan import pallas_selective_ssm

        return pallas_selective_ssm(delta, x, A, Bt, Ct)
    if impl == "numba":
        from ouroboros_jax.model.numba_scan import numba_selective_ssm

        return numba_selective_ssm(delta, x, A, Bt, Ct)
    decay = jnp.exp(delta[..., None] * A[None, None])
    inputs = (delta * x)[..., None] * Bt[:, :, None, :]
    return jnp.einsum("btdn,btn->btd", linear_recurrence(decay, inputs, impl), Ct)


def linear_recurrence(decay: jax.Array, inputs: jax.Array, impl: ScanImpl = "sequential") -> jax.Array:
    """Solves h_t = decay_t * h_{t-1} + inputs_t with h_{-1} = 0 along axis 1.

    Args:
      decay, inputs: (B, T, D, N).
      impl: "associative" (parallel prefix: O(log T) depth, O(T log T) work), "sequential" (one
        `lax.scan` step per sample) or "chunked" (two levels of ~sqrt(T) vectorised steps).

    Returns:
      h: (B, T, D, N).
    """
    if impl == "associative":

        def combine(earlier, later):
            a1, b1 = earlier
            a2, b2 = later
            return a1 * a2, a2 * b1 + b2

        _, h = jax.lax.associative_scan(combine, (decay, inputs), axis=1)
        return h
    if impl == "sequential":
        return _sequential_recurrence(decay, inputs, axis=1)[0]
    if impl == "chunked":
        return _chunked_recurrence(decay, inputs)
    raise ValueError(f"unknown selective scan implementation {impl!r}; use one of {SCAN_IMPLS}")


def _sequential_recurrence(decay: jax.Array, inputs: jax.Array, axis: int):
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


def _chunked_recurrence(decay: jax.Array, inputs: jax.Array) -> jax.Array:
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
    local, cumulative = _sequential_recurrence(a, b, axis=2)  # (B, C, K, D, N)
    carried, _ = _sequential_recurrence(cumulative[:, :, -1], local[:, :, -1], axis=1)  # state after each chunk
    incoming = jnp.concatenate([jnp.zeros_like(carried[:, :1]), carried[:, :-1]], axis=1)  # (B, C, D, N)
    h = local + cumulative * incoming[:, :, None]
    return h.reshape(batch, n_chunks * chunk, *h.shape[3:])[:, :length]


# The fused scan works time-major with the state as (N, B, D): D is the innermost (vectorised)
# axis, where N = 4 innermost would leave most of each vector register empty.


def _time_major(delta, x, Bt, Ct):
    """(B, T, D) -> (T, B, D) and (B, T, N) -> (T, N, B)."""
    return (jnp.swapaxes(delta, 0, 1), jnp.swapaxes(x, 0, 1),
            jnp.transpose(Bt, (1, 2, 0)), jnp.transpose(Ct, (1, 2, 0)))


def _fused_forward(delta_t, x_t, A_nd, B_t, C_t):
    """The forward scan. delta_t, x_t: (T, B, D); A_nd: (N, 1, D); B_t, C_t: (T, N, B).

    Returns:
      y: (T, B, D) and the states h: (T, N, B, D).
    """

    def step(h, inputs):
        delta, x, b, c = inputs
        h = jnp.exp(delta[None] * A_nd) * h + (delta * x)[None] * b[:, :, None]
        return h, (jnp.sum(h * c[:, :, None], axis=0), h)

    h0 = jnp.zeros((A_nd.shape[0],) + delta_t.shape[1:], delta_t.dtype)
    _, (y, h) = jax.lax.scan(step, h0, (delta_t, x_t, B_t, C_t))
    return y, h


@jax.custom_vjp
def fused_selective_ssm(delta: jax.Array, x: jax.Array, A: jax.Array, Bt: jax.Array, Ct: jax.Array) -> jax.Array:
    """The selective recurrence as one fused time scan with a hand-written reverse-time VJP.

    Shapes as in `selective_ssm`. The forward pass keeps only the state h_t, (N, B, D) per step,
    in the loop; discretisation and y_t = C_t . h_t happen in the loop body. For the backward
    pass it saves the states h: (T, N, B, D) (4 B T D N bytes, 11 MB per layer at the reference
    defaults B 8, T 4410, D 20, N 4) and recomputes the decay exp(delta_t A) per step. The
    backward is one reverse-time scan carrying the adjoint

        lambda_t = C_t gy_t + exp(delta_{t+1} A) lambda_{t+1}

    (as mu_t = exp(delta_t A) lambda_t) and the running gradient of A, and forming the
    gradients of delta, x, B and C of step t in the loop body from lambda_t, h_t and h_{t-1}.
    """
    y, _ = _fused_forward(*_fused_inputs(delta, x, A, Bt, Ct))
    return jnp.swapaxes(y, 0, 1)


def _fused_inputs(delta, x, A, Bt, Ct):
    delta_t, x_t, B_t, C_t = _time_major(delta, x, Bt, Ct)
    return delta_t, x_t, A.T[:, None, :], B_t, C_t


def _fused_fwd(delta, x, A, Bt, Ct):
    delta_t, x_t, A_nd, B_t, C_t = _fused_inputs(delta, x, A, Bt, Ct)
    y, h = _fused_forward(delta_t, x_t, A_nd, B_t, C_t)
    return jnp.swapaxes(y, 0, 1), (delta_t, x_t, A_nd, B_t, C_t, h)


def _fused_bwd(residuals, gy):
    delta_t, x_t, A_nd, B_t, C_t, h = residuals
    h_prev = jnp.concatenate([jnp.zeros_like(h[:1]), h[:-1]], axis=0)

    def step(carry, inputs):
        mu, g_A = carry  # mu = exp(delta_{t+1} A) lambda_{t+1}
        delta, x, b, c, g, h_t, h_before = inputs  # (B, D) x2, (N, B) x2, (B, D), (N, B, D) x2
        lam = mu + g[None] * c[:, :, None]
        decay = jnp.exp(delta[None] * A_nd)
        q = lam * decay * h_before  # d loss / d (delta A), per state
        lam_b = jnp.sum(lam * b[:, :, None], axis=0)  # (B, D)
        g_delta = jnp.sum(q * A_nd, axis=0) + x * lam_b
        g_x = delta * lam_b
        g_b = jnp.sum(lam * (delta * x)[None], axis=2)  # (N, B)
        g_c = jnp.sum(h_t * g[None], axis=2)
        g_A = g_A + jnp.sum(q * delta[None], axis=1, keepdims=True)
        return (decay * lam, g_A), (g_delta, g_x, g_b, g_c)

    init = (jnp.zeros_like(h[0]), jnp.zeros_like(A_nd))
    gy_t = jnp.swapaxes(gy, 0, 1)
    (_, g_A), (g_delta, g_x, g_b, g_c) = jax.lax.scan(
        step, init, (delta_t, x_t, B_t, C_t, gy_t, h, h_prev), reverse=True)
    batch_major = (2, 0, 1)  # (T, N, B) -> (B, T, N)
    return (jnp.swapaxes(g_delta, 0, 1), jnp.swapaxes(g_x, 0, 1), g_A[:, 0].T,
            jnp.transpose(g_b, batch_major), jnp.transpose(g_c, batch_major))


fused_selective_ssm.defvjp(_fused_fwd, _fused_bwd)
