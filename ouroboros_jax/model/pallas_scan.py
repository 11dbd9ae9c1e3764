"""The selective recurrence of `selective_scan` as a Pallas kernel for GPUs (Triton lowering).

`pallas_selective_ssm` computes exactly `fused_selective_ssm`: with delta, x: (B, T, D),
A: (D, N), Bt, Ct: (B, T, N),

    h_t = exp(delta_t A) * h_{t-1} + (delta_t x_t) B_t,    h_{-1} = 0,    y_t = h_t . C_t,

y: (B, T, D). The kernel runs on a grid of (batch, block of `block_d` channels); each program
walks T sequentially (`lax.fori_loop`) with its (block_d, N) state in registers, loading
delta_t, x_t (block_d,) and B_t, C_t (N,) and storing y_t (block_d,) each step. Triton needs
power-of-two array sizes, so D is zero-padded to a multiple of `block_d` = min(32, next power of
two of D) and N to a power of two; zero padding keeps the padded states at exactly 0 (delta 0 gives
decay 1 and input 0; A, B and C 0 give decay 1, input 0 and no output), so the real channels are
unaffected and the padding is sliced away.

Its `jax.custom_vjp` backward is a second kernel on the same grid: a reverse-time loop carrying
the adjoint lambda_t = C_t gy_t + exp(delta_{t+1} A) lambda_{t+1} (as mu_t = exp(delta_t A)
lambda_t) and the running gradient of A, and storing the gradients of delta, x, B and C of each
step. The forward pass saves the state entering each step, h_{t-1}: (B, T, D, N) padded
(4 B T D N bytes: 18 MB per layer at B 8, T 4410, D 20 -> 32, N 4); the backward recomputes the
decay and h_t = exp(delta_t A) h_{t-1} + delta_t x_t B_t from it. Saving rather than recomputing
the states: going back in time by dividing by exp(delta_t A) is unstable, and re-running the
forward in chunks would need scratch memory that the Triton lowering lacks. The gradients of B and
C are sums over channels and that of A over the batch; each program stores its partial sums and
the wrapper adds them up, so no two programs write the same element.

`interpret=None` runs the kernels in Pallas' interpret mode when the default backend is the CPU
(where Pallas cannot compile), compiled with Triton otherwise.
"""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

MAX_BLOCK_D = 32  # channels per program: a (32, 4) float32 state is 4 registers per thread of one warp
# The loop is latency-bound and a block this small fills one warp; more warps would only idle.
COMPILER_PARAMS = pltriton.CompilerParams(num_warps=1)


def pallas_selective_ssm(delta: jax.Array, x: jax.Array, A: jax.Array, Bt: jax.Array, Ct: jax.Array, *,
                         interpret: bool | None = None) -> jax.Array:
    """y of the selective recurrence (module docstring), by the Pallas kernels.

    Args:
      delta: (B, T, D) step sizes (> 0).
      x: (B, T, D) inputs.
      A: (D, N) state matrix (negative).
      Bt, Ct: (B, T, N) input and output projections.
      interpret: run in Pallas' interpret mode; None: when the default backend is the CPU.

    Returns:
      y: (B, T, D).
    """
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    d_inner, d_state = A.shape
    block_d = min(MAX_BLOCK_D, pl.next_power_of_2(d_inner))
    pad_d = pl.cdiv(d_inner, block_d) * block_d - d_inner
    pad_n = pl.next_power_of_2(d_state) - d_state
    channels, states = ((0, 0), (0, 0), (0, pad_d)), ((0, 0), (0, 0), (0, pad_n))
    y = _padded_ssm(jnp.pad(delta, channels), jnp.pad(x, channels), jnp.pad(A, ((0, pad_d), (0, pad_n))),
                    jnp.pad(Bt, states), jnp.pad(Ct, states), block_d, interpret)
    return y[:, :, :d_inner]


def _forward_kernel(delta_ref, x_ref, A_ref, B_ref, C_ref, y_ref, *state_ref):
    """One program: delta, x, y (T, block_d); A (block_d, N); B, C (T, N); state (T, block_d, N)."""
    A = A_ref[...]

    def step(t, h):
        if state_ref:
            state_ref[0][t] = h  # h_{t-1}, the state entering step t
        delta = delta_ref[t, :]
        h = jnp.exp(delta[:, None] * A) * h + (delta * x_ref[t, :])[:, None] * B_ref[t, :][None, :]
        y_ref[t, :] = jnp.sum(h * C_ref[t, :][None, :], axis=1)
        return h

    jax.lax.fori_loop(0, y_ref.shape[0], step, jnp.zeros(A.shape, A.dtype))


