"""A whole residual Mamba block, RMSNorm to residual, as one Numba CPU kernel (forward, backward).

XLA spends more time on the per-sample work around the selective scan (projections, convolution,
SiLU, softplus, gate, RMSNorm: each a pass over (B, T, 20-40) arrays, their weight gradients
reduced over B T rows) than on the scan. Here every sample's work happens in the scan's loop,
one chain per (seed, batch element) on all cores, in registers and per-chain buffers; the
backward recomputes the chain's forward, keeping per sample what the adjoint needs (the states
and every sigmoid and softplus, ~5 MB per chain at T 4410: recomputing the transcendentals in
the reverse loop made the backward 2x slower), and runs the reverse-time adjoint of the whole
block. Weight gradients are summed per chain and then over the batch. float32 exp and log1p are
polynomials LLVM vectorises (within 2 ulp); float64 uses `math`.

The block is `ResidualBlock` of `ouroboros_jax.model.mamba` exactly (its `_projected_conv`
included, which is linear in the input), taken apart into the weights below.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ouroboros_jax.model.host_call import host_call
from ouroboros_jax.model.numba_scan import (
    LANES,
    LOCK,
    grouped,
    shape_dtypes,
    vector_exp,
)

_RMS_EPS = 1e-5


def vector_log1p(x):
    """log(1 + x) for x in [0, 1], vectorisable: a Numba-only function, defined below."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(vector_log1p, jit_options={"fastmath": True})
def _vector_log1p_overload(x):
    if x != types.float32:
        return lambda x: math.log1p(x)

    def log1p32(x):
        # log1p(x) = 2 atanh(s), s = x / (2 + x) in [0, 1/3]: the odd series to s^15 (truncation
        # < 2e-9 relative). No 1 + x is formed, whose rounding fastmath's reassociation would not
        # let us cancel.
        s = x / (np.float32(2.0) + x)
        s2 = s * s
        p = np.float32(1.0 / 15.0)
        for c in (1.0 / 13.0, 1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0):
            p = p * s2 + np.float32(c)
        return np.float32(2.0) * s * (np.float32(1.0) + s2 * p)

    return log1p32


