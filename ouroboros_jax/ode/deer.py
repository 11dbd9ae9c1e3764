"""The rollout as a Newton solve over the whole trajectory (DEER, Lim et al., ICLR 2024; issue 8);
one of the integrators of `ouroboros_jax.ode.integrators`.

The states s_k = (x_k, v_k), k = 0..H-1, of `dynamics.rollout` satisfy s_{k+1} = f_k(s_k), f_k the
RK4 step (`dynamics.rk4_step`) with the drives of sample k. Newton on all of them at once: around
a guess s^(i), f_k(s) ~ J_k s + b_k with J_k = df_k/ds (2 x 2) and b_k = f_k(s^(i)_k) - J_k s^(i)_k,
and the linear recurrence s_{k+1} = J_k s_k + b_k from the fixed s_0 is one associative scan over
affine maps: O(log H) depth instead of the H - 1 sequential steps of a `lax.scan`.

The full 2 x 2 Jacobian is essential: the oscillator's is rotation-like, and a diagonal
("quasi-DEER") approximation does not converge. Gradients do not flow through the iterations: at
the converged trajectory the adjoint is one reverse-time linear recurrence with the same Jacobians
(`jax.custom_vjp`), solved by the same associative scan.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ouroboros_jax.model.ouroboros import Drives
from ouroboros_jax.ode.dynamics import RolloutConfig, rk4_step, state_trajectory


class DeerStats(NamedTuple):
    """Per-example diagnostics of a DEER solve.

    Attributes:
      iterations: (B,) int32, Newton iterations until convergence (deer_max_iter where it did not).
      fell_back: (B,) bool, the example did not converge and its trajectory is the sequential scan's.
    """

    iterations: jax.Array
    fell_back: jax.Array


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b for (..., 2, 2) stacks, written as products and sums: a GPU's default float32 dot
    may round through TF32, and the scan multiplies up to H of these together."""
    return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)


def _matvec(a: jax.Array, u: jax.Array) -> jax.Array:
    """a @ u for a (..., 2, 2) and u (..., 2)."""
    return jnp.sum(a * u[..., None, :], axis=-1)


def _compose(first, second):
    """The affine map `second` after `first`: (A2, c2) o (A1, c1) = (A2 A1, A2 c1 + c2)."""
    a1, c1 = first
    a2, c2 = second
    return _matmul(a2, a1), _matvec(a2, c1) + c2


def _step(s, omega2, gamma, W, config: RolloutConfig):
    """f_k for one example and one sample: s (2,), omega2 and gamma (), W (P, P) -> (2,)."""
    x, v = rk4_step(s[None, 0], s[None, 1], omega2[None], gamma[None], W[None], config)
    return jnp.concatenate([x, v])


def _over_batch_and_time(fn):
    """Maps a per-sample function over leading (B, T) axes of all its array arguments."""
    return jax.vmap(jax.vmap(fn))


def _linearise(states, omega2, gamma, W, config):
    """J_k and f_k(s_k) at the (B, T, 2) states with (B, T) drives: (B, T, 2, 2) and (B, T, 2)."""

    def jac_and_value(s, o, g, w):
        value = _step(s, o, g, w, config)
        return value, value

    jac = jax.jacfwd(jac_and_value, has_aux=True)  # the value comes along with the forward tangents
    return _over_batch_and_time(jac)(states, omega2, gamma, W)


def _bound(bound: float | None) -> float:
    """A soft-tanh bound as a clip limit; None (no bound) is infinite."""
    return jnp.inf if bound is None else bound