def _backward_kernel(delta_ref, x_ref, A_ref, B_ref, C_ref, state_ref, gy_ref,
                     g_delta_ref, g_x_ref, g_A_ref, g_B_ref, g_C_ref):
    """One program, in reverse time; refs as in `_forward_kernel`, gy and the gradients like their
    primals (g_A, g_B, g_C: this program's partial sums)."""
    A = A_ref[...]
    length = delta_ref.shape[0]

    def step(i, carry):
        mu, g_A = carry  # mu = exp(delta_{t+1} A) lambda_{t+1}
        t = length - 1 - i
        delta, x, b, c, gy = delta_ref[t, :], x_ref[t, :], B_ref[t, :], C_ref[t, :], gy_ref[t, :]
        h_prev = state_ref[t]
        decay = jnp.exp(delta[:, None] * A)
        drive = delta * x  # (block_d,), the input delta_t x_t
        lam = mu + gy[:, None] * c[None, :]
        q = lam * decay * h_prev  # d loss / d (delta_t A), per state
        lam_b = jnp.sum(lam * b[None, :], axis=1)  # d loss / d drive
        g_delta_ref[t, :] = jnp.sum(q * A, axis=1) + x * lam_b
        g_x_ref[t, :] = delta * lam_b
        g_B_ref[t, :] = jnp.sum(lam * drive[:, None], axis=0)
        h = decay * h_prev + drive[:, None] * b[None, :]
        g_C_ref[t, :] = jnp.sum(h * gy[:, None], axis=0)
        return decay * lam, g_A + q * delta[:, None]

    zeros = jnp.zeros(A.shape, A.dtype)
    _, g_A = jax.lax.fori_loop(0, length, step, (zeros, zeros))
    g_A_ref[...] = g_A


def _specs(length, d_inner, d_state, block_d):
    """BlockSpecs over the grid (batch b, channel block j) for the kernels' operands, by layout."""
    return {
        "btd": pl.BlockSpec((None, length, block_d), lambda b, j: (b, 0, j)),
        "dn": pl.BlockSpec((block_d, d_state), lambda b, j: (j, 0)),
        "btn": pl.BlockSpec((None, length, d_state), lambda b, j: (b, 0, 0)),
        "btdn": pl.BlockSpec((None, length, block_d, d_state), lambda b, j: (b, 0, j, 0)),
        "bdn": pl.BlockSpec((None, block_d, d_state), lambda b, j: (b, j, 0)),  # per-batch partial g_A
        "bjtn": pl.BlockSpec((None, None, length, d_state), lambda b, j: (b, j, 0, 0)),  # per-block g_B, g_C
    }


def _forward(delta, x, A, Bt, Ct, block_d, interpret, save_states):
    """The forward kernel on padded operands: y (B, T, D) and, if `save_states`, h_{t-1} (B, T, D, N)."""
    (batch, length, d_inner), d_state = delta.shape, A.shape[1]
    spec = _specs(length, d_inner, d_state, block_d)
    out_shape = [jax.ShapeDtypeStruct(delta.shape, delta.dtype)]
    out_specs = [spec["btd"]]
    if save_states:
        out_shape.append(jax.ShapeDtypeStruct((batch, length, d_inner, d_state), delta.dtype))
        out_specs.append(spec["btdn"])
    return pl.pallas_call(
        _forward_kernel, out_shape=out_shape, grid=(batch, d_inner // block_d),
        in_specs=[spec["btd"], spec["btd"], spec["dn"], spec["btn"], spec["btn"]], out_specs=out_specs,
        interpret=interpret, compiler_params=COMPILER_PARAMS, name="selective_ssm_forward",
    )(delta, x, A, Bt, Ct)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _padded_ssm(delta, x, A, Bt, Ct, block_d, interpret):
    """`pallas_selective_ssm` on operands padded to the kernel's block sizes."""
    return _forward(delta, x, A, Bt, Ct, block_d, interpret, save_states=False)[0]


def _padded_ssm_fwd(delta, x, A, Bt, Ct, block_d, interpret):
    y, h_prev = _forward(delta, x, A, Bt, Ct, block_d, interpret, save_states=True)
    return y, (delta, x, A, Bt, Ct, h_prev)


def _padded_ssm_bwd(block_d, interpret, residuals, gy):
    delta, x, A, Bt, Ct, h_prev = residuals
    (batch, length, d_inner), d_state = delta.shape, A.shape[1]
    n_blocks = d_inner // block_d
    spec = _specs(length, d_inner, d_state, block_d)
    partial_shape = jax.ShapeDtypeStruct((batch, n_blocks, length, d_state), Bt.dtype)
    g_delta, g_x, g_A, g_B, g_C = pl.pallas_call(
        _backward_kernel,
        out_shape=[jax.ShapeDtypeStruct(delta.shape, delta.dtype), jax.ShapeDtypeStruct(x.shape, x.dtype),
                   jax.ShapeDtypeStruct((batch, d_inner, d_state), A.dtype), partial_shape, partial_shape],
        grid=(batch, n_blocks),
        in_specs=[spec["btd"], spec["btd"], spec["dn"], spec["btn"], spec["btn"], spec["btdn"], spec["btd"]],
        out_specs=[spec["btd"], spec["btd"], spec["bdn"], spec["bjtn"], spec["bjtn"]],
        interpret=interpret, compiler_params=COMPILER_PARAMS, name="selective_ssm_backward",
    )(delta, x, A, Bt, Ct, h_prev, gy)
    return g_delta, g_x, jnp.sum(g_A, axis=0), jnp.sum(g_B, axis=1), jnp.sum(g_C, axis=1)


_padded_ssm.defvjp(_padded_ssm_fwd, _padded_ssm_bwd)