def typed_one(x):
    """1 in the type of x (a bare 1 would promote float32 arithmetic to float64)."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(typed_one)
def _typed_one_overload(x):
    one = np.float32(1.0) if x == types.float32 else 1.0
    return lambda x: one


@njit(fastmath=True, inline="always")
def _sigmoid(v):
    return typed_one(v) / (typed_one(v) + vector_exp(-v))


@njit(fastmath=True, inline="always")
def _softplus_and_sigmoid(v):
    """(softplus(v), sigmoid(v)) from one exp: e = exp(-|v|), sigmoid = 1 / (1 + e) or e / (1 + e)."""
    e = vector_exp(-abs(v))
    s = typed_one(v) / (typed_one(v) + e)
    return max(v, v - v) + vector_log1p(e), s if v >= 0 else e * s


@njit(fastmath=True, inline="always")
def _padded(w, width, padded):
    """w (..., width) zero-padded to (..., padded): padded channels carry zeros through the block."""
    out = np.zeros(w.shape[:-1] + (padded,), w.dtype)
    out[..., :width] = w
    return out


@njit(fastmath=True, inline="always")
def _chain_forward(x, g, b, nw, Wx, Wz, cw, cb, Wxp, Wdt, bdt, A, Dsk, Wout, out, keep):
    """The block for chain (g, b), weights already padded; with `keep`, the per-sample values the
    backward needs, (u, p, xc, sigmoid(xc), z, sigmoid(z), proj, delta, sigmoid(pre), h) per sample,
    else buffers of one sample reused."""
    length, d_model = x.shape[2], x.shape[3]
    n_state, padded = A.shape
    d_conv, n_proj = cw.shape[0], Wxp.shape[0]
    rank = n_proj - 2 * n_state
    rows = length if keep else 1
    u, p = np.zeros((rows, d_model), x.dtype), np.zeros((length + d_conv - 1, padded), x.dtype)
    xc, sx, z, sz, dl, sp = np.zeros((6, rows, padded), x.dtype)  # sp = sigmoid(pre) = d delta / d pre
    proj = np.zeros((rows, n_proj), x.dtype)
    h = np.zeros((length + 1 if keep else 2, n_state, padded), x.dtype)  # h[s + 1] = h_s
    xs, pre, yv = np.zeros((3, padded), x.dtype)
    for t in range(length):
        i, s = (t, t + 1) if keep else (0, 1)
        if not keep:
            h[0] = h[1]
        ms = x[g, b, t, 0] - x[g, b, t, 0]
        for m in range(d_model):
            ms += x[g, b, t, m] * x[g, b, t, m]
        r = typed_one(ms) / math.sqrt(ms / d_model + _RMS_EPS)
        for m in range(d_model):
            u[i, m] = x[g, b, t, m] * r * nw[m]
        q = t + d_conv - 1  # p[q] = p_t; p[0 : d_conv - 1] = p_{<0} = 0
        for d in range(padded):
            p[q, d], z[i, d] = 0, 0
        for m in range(d_model):
            for d in range(padded):
                p[q, d] += u[i, m] * Wx[m, d]
                z[i, d] += u[i, m] * Wz[m, d]
        for d in range(padded):
            xc[i, d] = cb[d]
        for k in range(d_conv):
            for d in range(padded):
                xc[i, d] += cw[k, d] * p[t + k, d]
        for d in range(padded):
            sx[i, d] = _sigmoid(xc[i, d])
            xs[d] = xc[i, d] * sx[i, d]
        for j in range(n_proj):
            acc = xs[0] - xs[0]
            for d in range(padded):
                acc += xs[d] * Wxp[j, d]
            proj[i, j] = acc
        for d in range(padded):
            pre[d] = bdt[d]
        for j in range(rank):
            for d in range(padded):
                pre[d] += proj[i, j] * Wdt[j, d]
        for d in range(padded):
            dl[i, d], sp[i, d] = _softplus_and_sigmoid(pre[d])
            yv[d] = Dsk[d] * xs[d]
        for n in range(n_state):
            bn, cn = proj[i, rank + n], proj[i, rank + n_state + n]
            for d in range(padded):
                h[s, n, d] = vector_exp(dl[i, d] * A[n, d]) * h[s - 1, n, d] + dl[i, d] * xs[d] * bn
                yv[d] += h[s, n, d] * cn
        for d in range(padded):
            sz[i, d] = _sigmoid(z[i, d])
            yv[d] *= z[i, d] * sz[i, d]
        for m in range(d_model):
            acc = x[g, b, t, m]
            for d in range(padded):
                acc += yv[d] * Wout[m, d]
            out[g, b, t, m] = acc
    return u, p, xc, sx, z, sz, proj, dl, sp, h


@njit(parallel=True, fastmath=True, cache=True)
def _forward(x, nw, Wx, Wz, cw, cb, Wxp, Wdt, bdt, A, Dsk, Wout, out):
    """out (G, B, T, M) of x (G, B, T, M); weights (G, ...) as `block_weights` lists them."""
    n_groups, batch = x.shape[0], x.shape[1]
    width = A.shape[2]
    padded = -(-width // LANES) * LANES
    for chain in prange(n_groups * batch):
        g, b = chain // batch, chain % batch
        _chain_forward(x, g, b, nw[g], _padded(Wx[g], width, padded), _padded(Wz[g], width, padded),
                       _padded(cw[g], width, padded), _padded(cb[g], width, padded),
                       _padded(Wxp[g].T, width, padded), _padded(Wdt[g], width, padded),
                       _padded(bdt[g], width, padded), _padded(A[g], width, padded), _padded(Dsk[g], width, padded),
                       _padded(Wout[g].T, width, padded), out, False)


@njit(fastmath=True, inline="always")
def _out_adjoint(t, xc, sx, z, sz, proj, h, dsk, wout, g_out_t, gwout, gdsk, xs, gate, yv, g_yg, g_z, g_ys, g_xs):
    """Step t of the reverse loop, out = x + (yv * silu(z)) Wout with yv = D xs + h C: the gradients
    of z, of yv (g_ys) and the D-skip's part of xs's (g_xs); Wout's and D's accumulated."""
    n_state, padded = h.shape[1], h.shape[2]
    rank = proj.shape[1] - 2 * n_state
    for d in range(padded):
        xs[d] = xc[t, d] * sx[t, d]
        gate[d] = z[t, d] * sz[t, d]
        yv[d] = dsk[d] * xs[d]
    for n in range(n_state):
        cn = proj[t, rank + n_state + n]
        for d in range(padded):
            yv[d] += h[t + 1, n, d] * cn
    for d in range(padded):
        g_yg[d] = 0
    for m in range(wout.shape[0]):
        go = g_out_t[m]
        for d in range(padded):
            g_yg[d] += go * wout[m, d]
            gwout[m, d] += yv[d] * gate[d] * go
    for d in range(padded):
        g_z[d] = g_yg[d] * yv[d] * sz[t, d] * (typed_one(yv[d]) + z[t, d] * (typed_one(yv[d]) - sz[t, d]))
        g_ys[d] = g_yg[d] * gate[d]
        g_xs[d] = dsk[d] * g_ys[d]
        gdsk[d] += g_ys[d] * xs[d]


@njit(fastmath=True, inline="always")
def _scan_adjoint(t, xs, dl, sp, proj, h, a, wdt, wxp, g_ys, mu, lam_b, g_dl, g_pre, g_proj, g_xs,
                  ga, gbdt, gwdt, gwxp):
    """Step t of the reverse loop through the scan (the adjoint of `numba_scan._backward` with
    delta x -> dl xs), delta = softplus(pre) and the projections: g_xs completed; mu carried."""
    n_state, padded = a.shape
    n_proj = wxp.shape[0]
    rank = n_proj - 2 * n_state
    for d in range(padded):
        lam_b[d], g_dl[d] = 0, 0
    for n in range(n_state):
        bn, cn = proj[t, rank + n], proj[t, rank + n_state + n]
        sum_b = sum_c = bn - bn
        for d in range(padded):
            lam = mu[n, d] + g_ys[d] * cn
            decay = vector_exp(dl[t, d] * a[n, d])
            q = lam * decay * h[t, n, d]
            lam_b[d] += lam * bn
            g_dl[d] += q * a[n, d]
            sum_b += lam * dl[t, d] * xs[d]
            sum_c += h[t + 1, n, d] * g_ys[d]
            ga[n, d] += q * dl[t, d]
            mu[n, d] = decay * lam
        g_proj[rank + n], g_proj[rank + n_state + n] = sum_b, sum_c
    for d in range(padded):
        g_dl[d] += xs[d] * lam_b[d]
        g_xs[d] += dl[t, d] * lam_b[d]
        g_pre[d] = g_dl[d] * sp[t, d]
        gbdt[d] += g_pre[d]
    for j in range(rank):
        acc = g_pre[0] - g_pre[0]
        for d in range(padded):
            gwdt[j, d] += proj[t, j] * g_pre[d]
            acc += wdt[j, d] * g_pre[d]
        g_proj[j] = acc
    for j in range(n_proj):
        for d in range(padded):
            g_xs[d] += wxp[j, d] * g_proj[j]
            gwxp[j, d] += xs[d] * g_proj[j]


@njit(fastmath=True, inline="always")
def _input_adjoint(t, x_t, nw, u, p, xc, sx, xs, c_w, wx, wz, g_xs, g_z, g_out_t, gp, g_xc, g_u,
                   gcw, gcb, gwx, gwz, gnw, g_x_t):
    """Step t of the reverse loop through xs = silu(xc), the causal convolution, the input projection
    and the RMSNorm: g_x_t = d loss / d x_t (with the residual's g_out_t)."""
    d_model, padded = wx.shape
    for d in range(padded):
        g_xc[d] = g_xs[d] * sx[t, d] * (typed_one(xs[d]) + xc[t, d] * (typed_one(xs[d]) - sx[t, d]))
        gcb[d] += g_xc[d]
    for k in range(c_w.shape[0]):  # xc_t = cb + sum_k cw[k] p_{t - d_conv + 1 + k}
        for d in range(padded):
            gcw[k, d] += g_xc[d] * p[t + k, d]
            gp[t + k, d] += g_xc[d] * c_w[k, d]
    # p_t and z_t = u_t W: gp of p_t is complete, every later xc having been passed.
    q_t = t + c_w.shape[0] - 1
    for m in range(d_model):
        acc = x_t[0] - x_t[0]
        for d in range(padded):
            acc += wx[m, d] * gp[q_t, d] + wz[m, d] * g_z[d]
            gwx[m, d] += u[t, m] * gp[q_t, d]
            gwz[m, d] += u[t, m] * g_z[d]
        g_u[m] = acc
    # u = x r nw, r = (mean(x^2) + eps)^-1/2: g_x = r nw g_u - x r^3 mean(x nw g_u) + g_out
    ms, dot = x_t[0] - x_t[0], x_t[0] - x_t[0]
    for m in range(d_model):
        ms += x_t[m] * x_t[m]
        dot += x_t[m] * nw[m] * g_u[m]
    r = typed_one(ms) / math.sqrt(ms / d_model + _RMS_EPS)
    for m in range(d_model):
        gnw[m] += g_u[m] * x_t[m] * r
        g_x_t[m] = r * nw[m] * g_u[m] - x_t[m] * r * r * r * dot / d_model + g_out_t[m]


@njit(parallel=True, fastmath=True, cache=True)
def _backward(x, nw, Wx, Wz, cw, cb, Wxp, Wdt, bdt, A, Dsk, Wout, g_out,
              g_x, g_nw, g_Wx, g_Wz, g_cw, g_cb, g_Wxp, g_Wdt, g_bdt, g_A, g_Dsk, g_Wout):
    """The gradients of sum(out * g_out): g_x like x, and each weight's per chain, (G, B, ...)."""
    n_groups, batch, length, d_model = x.shape
    width = A.shape[2]
    padded = -(-width // LANES) * LANES
    for chain in prange(n_groups * batch):
        g, b = chain // batch, chain % batch
        wx, wz, c_w = _padded(Wx[g], width, padded), _padded(Wz[g], width, padded), _padded(cw[g], width, padded)
        wxp = _padded(Wxp[g].T, width, padded)  # (n_proj, padded), as wout: d contiguous
        wdt, a, dsk = _padded(Wdt[g], width, padded), _padded(A[g], width, padded), _padded(Dsk[g], width, padded)
        wout = _padded(Wout[g].T, width, padded)
        out = np.empty((1, 1, length, d_model), x.dtype)  # recomputed, unused
        u, p, xc, sx, z, sz, proj, dl, sp, h = _chain_forward(
            x[g : g + 1, b : b + 1], 0, 0, nw[g], wx, wz, c_w, _padded(cb[g], width, padded), wxp, wdt,
            _padded(bdt[g], width, padded), a, dsk, wout, out, True)
        gnw, gwx, gwz = np.zeros(d_model, x.dtype), np.zeros_like(wx), np.zeros_like(wz)
        gcw, gcb, gwxp, gwdt = np.zeros_like(c_w), np.zeros(padded, x.dtype), np.zeros_like(wxp), np.zeros_like(wdt)
        gbdt, ga, gdsk, gwout = np.zeros(padded, x.dtype), np.zeros_like(a), np.zeros(padded, x.dtype), np.zeros_like(wout)
        gp = np.zeros((length + c_w.shape[0] - 1, padded), x.dtype)  # d loss / d p_s at gp[s + d_conv - 1]
        mu = np.zeros(a.shape, x.dtype)  # exp(delta_{t+1} A) lambda_{t+1}
        xs, gate, yv, g_yg, g_ys, g_xs, g_z, g_dl, lam_b, g_pre, g_xc = np.zeros((11, padded), x.dtype)
        g_proj, g_u = np.zeros(wxp.shape[0], x.dtype), np.zeros(d_model, x.dtype)
        for t in range(length - 1, -1, -1):
            _out_adjoint(t, xc, sx, z, sz, proj, h, dsk, wout, g_out[g, b, t], gwout, gdsk, xs, gate, yv, g_yg,
                         g_z, g_ys, g_xs)
            _scan_adjoint(t, xs, dl, sp, proj, h, a, wdt, wxp, g_ys, mu, lam_b, g_dl, g_pre, g_proj, g_xs, ga,
                          gbdt, gwdt, gwxp)
            _input_adjoint(t, x[g, b, t], nw[g], u, p, xc, sx, xs, c_w, wx, wz, g_xs, g_z, g_out[g, b, t], gp,
                           g_xc, g_u, gcw, gcb, gwx, gwz, gnw, g_x[g, b, t])
        g_nw[g, b] = gnw
        g_Wx[g, b], g_Wz[g, b], g_cw[g, b], g_cb[g, b] = gwx[:, :width], gwz[:, :width], gcw[:, :width], gcb[:width]
        g_Wxp[g, b], g_Wdt[g, b], g_bdt[g, b] = gwxp[:, :width].T, gwdt[:, :width], gbdt[:width]
        g_A[g, b], g_Dsk[g, b], g_Wout[g, b] = ga[:, :width], gdsk[:width], gwout[:, :width].T


# (x, norm weight, W_x, W_z, conv weight, conv bias, x_proj, dt_proj kernel, dt_proj bias, A (N, D), D, out_proj)
_CORE_NDIMS = (3, 1, 2, 2, 2, 1, 2, 2, 1, 2, 1, 2)


def _host_forward(*operands):
    lead, operands = grouped(operands, _CORE_NDIMS)
    out = np.empty_like(operands[0])
    with LOCK:
        _forward(*operands, out)
    return (out.reshape(lead + out.shape[1:]),)


def _host_backward(*operands):
    lead, operands = grouped(operands, _CORE_NDIMS + (3,))
    x, weights = operands[0], operands[1:-1]
    n_groups, batch = x.shape[:2]
    grads = [np.empty_like(x)] + [np.empty((n_groups, batch) + w.shape[1:], w.dtype) for w in weights]
    with LOCK:
        _backward(*operands, *grads)
    grads = [grads[0]] + [g.sum(axis=1) for g in grads[1:]]
    return tuple(g.reshape(lead + g.shape[1:]) for g in grads)


@jax.custom_vjp
def numba_block(x, nw, Wx, Wz, cw, cb, Wxp, Wdt, bdt, A_nd, Dsk, Wout):
    """x + MambaBlock(RMSNorm(x)) by the Numba kernels; x (B, T, M), weights as `_CORE_NDIMS`."""
    operands = (x, nw, Wx, Wz, cw, cb, Wxp, Wdt, bdt, A_nd, Dsk, Wout)
    return host_call(_host_forward, shape_dtypes(x), *operands)[0]


def _block_fwd(*operands):
    return numba_block(*operands), operands


def _block_bwd(operands, g_out):
    return tuple(host_call(_host_backward, shape_dtypes(*operands), *operands, g_out))


numba_block.defvjp(_block_fwd, _block_bwd)


def residual_block(block, x):
    """`ResidualBlock.__call__` of `block` on x (B, T, d_model) by `numba_block`."""
    mixer = block.mixer
    d_inner = mixer.d_inner
    kernel = mixer.in_proj.kernel[...]
    return numba_block(x, block.norm.weight[...], kernel[:, :d_inner], kernel[:, d_inner:], mixer.conv_weight[...],
                       mixer.conv_bias[...], mixer.x_proj.kernel[...], mixer.dt_proj.kernel[...],
                       mixer.dt_proj.bias[...], -jnp.exp(mixer.A_log[...]).T, mixer.D[...], mixer.out_proj.kernel[...])