def _newton_step(states, omega2, gamma, W, config):
    """One Newton iteration: the linearised recurrence around `states` (B, H, 2), solved exactly.

    Drives are (B, H - 1[, P, P]). Returns the new (B, H, 2) with the same s_0, and the defect of
    `states`, |s_{k+1} - f_k(s_k)| (B, H - 1, 2), which the linearisation gives for free.
    """
    s0 = states[:, 0]
    jac, value = _linearise(states[:, :-1], omega2, gamma, W, config)
    defect = jnp.abs(states[:, 1:] - value)
    offset = value - _matvec(jac, states[:, :-1])
    # s_1 = f_0(s_0) exactly (s_0 is known): fold it into the first map as a constant.
    jac = jac.at[:, 0].set(0.0)
    offset = offset.at[:, 0].set(value[:, 0])
    _, following = jax.lax.associative_scan(_compose, (jac, offset), axis=1)
    # Every RK4 step ends in the soft-tanh, so the solution lies inside the bounds: projecting the
    # iterate onto them changes no fixed point, but keeps an early linearisation of an unstable
    # stretch from overshooting into the polynomial's overflow (then NaN, which Newton only
    # clears one sample per iteration).
    bounds = jnp.array([_bound(config.bound_x), _bound(config.bound_v)], following.dtype)
    following = jnp.clip(following, -bounds[None, None], bounds[None, None])
    return jnp.concatenate([s0[:, None], following], axis=1), defect


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _solve(config, omega2, gamma, W, s0, guess):
    """The trajectory (B, H, 2) from s0 (B, 2) under the (B, H - 1[, P, P]) drives, and its stats.

    `guess` (B, H, 2) starts the iterations (its sample 0 is replaced by s0).
    """
    batch, max_iter, tol = s0.shape[0], config.deer_max_iter, config.deer_tol

    def not_done(carry):
        i, _, _, converged = carry
        return (i < max_iter) & ~jnp.all(converged)

    def iterate(carry):
        i, states, iterations, converged = carry
        new, defect = _newton_step(states, omega2, gamma, W, config)
        # Converged when the iterate satisfies every step to `tol` (it is a sequential integration
        # up to round-off; the Newton step from it, already computed and kept, is closer still),
        # or when Newton has stopped moving: on an ill-conditioned stretch float32 round-off of
        # the solve, pinned by the bounds, leaves a defect above `tol` that no iteration reduces.
        # Either test alone stalls where the other succeeds. Elementwise, so that a NaN (a
        # diverged iterate) compares False: a max over the trajectory is not safe, XLA's CPU
        # reduction may drop NaNs.
        now_converged = jnp.all(defect < tol, axis=(1, 2)) | jnp.all(jnp.abs(new - states) < tol, axis=(1, 2))
        # Converged examples are frozen, so each keeps the trajectory and count it converged with.
        states = jnp.where(converged[:, None, None], states, new)
        iterations = jnp.where(converged, iterations, i + 1)
        return i + 1, states, iterations, converged | now_converged

    start = guess.at[:, 0].set(s0)
    init = (jnp.int32(0), start, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), bool))
    _, states, iterations, converged = jax.lax.while_loop(not_done, iterate, init)

    def fall_back(carry):
        states, _ = carry
        sequential = state_trajectory(omega2, gamma, W, s0[:, 0], s0[:, 1], omega2.shape[1], config)
        return jnp.where(converged[:, None, None], states, sequential), jnp.bool_(True)

    # A loop that runs at most once rather than a `lax.cond`: under `vmap` (the seeds) a cond with
    # a batched predicate runs both branches, so every solve would pay for the scan; a loop runs
    # its body only while some seed needs it.
    states, _ = jax.lax.while_loop(lambda carry: ~carry[1], fall_back, (states, jnp.all(converged)))
    return states, iterations, ~converged


def _solve_fwd(config, omega2, gamma, W, s0, guess):
    states, iterations, fell_back = _solve(config, omega2, gamma, W, s0, guess)
    return (states, iterations, fell_back), (states, omega2, gamma, W, guess)


