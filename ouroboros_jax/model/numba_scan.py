"""The fused selective scan as a Numba CPU kernel on all cores ("numba" in `SCAN_IMPLS`).

XLA CPU runs a `lax.scan` body on one thread, so the "fused" scan leaves the second core idle.
Here the forward and backward recurrences are compiled by Numba (`parallel=True`), one
independent chain per (seed, batch element) spread over the cores, and reached from JAX by
`host_call` (a host callback) inside a `jax.custom_vjp`. Each chain keeps its state (N, D) in registers'
reach, D padded to whole vector registers, and the decay exp(delta A) is a polynomial (`vector_exp`)
that LLVM vectorises: llvmlite's wheels carry no SVML, so `math.exp` on float32 stays a scalar
libm call per element (measured 2x slower). The backward recomputes the chain's states into a
per-chain buffer (1.7 MB at T 4410, in cache) instead of saving (B, T, N, D) states: a saved
residual costs a copy out of the callback and page faults on every step.

Same recurrence and gradients as "fused" (module docstring of `selective_scan`); float32 within
a few ulp of it (the exp polynomial is accurate to ~2 ulp), float64 uses `math.exp`.
"""

import math
import os
import threading

import jax
import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from ouroboros_jax.model.host_call import host_call

if "NUMBA_THREADING_LAYER" not in os.environ:
    # OpenMP's workers spin for a while after each launch, taking the cores from the XLA threads
    # that run next (measured: a layer's scan forward + backward 37 ms with OpenMP, 16 ms with
    # workqueue, whose workers sleep). Workqueue launches must not overlap: `LOCK`.
    numba.config.THREADING_LAYER = "workqueue"

LANES = 8  # float32 lanes of the 256-bit vectors LLVM uses on x86-64 (AVX2 and AVX-512 alike)
# The callbacks can be entered from several XLA threads at once (the encoders are independent);
# workqueue launches must not overlap, and each uses every core anyway. Shared by numba_layer.
LOCK = threading.Lock()


@intrinsic
def _float_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def vector_exp(x):
    """exp(x), vectorisable: a Numba-only function, defined by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(vector_exp, jit_options={"fastmath": True})
def _vector_exp_overload(x):
    if x != types.float32:
        return lambda x: math.exp(x)

    def exp32(x):
        # Cephes' expf: exp(x) = 2^k exp(r), |r| <= ln2 / 2, exp(r) by a degree-7 polynomial,
        # ln 2 split in two for an exact r; 2^k built from its exponent bits. The clamp keeps k
        # within the normal exponents (below -87.3 the result is ~1e-38 instead of smaller).
        x = min(max(x, np.float32(-87.33654)), np.float32(88.37626))
        k = np.floor(x * np.float32(1.442695040888963) + np.float32(0.5))
        r = x - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * r * r + r + np.float32(1.0)
        return p * _float_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))

    return exp32


@njit(fastmath=True, inline="always")
def _load_step(delta, x, g, b, t, dl, dx):
    """The chain's delta_t and delta_t x_t into the padded buffers (padding stays 0)."""
    for d in range(delta.shape[3]):
        dl[d] = delta[g, b, t, d]
        dx[d] = dl[d] * x[g, b, t, d]


@njit(fastmath=True, inline="always")
def _padded_A(A, g, padded):
    """A[g] (N, D) in a zeroed (N, padded) buffer: whole vector registers per state."""
    a = np.zeros((A.shape[1], padded), A.dtype)
    a[:, : A.shape[2]] = A[g]
    return a


