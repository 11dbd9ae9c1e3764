"""The ODE driven by the drives, its RK4 integration and the rollout (docs/method.md, "The ODE and the rollout").

In rescaled time s = t / tau, with the drive of sample k held over step k:

    x' = v
    v' = -omega_k^2 x - gamma_k v - sum_ij W_k[i, j] x^i v^j

One classic RK4 step of size h = dt / tau (1 when tau = dt) per sample, then the soft-tanh
saturation x <- bx tanh(x / bx), v <- bv tanh(v / bv). With `clamp_stages` the kernel's input
state is also soft-tanh bounded inside every RK4 stage: the degree-15
polynomial of an unbounded intermediate state overflows float32; off reproduces the reference.
"""

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ouroboros_jax.errors import check_setting
from ouroboros_jax.model.ouroboros import Drives
from ouroboros_jax.model.polynomial import kernel_value
from ouroboros_jax.settings import setting

ROLLOUT_BACKENDS = ("scan", "deer")
# The reference's --rollout-backend values: ways to run its one RK4 loop, which here is the scan.
REFERENCE_ROLLOUT_BACKENDS = ("eager", "compile", "cudagraph")
ROLLOUT_KERNELS = ("auto", "xla", "numba")


def _backend(name: str) -> str:
    if name in REFERENCE_ROLLOUT_BACKENDS:
        logging.warning("--rollout_backend=%s: the reference's eager, compile and cudagraph backends run the same "
                        "RK4 loop, which here is one lax.scan: the run uses --rollout_backend=scan", name)
        return "scan"
    return name


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """How the rollout integrates; the settings among its fields are the training CLI's flags.

    Attributes:
      step_size: h = dt / tau in rescaled time (1.0 when tau = dt; the run sets it from the model).
      bound_x, bound_v: soft-tanh bounds of x and v after every step; None disables one.
      clamp_stages: also bound the kernel's input state inside every RK4 stage.
      unroll: `lax.scan` unroll factor (a speed knob; the result does not depend on it).
      backend: the integrator (`ouroboros_jax.ode.integrators`): "scan" (one `lax.scan`) or "deer"
        (Newton iterations, `ouroboros_jax.ode.deer`).
      deer_max_iter, deer_tol: DEER's iteration limit and convergence threshold.
      kernel: what runs the scan and its adjoint: "xla" (`lax.scan`), "numba" (Numba kernels on
        all CPU cores, `ouroboros_jax.ode.numba_rollout`) or
        "auto" (`resolve_rollout_kernel`). Equal to float32 rounding.
      gradient: how the scan is differentiated: "adjoint" (a reverse scan over the VJP of one
        RK4 step, recomputed from the saved state; 1.4x faster on CPU, docs/performance.md) or
        "autodiff" (JAX's transpose of the forward scan). Equal to float32 rounding.
    """

    step_size: float = 1.0
    bound_x: float | None = setting(0.5, "Soft-tanh bound of x.")
    bound_v: float | None = setting(1.0, "Soft-tanh bound of x'.")
    clamp_stages: bool = setting(True, "Bound the kernel's input inside every RK4 stage (off: the reference's form).")
    unroll: int = setting(1, "Unroll factor of the rollout scan.")
    backend: str = setting("scan", "How the rollout runs: one lax.scan, or DEER Newton iterations (the reference's "
                           "eager, compile and cudagraph are the scan).", flag="rollout_backend",
                           choices=ROLLOUT_BACKENDS + REFERENCE_ROLLOUT_BACKENDS, parse=_backend)
    deer_max_iter: int = setting(30, "DEER: Newton iterations at most; an unconverged example falls back to the "
                                 "scan.")
    deer_tol: float = setting(1e-6, "DEER: converged when the trajectory satisfies every RK4 step to this.")
    kernel: str = setting("auto", "What runs the rollout's scan and its adjoint: xla (lax.scan), numba (CPU kernels on "
                          "all cores) or auto (numba on CPU beside the numba encoder kernels, else xla).",
                          flag="rollout_kernel", choices=ROLLOUT_KERNELS)
    gradient: Literal["adjoint", "autodiff"] = "adjoint"

    def __post_init__(self):
        if self.gradient not in ("adjoint", "autodiff"):
            raise ValueError(f"gradient must be 'adjoint' or 'autodiff', got {self.gradient!r}")
        if self.backend not in ROLLOUT_BACKENDS:
            raise ValueError(f"backend must be one of {ROLLOUT_BACKENDS}, got {self.backend!r}")
        if self.kernel not in ROLLOUT_KERNELS:
            raise ValueError(f"kernel must be one of {ROLLOUT_KERNELS}, got {self.kernel!r}")
        if self.kernel == "numba" and self.gradient == "autodiff":
            raise ValueError("gradient='autodiff' differentiates the lax.scan: it needs kernel 'xla' (or 'auto')")
        for name in ("bound_x", "bound_v"):  # None: no bound (library use; a flag always gives one)
            value = getattr(self, name)
            positive = value is None or (math.isfinite(value) and value > 0)
            check_setting(positive, name, value, "must be a positive number")
        check_setting(self.deer_tol > 0, "deer_tol", self.deer_tol, "must be positive")
        for name in ("unroll", "deer_max_iter"):
            check_setting(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")


def resolve_rollout_kernel(config: RolloutConfig, backend: str | None = None, encoder_scan: str = "numba") -> str:
    """The kernel "auto" stands for beside encoders run by `encoder_scan` (resolved): "numba" on
    CPU beside the numba encoder kernels (30-60 ms off the default model's step), else "xla":
    beside an XLA encoder scan the numba rollout takes only ~4 % off a small model's step but keeps
    the run's programs out of JAX's compilation cache (it does not serialise host callbacks),
    which costs a short recipe more (the demo run again: 98 s against 46 s; docs/performance.md).
    Always "xla" for gradient="autodiff"."""
    if config.kernel != "auto":
        return config.kernel
    on_cpu = (backend or jax.default_backend()) == "cpu"
    return "numba" if on_cpu and config.gradient == "adjoint" and encoder_scan == "numba" else "xla"


def soft_tanh(u: jax.Array, bound: float | None) -> jax.Array:
    """bound * tanh(u / bound): the identity near 0, never beyond +-bound. None: no bound."""
    return u if bound is None else bound * jnp.tanh(u / bound)


def vector_field(x, v, omega2, gamma, W, config: RolloutConfig):
    """(x', v') at state (x, v) with drives held. x, v, omega2, gamma: (B,); W: (B, P, P)."""
    kx, kv = (soft_tanh(x, config.bound_x), soft_tanh(v, config.bound_v)) if config.clamp_stages else (x, v)
    return v, -omega2 * x - gamma * v - kernel_value(W, kx, kv)


def rk4_step(x, v, omega2, gamma, W, config: RolloutConfig):
    """One classic RK4 step of size `config.step_size`, then the soft-tanh saturation.

    x, v, omega2, gamma: (B,); W: (B, P, P). Returns the new (x, v), each (B,).
    """
    h = config.step_size

    def f(x_, v_):
        return vector_field(x_, v_, omega2, gamma, W, config)

    k1x, k1v = f(x, v)
    k2x, k2v = f(x + 0.5 * h * k1x, v + 0.5 * h * k1v)
    k3x, k3v = f(x + 0.5 * h * k2x, v + 0.5 * h * k2v)
    k4x, k4v = f(x + h * k3x, v + h * k3v)
    x = x + h / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
    v = v + h / 6.0 * (k1v + 2.0 * k2v + 2.0 * k3v + k4v)
    return soft_tanh(x, config.bound_x), soft_tanh(v, config.bound_v)


def rollout(drives: Drives, x0: jax.Array, v0: jax.Array, horizon: int, config: RolloutConfig = RolloutConfig(),
            length=None):
    """Integrates the ODE autonomously from (x0, v0) for `horizon` samples.

    Only the state is integrated; the drives are given (computed from the data, "teacher
    forced") and the drive of sample k is held over step k.

    Args:
      drives: `Drives` of length L >= horizon (K is not used).
      x0, v0: (B,) initial state.
      horizon: H, the number of output samples (H - 1 steps); static.
      config: integration settings.
      length: None, or a traced horizon n <= H: only the first n - 1 steps are integrated (a
        `lax.cond` per step skips the others, forward and backward); later samples hold the
        state at n - 1 and carry no gradient.

    Returns:
      x_hat: (B, H) with x_hat[:, 0] = x0.
    """
    if not 1 <= horizon <= drives.omega.shape[1]:
        raise ValueError(f"horizon {horizon} must be in [1, segment length {drives.omega.shape[1]}]")
    active_steps = None if length is None else length - 1
    return state_trajectory(jnp.square(drives.omega), drives.gamma, drives.W, x0, v0, horizon - 1, config,
                            active_steps)[..., 0]


def state_trajectory(omega2, gamma, W, x0, v0, steps: int, config: RolloutConfig = RolloutConfig(),
                     active_steps=None):
    """The state (x, v) after each of `steps` sequential RK4 steps, one `lax.scan`.

    Args:
      omega2, gamma: (B, >= steps) per-sample omega^2 and gamma.
      W: (B, >= steps, P, P) kernel weights.
      x0, v0: (B,) initial state.
      steps: number of steps (static).
      config: integration settings; `config.gradient` chooses how it is differentiated.
      active_steps: None (all), or a traced count: steps from then on keep the state.

    Returns:
      (B, steps + 1, 2): (x, v) with the initial state first.
    """
    if resolve_rollout_kernel(config) == "numba":
        from ouroboros_jax.ode.numba_rollout import numba_state_trajectory

        return numba_state_trajectory(omega2, gamma, W, x0, v0, steps, config, active_steps)
    if config.gradient == "adjoint":
        return _adjoint_trajectory(omega2, gamma, W, x0, v0, active_steps, steps, config)
    return _forward_trajectory(omega2, gamma, W, x0, v0, active_steps, steps, config)


def _drive_at(k, omega2, gamma, W):
    # Each step reads its drives in place: W[:, k] is B contiguous P x P blocks. A time-major
    # copy of W first would read and write all of it once more (measured: forward 1.7x slower).
    return tuple(jax.lax.dynamic_index_in_dim(a, k, axis=1, keepdims=False) for a in (omega2, gamma, W))


def _if_active(k, active_steps, step, skip, *operands):
    """step(*operands) for k < active_steps, else skip(*operands): a real branch, since the count
    is shared by every seed of a vmapped program."""
    if active_steps is None:
        return step(*operands)
    return jax.lax.cond(k < active_steps, step, skip, *operands)


def _forward_trajectory(omega2, gamma, W, x0, v0, active_steps, steps: int, config: RolloutConfig):
    def step(state, k):
        state = _if_active(k, active_steps, lambda s: rk4_step(*s, *_drive_at(k, omega2, gamma, W), config),
                           lambda s: s, state)
        return state, jnp.stack(state, axis=-1)

    _, following = jax.lax.scan(step, (x0, v0), jnp.arange(steps), unroll=config.unroll)
    return jnp.concatenate([jnp.stack([x0, v0], axis=-1)[:, None], jnp.swapaxes(following, 0, 1)], axis=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _adjoint_trajectory(omega2, gamma, W, x0, v0, active_steps, steps: int, config: RolloutConfig):
    """`_forward_trajectory` whose backward pass is the discrete adjoint: a reverse scan that
    recomputes step k from the saved state s_k and pulls the cotangent of s_{k+1} back through
    it (`jax.vjp` of one RK4 step). Saves only the trajectory (B, steps + 1, 2) and the drives."""
    return _forward_trajectory(omega2, gamma, W, x0, v0, active_steps, steps, config)


def _adjoint_fwd(omega2, gamma, W, x0, v0, active_steps, steps, config):
    trajectory = _forward_trajectory(omega2, gamma, W, x0, v0, active_steps, steps, config)
    return trajectory, (omega2, gamma, W, trajectory, active_steps)


def _adjoint_bwd(steps, config, residuals, g_trajectory):
    omega2, gamma, W, trajectory, active_steps = residuals

    def pull_back(g_next, k):  # g_next: total cotangent of s_{k+1}, (B, 2)
        s = jax.lax.dynamic_index_in_dim(trajectory, k, axis=1, keepdims=False)
        _, pullback = jax.vjp(lambda x, v, *drive: rk4_step(x, v, *drive, config), s[:, 0], s[:, 1],
                              *_drive_at(k, omega2, gamma, W))
        g_x, g_v, *g_drive = pullback((g_next[:, 0], g_next[:, 1]))
        return jnp.stack([g_x, g_v], axis=-1), tuple(g_drive)

    def held(g_next, k):  # a skipped step is the identity
        return g_next, tuple(jnp.zeros(a.shape[:1] + a.shape[2:], a.dtype) for a in (omega2, gamma, W))

    def step(g_next, k):
        g_s, g_drive = _if_active(k, active_steps, pull_back, held, g_next, k)
        return g_s + jax.lax.dynamic_index_in_dim(g_trajectory, k, axis=1, keepdims=False), g_drive

    g0, g_drives = jax.lax.scan(step, g_trajectory[:, steps], jnp.arange(steps), reverse=True, unroll=config.unroll)

    def batch_major(g, like):  # (steps, B, ...) -> (B, L, ...), zero past the last step
        g = jnp.swapaxes(g, 0, 1)
        return jnp.concatenate([g, jnp.zeros((g.shape[0], like.shape[1] - steps) + g.shape[2:], g.dtype)], axis=1)

    no_gradient = None if active_steps is None else np.zeros(np.shape(active_steps), jax.dtypes.float0)
    return (*(batch_major(g, a) for g, a in zip(g_drives, (omega2, gamma, W))), g0[:, 0], g0[:, 1], no_gradient)


_adjoint_trajectory.defvjp(_adjoint_fwd, _adjoint_bwd)


def initial_state(x: jax.Array, v: jax.Array, ic_mask: jax.Array | None = None, key: jax.Array | None = None,
                  noise_rms: float | None = None):
    """The rollout's initial condition; no gradient flows into it.

    By default the data state at sample 0 (x[:, 0], v[:, 0]). Where `ic_mask` is True (cold-start
    examples) x0 and v0 are independent N(0, noise_rms^2) draws from `key` instead.

    Args:
      x, v: (B, L) data state (audio and its velocity in rescaled time).
      ic_mask: (B,) bool or None.
      key: PRNG key, required with `ic_mask`.
      noise_rms: standard deviation of the cold-start initial state (--ic_noise_rms), required
        with `ic_mask`.

    Returns:
      (x0, v0), each (B,).
    """
    x0, v0 = x[:, 0], v[:, 0]
    if ic_mask is not None:
        if key is None or noise_rms is None:
            raise ValueError("a cold start (ic_mask) needs its key and noise_rms")
        noise = noise_rms * jax.random.normal(key, (2, x.shape[0]), dtype=x.dtype)
        x0 = jnp.where(ic_mask, noise[0], x0)
        v0 = jnp.where(ic_mask, noise[1], v0)
    return jax.lax.stop_gradient(x0), jax.lax.stop_gradient(v0)


def teacher_acceleration(drives: Drives, x: jax.Array, v: jax.Array) -> jax.Array:
    """The model's acceleration on the data state, -omega^2 x - gamma v - K. All (B, L)."""
    return -jnp.square(drives.omega) * x - drives.gamma * v - drives.K