def _solve_bwd(config, residuals, cotangents):
    """The adjoint at the converged trajectory: lambda_{H-1} = g_{H-1},
    lambda_k = J_k^T lambda_{k+1} + g_k, then each step's drives get f_k's VJP applied to
    lambda_{k+1} and s_0 gets lambda_0. The guess gets none: the solution does not depend on it."""
    states, omega2, gamma, W, guess = residuals
    g = cotangents[0]  # the stats are integers and carry no cotangent

    def step_vjp(s, o, gm, w, lam):
        _, pullback = jax.vjp(functools.partial(_step, config=config), s, o, gm, w)
        return pullback(lam)

    jac, _ = _linearise(states[:, :-1], omega2, gamma, W, config)
    jac_t = jnp.swapaxes(jac, -1, -2)
    # lambda_{H-2} = J_{H-2}^T g_{H-1} + g_{H-2}: the known end folded into the last map.
    last = _matvec(jac_t[:, -1], g[:, -1]) + g[:, -2]
    offset = g[:, :-1].at[:, -1].set(last)
    jac_t = jac_t.at[:, -1].set(0.0)
    _, lam = jax.lax.associative_scan(_compose, (jac_t, offset), reverse=True, axis=1)  # lambda_0..H-2
    lam_next = jnp.concatenate([lam[:, 1:], g[:, -1:]], axis=1)  # lambda_1..H-1
    _, d_omega2, d_gamma, d_W = _over_batch_and_time(step_vjp)(states[:, :-1], omega2, gamma, W, lam_next)
    return d_omega2, d_gamma, d_W, lam[:, 0], jnp.zeros_like(guess)


_solve.defvjp(_solve_fwd, _solve_bwd)


def held_guess(x0: jax.Array, v0: jax.Array, horizon: int) -> jax.Array:
    """The initial state (x0, v0), each (B,), held over the horizon: (B, H, 2), Newton's start for
    a cold start (and `deer_rollout`'s default)."""
    return jnp.broadcast_to(jnp.stack([x0, v0], axis=-1)[:, None], (x0.shape[0], horizon, 2))


def deer_rollout(drives: Drives, x0: jax.Array, v0: jax.Array, horizon: int, config: RolloutConfig = RolloutConfig(),
                 guess: jax.Array | None = None):
    """`dynamics.rollout` by Newton iterations on the whole trajectory (DEER).

    Each iteration linearises the RK4 step around the current guess and solves the linear
    recurrence by an associative scan. An example has converged when its trajectory satisfies
    every step to tol = `config.deer_tol` (max_k |s_{k+1} - f_k(s_k)| < tol for x and v) or an
    iteration changes it by less than tol; iterations stop when all have, or after
    `config.deer_max_iter`; an example that has
    not converged falls back to the sequential scan. Gradients (w.r.t. the drives and the IC)
    come from the adjoint at the converged trajectory, not from backpropagating through the
    iterations.

    Args:
      drives: `Drives` of length L >= horizon (K is not used).
      x0, v0: (B,) initial state.
      horizon: H >= 2, the number of output samples (H - 1 steps); static.
      config: integration settings (`unroll` only affects the fallback scan). `deer_tol` is the
        convergence threshold on each example's largest one-step defect and change per iteration
        (float32 round-off of a step is ~1e-7 of the state, so much below that is not reachable).
      guess: (B, H, 2) initial trajectory (x, v), e.g. the data for data-IC examples; None holds
        the IC constant. It gets no gradient.

    Returns:
      x_hat: (B, H) with x_hat[:, 0] = x0, and the per-example `DeerStats`.
    """
    if not 2 <= horizon <= drives.omega.shape[1]:
        raise ValueError(f"horizon {horizon} must be in [2, segment length {drives.omega.shape[1]}]")
    s0 = jnp.stack([x0, v0], axis=-1)
    if guess is None:
        guess = held_guess(x0, v0, horizon)
    steps = horizon - 1
    step_drives = (jnp.square(drives.omega[:, :steps]), drives.gamma[:, :steps], drives.W[:, :steps])
    states, iterations, fell_back = _solve(config, *step_drives, s0, jax.lax.stop_gradient(guess))
    return states[..., 0], DeerStats(iterations, fell_back)