@njit(parallel=True, fastmath=True, cache=True)
def _forward(delta, x, A, Bt, Ct, y):
    """y (G, B, T, D) of delta, x (G, B, T, D), A (G, N, D), Bt, Ct (G, B, T, N).

    Padding of D: decay exp(0 * 0) = 1, input 0, so padded states stay 0 and are not written.
    """
    n_groups, batch, length, width = delta.shape
    n_state = A.shape[1]
    padded = -(-width // LANES) * LANES
    for chain in prange(n_groups * batch):
        g, b = chain // batch, chain % batch
        a, h = _padded_A(A, g, padded), np.zeros((n_state, padded), delta.dtype)
        dl, dx, yt = np.zeros(padded, delta.dtype), np.zeros(padded, delta.dtype), np.zeros(padded, delta.dtype)
        for t in range(length):
            _load_step(delta, x, g, b, t, dl, dx)
            for d in range(padded):
                yt[d] = 0
            for n in range(n_state):
                bn, cn = Bt[g, b, t, n], Ct[g, b, t, n]
                for d in range(padded):
                    h[n, d] = vector_exp(dl[d] * a[n, d]) * h[n, d] + dx[d] * bn
                    yt[d] += h[n, d] * cn
            for d in range(width):
                y[g, b, t, d] = yt[d]


@njit(parallel=True, fastmath=True, cache=True)
def _backward(delta, x, A, Bt, Ct, gy, g_delta, g_x, g_A, g_B, g_C):
    """The gradients of sum(y * gy) w.r.t. delta, x, B, C (shaped like them) and A per chain
    (G, B, N, D; the caller sums over B), by the reverse-time adjoint of `fused_selective_ssm`."""
    n_groups, batch, length, width = delta.shape
    n_state = A.shape[1]
    padded = -(-width // LANES) * LANES
    for chain in prange(n_groups * batch):
        g, b = chain // batch, chain % batch
        a = _padded_A(A, g, padded)
        dl, dx, gyt, lam_b, gd = np.zeros((5, padded), delta.dtype)
        h = np.zeros((length + 1, n_state, padded), delta.dtype)  # h[t + 1] = h_t, h[0] = h_{-1} = 0
        for t in range(length):
            _load_step(delta, x, g, b, t, dl, dx)
            for n in range(n_state):
                bn = Bt[g, b, t, n]
                for d in range(padded):
                    h[t + 1, n, d] = vector_exp(dl[d] * a[n, d]) * h[t, n, d] + dx[d] * bn
        mu = np.zeros((n_state, padded), delta.dtype)  # exp(delta_{t+1} A) lambda_{t+1}
        ga = np.zeros((n_state, padded), delta.dtype)
        for t in range(length - 1, -1, -1):
            _load_step(delta, x, g, b, t, dl, dx)
            for d in range(padded):
                lam_b[d] = 0
                gd[d] = 0
            for d in range(width):
                gyt[d] = gy[g, b, t, d]
            for n in range(n_state):
                bn, cn = Bt[g, b, t, n], Ct[g, b, t, n]
                sum_b = sum_c = bn - bn  # zero of the dtype
                for d in range(padded):
                    lam = mu[n, d] + gyt[d] * cn
                    decay = vector_exp(dl[d] * a[n, d])
                    q = lam * decay * h[t, n, d]  # d loss / d (delta A)
                    lam_b[d] += lam * bn
                    gd[d] += q * a[n, d]
                    sum_b += lam * dx[d]
                    sum_c += h[t + 1, n, d] * gyt[d]
                    ga[n, d] += q * dl[d]
                    mu[n, d] = decay * lam
                g_B[g, b, t, n] = sum_b
                g_C[g, b, t, n] = sum_c
            for d in range(width):
                g_delta[g, b, t, d] = gd[d] + x[g, b, t, d] * lam_b[d]
                g_x[g, b, t, d] = dl[d] * lam_b[d]
        g_A[g, b] = ga[:, :width]


def grouped(arrays, core_ndims):
    """Broadcasts the leading (vmapped) axes of all arrays alike and flattens them into one.

    Returns:
      the leading shape and the arrays as (G, *core shape), C-contiguous.
    """
    lead = np.broadcast_shapes(*(a.shape[: a.ndim - k] for a, k in zip(arrays, core_ndims)))
    return lead, [np.ascontiguousarray(np.broadcast_to(a, lead + a.shape[a.ndim - k :])).reshape(
        (-1,) + a.shape[a.ndim - k :]) for a, k in zip(arrays, core_ndims)]


_CORE_NDIMS = (3, 3, 2, 3, 3)  # delta, x, A, Bt, Ct


def _host_forward(delta, x, A, Bt, Ct):
    lead, (delta, x, A, Bt, Ct) = grouped((delta, x, np.swapaxes(A, -1, -2), Bt, Ct), _CORE_NDIMS)
    y = np.empty_like(delta)
    with LOCK:
        _forward(delta, x, A, Bt, Ct, y)
    return (y.reshape(lead + y.shape[1:]),)


def _host_backward(delta, x, A, Bt, Ct, gy):
    lead, (delta, x, A, Bt, Ct, gy) = grouped((delta, x, np.swapaxes(A, -1, -2), Bt, Ct, gy), _CORE_NDIMS + (3,))
    g_delta, g_x, g_B, g_C = (np.empty_like(a) for a in (delta, x, Bt, Ct))
    g_A = np.empty((delta.shape[0], delta.shape[1]) + A.shape[1:], delta.dtype)
    with LOCK:
        _backward(delta, x, A, Bt, Ct, gy, g_delta, g_x, g_A, g_B, g_C)
    grads = (g_delta, g_x, np.swapaxes(g_A.sum(axis=1), -1, -2), g_B, g_C)
    return tuple(grad.reshape(lead + grad.shape[1:]) for grad in grads)


def shape_dtypes(*arrays):
    return tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays)


@jax.custom_vjp
def numba_selective_ssm(delta: jax.Array, x: jax.Array, A: jax.Array, Bt: jax.Array, Ct: jax.Array) -> jax.Array:
    """y of the selective recurrence, computed by the Numba kernels; shapes as in `selective_ssm`.

    Under `jax.vmap` the kernels get the vmapped axes as leading axes and run
    every (vmapped index, batch element) chain in one parallel launch.
    """
    return host_call(_host_forward, shape_dtypes(delta), delta, x, A, Bt, Ct)[0]


def _numba_fwd(delta, x, A, Bt, Ct):
    return numba_selective_ssm(delta, x, A, Bt, Ct), (delta, x, A, Bt, Ct)


def _numba_bwd(residuals, gy):
    return tuple(host_call(_host_backward, shape_dtypes(*residuals), *residuals, gy))


numba_selective_ssm.defvjp(_numba_fwd, _numba_bwd)
