"""The RK4 rollout of `dynamics.state_trajectory` as Numba CPU kernels ("numba" `RolloutConfig.kernel`).

XLA CPU runs the rollout's `lax.scan` on one thread. Here the integration and its discrete
adjoint are compiled by Numba (`parallel=True`), the independent chains (every vmapped index
times batch element) spread over the cores, and reached from JAX by `host_call` (a host callback) inside
a `jax.custom_vjp`, as `ouroboros_jax.model.numba_scan` does for the encoders (same threading
layer and lock). One chain's step is a sequence of short dependent operations, so each thread
advances several chains ("lanes") in lockstep, their independent work interleaved.

Same function and gradients as the XLA kernel (`dynamics` module docstring): held drives, the
kernel's input soft-tanh bounded inside the stages with `clamp_stages`, soft-tanh after every
step, steps from `active_steps` on holding the state with no gradient. Under `jax.grad` the
forward also saves, per step and stage, the stage's state, its bounded state and the two slopes
of v' (24 numbers), and the final bounds' derivatives: the adjoint is then a scalar recurrence
per chain (`_backward`), and the drives' gradients are products XLA forms from its result
(`_drive_grads`). Results equal the XLA kernel's to rounding (sums ordered differently, and
fastmath); float64 works too.

With several devices, run it per device (`shard_map`, as `SeedProgram` does with a mesh): left to
XLA's automatic partitioning of sharded inputs, a program with these callbacks stalled in a
collective until XLA's 40 s rendezvous timeout ended the process (measured: 4 host devices).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numba
import numpy as np
from numba import njit, prange

from ouroboros_jax.model.host_call import host_call
from ouroboros_jax.model.numba_layer import typed_one
from ouroboros_jax.model.numba_scan import LOCK, grouped
from ouroboros_jax.model.polynomial import power_vector


@njit(fastmath=True, inline="always")
def _bounded(u, bound, on):
    """(bound tanh(u / bound), its derivative in u); (u, 1) when not `on`."""
    if not on:
        return u, typed_one(u)
    t = math.tanh(u / bound)
    return bound * t, typed_one(u) - t * t


@njit(fastmath=True, inline="always")
def _acceleration(W, first, k, om2, ga, xs, vs, bx, bv, clamp, px, pv, dpx, dpv, r, rd, acc, out, s):
    """v' = -om2 x - ga v - K(kx, kv) of every lane at stage s into acc (lanes,), kx, kv the
    stage's (bounded) state, and into out[:, s] (lanes, 4, 6) (x, v, kx, kv, d v'/d x, d v'/d v),
    what the backward needs of the stage.

    Lane c is chain first + c; xs, vs, om2, ga: (lanes,); px, pv, dpx, dpv, r, rd: (lanes, P)
    buffers. Each loop runs over the lanes innermost (over j within a lane), so the lanes'
    independent dependency chains (power products, row sums) interleave: one chain alone is
    latency-bound. K = px^T w pv is r . pv with r = px^T w summed row by row, the contiguous j
    innermost (vertical adds, which LLVM vectorises); the slope dK/dkx needs rd = dpx^T w, from
    the same pass over w. Arrays are indexed whole, never sliced: a view in a loop costs an
    allocation and reference counting (measured 2x slower).
    """
    lanes, size = px.shape
    one = typed_one(bx)
    for c in range(lanes):
        kx, out[c, s, 4] = _bounded(xs[c], bx, clamp[0])
        kv, out[c, s, 5] = _bounded(vs[c], bv, clamp[1])
        out[c, s, 0], out[c, s, 1], out[c, s, 2], out[c, s, 3] = xs[c], vs[c], kx, kv
        px[c, 0], pv[c, 0], dpx[c, 0], dpv[c, 0] = one, one, one - one, one - one
    power = one
    for i in range(1, size):
        for c in range(lanes):
            dpx[c, i], dpv[c, i] = power * px[c, i - 1], power * pv[c, i - 1]
            px[c, i], pv[c, i] = px[c, i - 1] * out[c, s, 2], pv[c, i - 1] * out[c, s, 3]
        power += one
    for c in range(lanes):
        for j in range(size):
            r[c, j], rd[c, j] = W[first + c, k, 0, j], one - one
    for i in range(1, size):
        for c in range(lanes):
            p, dp = px[c, i], dpx[c, i]
            for j in range(size):
                r[c, j] += p * W[first + c, k, i, j]
                rd[c, j] += dp * W[first + c, k, i, j]
    for c in range(lanes):
        kernel = dk_dkx = dk_dkv = one - one
        for j in range(size):
            kernel += r[c, j] * pv[c, j]
            dk_dkx += rd[c, j] * pv[c, j]
            dk_dkv += r[c, j] * dpv[c, j]
        acc[c] = -om2[c] * xs[c] - ga[c] * vs[c] - kernel
        out[c, s, 4] = -om2[c] - dk_dkx * out[c, s, 4]
        out[c, s, 5] = -ga[c] - dk_dkv * out[c, s, 5]


@njit(parallel=True, fastmath=True, cache=True)
def _forward(omega2, gamma, W, x0, v0, active, lanes, hs, bx, bv, clamp, trajectory, stages, end_slopes):
    """trajectory (C, steps + 1, 2) of the C chains from omega2, gamma (C, L), W (C, L, P, P),
    x0, v0 (C,), active (C,) steps integrated, `lanes` chains per thread at once; hs = (h, h / 2,
    h / 6), clamp = which bounds apply (x in the stages, v in the stages, x after the step, v after).

    With `stages` (C, steps, 4, 6) (else (C, 0, 4, 6)) each stage's `_acceleration` out, and
    end_slopes (C, steps, 2) the final bounds' derivatives; zeros for held steps.
    """
    n_chains, steps, size = trajectory.shape[0], trajectory.shape[1] - 1, W.shape[2]
    save = stages.shape[1] > 0
    h, half, sixth = hs
    one = typed_one(bx)
    for task in prange(-(-n_chains // lanes)):
        first = task * lanes
        n = min(lanes, n_chains - first)
        px, pv, dpx, dpv = np.zeros((n, size), W.dtype), np.zeros((n, size), W.dtype), np.zeros((n, size), W.dtype), \
            np.zeros((n, size), W.dtype)
        r, rd = np.zeros((n, size), W.dtype), np.zeros((n, size), W.dtype)
        x, v, xs, vs = np.zeros(n, W.dtype), np.zeros(n, W.dtype), np.zeros(n, W.dtype), np.zeros(n, W.dtype)
        kx, kv, sum_x, sum_v = np.zeros(n, W.dtype), np.zeros(n, W.dtype), np.zeros(n, W.dtype), np.zeros(n, W.dtype)
        om2, ga = np.zeros(n, W.dtype), np.zeros(n, W.dtype)
        out = np.zeros((n, 4, 6), W.dtype)
        for c in range(n):
            x[c], v[c] = x0[first + c], v0[first + c]
            trajectory[first + c, 0, 0], trajectory[first + c, 0, 1] = x[c], v[c]
        for k in range(steps):
            for c in range(n):
                om2[c], ga[c] = omega2[first + c, k], gamma[first + c, k]
                xs[c], vs[c] = x[c], v[c]
            for s in range(4):
                if s > 0:
                    step = h if s == 3 else half
                    for c in range(n):
                        xs[c], vs[c] = x[c] + step * kx[c], v[c] + step * kv[c]
                _acceleration(W, first, k, om2, ga, xs, vs, bx, bv, clamp, px, pv, dpx, dpv, r, rd, kv, out, s)
                weight = one if s == 0 or s == 3 else one + one
                for c in range(n):
                    kx[c] = vs[c]
                    sum_x[c] = weight * kx[c] + (sum_x[c] if s > 0 else one - one)
                    sum_v[c] = weight * kv[c] + (sum_v[c] if s > 0 else one - one)
            for c in range(n):
                chain = first + c
                held = k >= active[chain]
                slope_x = slope_v = one - one
                if not held:
                    x[c], slope_x = _bounded(x[c] + sixth * sum_x[c], bx, clamp[2])
                    v[c], slope_v = _bounded(v[c] + sixth * sum_v[c], bv, clamp[3])
                if save:
                    for s in range(4):
                        for e in range(6):
                            stages[chain, k, s, e] = one - one if held else out[c, s, e]
                    end_slopes[chain, k, 0], end_slopes[chain, k, 1] = slope_x, slope_v
                trajectory[chain, k + 1, 0], trajectory[chain, k + 1, 1] = x[c], v[c]


@njit(parallel=True, fastmath=True, cache=True)
def _backward(stages, end_slopes, active, hs, g_trajectory, g_acceleration, g_s0):
    """The discrete adjoint: g_acceleration (C, steps, 4), the cotangent of each stage's v', and
    g_s0 (C, 2) of (x0, v0), from the cotangent g_trajectory (C, steps + 1, 2) and the forward's
    `stages`, `end_slopes`. The drives' gradients follow from g_acceleration (`_drive_grads`).
    """
    n_chains, steps = g_trajectory.shape[0], g_trajectory.shape[1] - 1
    h, half, sixth = hs
    for chain in prange(n_chains):
        gx, gv = g_trajectory[chain, steps, 0], g_trajectory[chain, steps, 1]  # of s_{k+1}
        for k in range(steps - 1, -1, -1):
            if k >= active[chain]:  # a held step is the identity
                g_acceleration[chain, k] = 0
            else:
                gxn, gvn = gx * end_slopes[chain, k, 0], gv * end_slopes[chain, k, 1]
                gx, gv = gxn, gvn  # the direct path x_{k+1} = x_k + ...
                # k_s enters the end state with h / 6 (s = 0, 3) or h / 3, and the state of stage
                # s + 1 with h / 2 (s < 2) or h (s = 2); up_x, up_v: the cotangent of that state.
                up_x = up_v = gx - gx
                for s in range(3, -1, -1):
                    weight = sixth if s == 0 or s == 3 else sixth + sixth
                    step = h if s == 2 else half
                    gkx, gkv = weight * gxn + step * up_x, weight * gvn + step * up_v
                    g_acceleration[chain, k, s] = gkv
                    up_x = gkv * stages[chain, k, s, 4]  # k_s = (v_s, v'_s)
                    up_v = gkx + gkv * stages[chain, k, s, 5]
                    gx += up_x
                    gv += up_v
            gx += g_trajectory[chain, k, 0]
            gv += g_trajectory[chain, k, 1]
        g_s0[chain, 0], g_s0[chain, 1] = gx, gv


def _settings(config, dtype):
    """The kernels' scalar settings: (h, h / 2, h / 6), the bounds (1 where None: unused) and
    which bounds apply (x in stages, v in stages, x after the step, v after)."""
    h = config.step_size
    bx, bv = (np.dtype(dtype).type(1.0 if b is None else b) for b in (config.bound_x, config.bound_v))
    clamp = (config.clamp_stages and config.bound_x is not None, config.clamp_stages and config.bound_v is not None,
             config.bound_x is not None, config.bound_v is not None)
    return tuple(np.dtype(dtype).type(c) for c in (h, 0.5 * h, h / 6.0)), bx, bv, clamp


def _chains(arrays, core_ndims):
    """The leading (vmapped) shape, the batch size, and the arrays with the leading and batch axes
    flattened into one chain axis, (C, ...); `active` (core ndim 0) repeated over the batch."""
    lead, arrays = grouped(arrays, core_ndims)
    batch = max(a.shape[1] for a, k in zip(arrays, core_ndims) if k > 0)
    return lead, batch, [np.repeat(a, batch) if k == 0 else a.reshape((-1,) + a.shape[2:])
                         for a, k in zip(arrays, core_ndims)]


def _lanes(n_chains: int) -> int:
    """Chains per thread at once: all of a thread's share, up to 8 (enough to hide the latency)."""
    return max(1, min(8, -(-n_chains // numba.get_num_threads())))


def _host_forward(omega2, gamma, W, x0, v0, active, *, steps, config, save):
    """The trajectory, and with `save` the backward's (stages, end_slopes)."""
    lead, batch, (omega2, gamma, W, x0, v0, active) = _chains((omega2, gamma, W, x0, v0, active), (2, 2, 4, 1, 1, 0))
    n = x0.shape[0]
    trajectory = np.empty((n, steps + 1, 2), W.dtype)
    stages = np.empty((n, steps if save else 0, 4, 6), W.dtype)
    end_slopes = np.empty((n, steps if save else 0, 2), W.dtype)
    with LOCK:
        _forward(omega2, gamma, W, x0, v0, active, _lanes(n), *_settings(config, W.dtype), trajectory, stages,
                 end_slopes)
    outputs = (trajectory, stages, end_slopes) if save else (trajectory,)
    return tuple(a.reshape(lead + (batch,) + a.shape[1:]) for a in outputs)


def _host_backward(stages, end_slopes, active, g_trajectory, *, config):
    """(g_acceleration, g_s0) of `_backward`, shaped with the leading axes and the batch."""
    lead, batch, (stages, end_slopes, active, g_trajectory) = _chains((stages, end_slopes, active, g_trajectory),
                                                                      (4, 3, 0, 3))
    g_acceleration = np.empty(stages.shape[:-1], stages.dtype)
    g_s0 = np.empty((stages.shape[0], 2), stages.dtype)
    with LOCK:
        _backward(stages, end_slopes, active, _settings(config, stages.dtype)[0], g_trajectory, g_acceleration, g_s0)
    return tuple(a.reshape(lead + (batch,) + a.shape[1:]) for a in (g_acceleration, g_s0))


def numba_state_trajectory(omega2, gamma, W, x0, v0, steps: int, config, active_steps=None):
    """`dynamics.state_trajectory` by the Numba kernels; same arguments, shapes and result.

    Under `jax.vmap` the kernels get the vmapped axes as leading axes and run
    every (vmapped index, batch element) chain in one parallel launch.
    """
    dtype = jnp.result_type(omega2, gamma, W, x0, v0)  # promoted as the XLA kernel's arithmetic would
    operands = (jnp.asarray(a, dtype) for a in (omega2, gamma, W, x0, v0))
    active = jnp.asarray(steps if active_steps is None else active_steps, jnp.int32)
    return _trajectory(*operands, active, steps, config, W.shape[-3], W.shape[-1])


def _integrate(omega2, gamma, W, x0, v0, active, steps, config, save):
    """The forward kernel's outputs: (trajectory (B, steps + 1, 2),) or, with `save`, also the
    backward's stages (B, steps, 4, 6) and end_slopes (B, steps, 2)."""
    shapes = [x0.shape + (steps + 1, 2)] + ([x0.shape + (steps, 4, 6), x0.shape + (steps, 2)] if save else [])
    like = tuple(jax.ShapeDtypeStruct(shape, W.dtype) for shape in shapes)
    return host_call(functools.partial(_host_forward, steps=steps, config=config, save=save), like, omega2, gamma,
                     W, x0, v0, active)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _trajectory(omega2, gamma, W, x0, v0, active, steps, config, length, size):
    return _integrate(omega2, gamma, W, x0, v0, active, steps, config, save=False)[0]


def _trajectory_fwd(omega2, gamma, W, x0, v0, active, steps, config, length, size):
    trajectory, stages, end_slopes = _integrate(omega2, gamma, W, x0, v0, active, steps, config, save=True)
    return trajectory, (stages, end_slopes, active)


def _trajectory_bwd(steps, config, length, size, residuals, g_trajectory):
    stages, end_slopes, active = residuals
    like = (jax.ShapeDtypeStruct(stages.shape[:-1], stages.dtype), jax.ShapeDtypeStruct(stages.shape[:-3] + (2,),
                                                                                         stages.dtype))
    g_acceleration, g_s0 = host_call(functools.partial(_host_backward, config=config), like, stages, end_slopes, active,
                                     g_trajectory)
    return (*_drive_grads(stages, g_acceleration, length, size), g_s0[..., 0], g_s0[..., 1],
            np.zeros(np.shape(active), jax.dtypes.float0))


def _drive_grads(stages, g_acceleration, length, size):
    """The drives' gradients (B, L), (B, L), (B, L, P, P), zero from step `steps` on, from the
    cotangent g_acceleration (B, steps, 4) of the stages' v' = -omega2 x - gamma v - px^T W pv.

    Formed by XLA, not returned by the kernel: a (B, L, P, P) result out of a callback costs a
    copy and page faults (7-13 ms at B 8, L 2205, P 16), these products 3 ms. As a sum of four
    broadcast products they are one fusion; as an einsum, batched 16 x 4 x 16 matmuls (13 ms).
    """

    def padded(a):  # (B, steps, ...) -> (B, L, ...): the products then write the result in place
        return jnp.pad(a, [(0, 0), (0, length - a.shape[1])] + [(0, 0)] * (a.ndim - 2))

    stages, g_acceleration = padded(stages), padded(g_acceleration)
    x, v, kx, kv = (stages[..., i] for i in range(4))
    px, pv = power_vector(kx, size), power_vector(kv, size)
    g_W = sum(g_acceleration[..., s, None, None] * px[..., s, :, None] * pv[..., s, None, :] for s in range(4))
    return -jnp.sum(g_acceleration * x, axis=-1), -jnp.sum(g_acceleration * v, axis=-1), -g_W


_trajectory.defvjp(_trajectory_fwd, _trajectory_bwd)
