"""The polynomial Ouroboros: three Mamba encoders map an audio segment to its drives (docs/method.md, "The model").

The drives are omega(t) >= 0, gamma(t) and the kernel weights W(t) (P x P), held open-loop while
the state (x, x') of

    x'' = -omega^2 x - gamma x' - sum_ij W_ij x^i (x')^j

is integrated (see `ouroboros_jax.ode.dynamics`).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ouroboros_jax.errors import check_setting
from ouroboros_jax.model.lowpass import gaussian_lowpass
from ouroboros_jax.model.mamba import MambaEncoder, uniform_init
from ouroboros_jax.model.polynomial import kernel_value, structural_mask
from ouroboros_jax.model.selective_scan import NUMBA_MIN_D_INNER, SCAN_IMPLS, ScanImpl
from ouroboros_jax.settings import setting

# osc_init constants (docs/method.md, "The model"): a marginal van-der-Pol-like limit cycle at initialisation.
GAMMA_INIT = -0.01
VDP_INIT = 0.02  # W[2, 1]: amplitude-dependent re-damping
CUBIC_INIT = 0.01  # W[3, 0]: hardening spring
CONST_INIT = 1e-3  # W[0, 0]: constant forcing that lets the cycle ignite (only with keep_const)

_D_MODEL = 2  # encoder width: the state features [x, x'] (d_data = 1 audio channel)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Capacity and structure of the model. Defaults are the reference's CLI defaults (docs/cli.md, "Model").

    Attributes:
      n_kernels: highest power of x and x' in the kernel (nTerms); P = n_kernels + 1.
      n_layers, d_state, d_conv, expand_factor: each Mamba stack's shape.
      drive_lowpass_ms: sigma of the zero-phase Gaussian low-pass of the drives; 0 disables it.
      keep_const: keep the constant kernel coefficient W[0, 0].
      osc_init: start as a marginal limit cycle (osc_init in docs/method.md, "The model").
      sample_rate: audio sample rate in Hz; dt = 1 / sample_rate.
      tau: model time constant in seconds; None means dt (one sample per unit of rescaled time).
      scan_impl: how the encoders' selective scan runs: "auto" (the fastest per backend and
        inner width, `resolve_scan_impl`), "fused", "associative", "sequential", "chunked", "pallas"
        or "numba" (`ouroboros_jax.model.selective_scan`); the result is the same to float32 rounding.
    """

    n_kernels: int = setting(15, "Highest power of x and x' in the kernel polynomial (nTerms).")
    n_layers: int = setting(3, "Mamba layers per encoder.")
    d_state: int = setting(4, "Mamba state size.")
    d_conv: int = setting(4, "Mamba convolution width.")
    expand_factor: int = setting(10, "Mamba expansion factor.")
    drive_lowpass_ms: float = setting(1.0, "Sigma of the zero-phase Gaussian low-pass of the drives (0: off).")
    keep_const: bool = setting(True, "Keep the constant kernel coefficient W[0,0].")
    osc_init: bool = setting(False, "Start every seed as a marginal limit cycle.")
    sample_rate: float = 44100.0
    tau: float | None = None
    scan_impl: ScanImpl = setting("auto", "Selective-scan implementation of the encoders (auto: on CPU numba from an "
                                  f"inner width 2 * expand_factor of {NUMBA_MIN_D_INNER} on, else fused; associative "
                                  "on GPU).", flag="encoder_scan", choices=SCAN_IMPLS)

    def __post_init__(self):
        if self.scan_impl not in SCAN_IMPLS:
            raise ValueError(f"scan_impl must be one of {SCAN_IMPLS}, got {self.scan_impl!r}")
        for name in ("n_kernels", "n_layers", "d_state", "d_conv", "expand_factor"):
            check_setting(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        check_setting(self.drive_lowpass_ms >= 0, "drive_lowpass_ms", self.drive_lowpass_ms,
                      "must be >= 0 (0: no low-pass)")

    @property
    def n_poly(self) -> int:
        """P, the number of powers 0..n_kernels of each state variable."""
        return self.n_kernels + 1

    @property
    def d_inner(self) -> int:
        """The encoders' inner width."""
        return self.expand_factor * _D_MODEL

    @property
    def dt(self) -> float:
        return 1.0 / self.sample_rate

    @property
    def time_scale(self) -> float:
        """tau / dt: converts per-sample derivatives to rescaled time s = t / tau."""
        return 1.0 if self.tau is None else self.tau / self.dt


class Drives(NamedTuple):
    """The time-varying drives of one batch of segments.

    Attributes:
      omega: (B, L) angular frequency per unit of rescaled time, >= 0.
      gamma: (B, L) damping (either sign).
      W: (B, L, P, P) kernel weights; W[..., i, j] multiplies x^i (x')^j.
      K: (B, L) kernel value on the data state, sum_ij W_ij x^i (x')^j.
    """

    omega: jax.Array
    gamma: jax.Array
    W: jax.Array
    K: jax.Array


def _sum_of_products(head: nnx.Linear, features: jax.Array) -> jax.Array:
    """head(features) as a sum over its few input features (2) of broadcast products: the same
    affine map, whose backward XLA CPU forms as reductions over the rows, where the backward of
    the (B L, 2) x (2, P P) product first copies the (B L, P P) cotangent into a transposed
    layout (the whole step at the defaults 518 -> 429 ms, docs/performance.md).

    features: (..., F) -> (..., head's outputs).
    """
    lead = (1,) * (features.ndim - 1)
    kernel, bias = head.kernel[...].reshape(lead + head.kernel.shape), head.bias[...].reshape(lead + (-1,))
    return sum(features[..., f, None] * kernel[..., f, :] for f in range(kernel.shape[-2])) + bias


class Ouroboros(nnx.Module):
    """Maps (x, dx/dt) of a segment to its `Drives`."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        p = config.n_poly

        def encoder():
            return MambaEncoder(
                _D_MODEL, config.n_layers, config.d_state, config.d_conv, config.expand_factor, rngs=rngs
            )

        def head(out_features):
            bound = _D_MODEL**-0.5
            return nnx.Linear(
                _D_MODEL, out_features, kernel_init=uniform_init(bound), bias_init=uniform_init(bound),
                rngs=rngs,
            )

        self.omega_encoder, self.gamma_encoder, self.kernel_encoder = encoder(), encoder(), encoder()
        self.omega_head, self.gamma_head, self.kernel_head = head(1), head(1), head(p * p)
        if config.keep_const:
            self._set_kernel_coefficient(0, 0, 0.0)  # the constant forcing starts at exactly 0
        if config.osc_init:
            self.gamma_head.kernel[...] = jnp.zeros_like(self.gamma_head.kernel[...])
            self.gamma_head.bias[...] = jnp.full_like(self.gamma_head.bias[...], GAMMA_INIT)
            for (i, j), value in ((2, 1), VDP_INIT), ((3, 0), CUBIC_INIT):
                if max(i, j) < p:
                    self._set_kernel_coefficient(i, j, value)
            if config.keep_const:
                self._set_kernel_coefficient(0, 0, CONST_INIT)

    def _set_kernel_coefficient(self, i: int, j: int, value: float) -> None:
        """Makes W[i, j] the constant `value`: zero weights into its head output, bias = value."""
        out = i * self.config.n_poly + j
        self.kernel_head.kernel[...] = self.kernel_head.kernel[...].at[:, out].set(0.0)
        self.kernel_head.bias[...] = self.kernel_head.bias[...].at[out].set(value)

    def encode(self, encoder: MambaEncoder, z: jax.Array) -> jax.Array:
        """Runs one encoder "bidirectionally by concatenation". z: (B, L, 2) -> (B, L, 2).

        The input is [reverse(z); z] (length 2L) and only the last L outputs are kept, so the
        output at t has seen the whole segment backwards and the forward prefix up to t.
        """
        length = z.shape[1]
        u = jnp.concatenate([z[:, ::-1], z], axis=1)
        return encoder(u, self.config.scan_impl)[:, length:]

    def __call__(self, x: jax.Array, dxdt: jax.Array) -> Drives:
        """Computes the drives of a batch of segments.

        Args:
          x: (B, L) audio.
          dxdt: (B, L) its first derivative per sample (`ouroboros_jax.first_derivative`).

        Returns:
          `Drives` with omega, gamma, K of shape (B, L) and W of shape (B, L, P, P).
        """
        cfg = self.config
        batch, length = x.shape
        p = cfg.n_poly
        v = cfg.time_scale * dxdt
        z = jnp.stack([x, v], axis=-1)
        omega = jnp.abs(self.omega_head(self.encode(self.omega_encoder, z)))[..., 0]
        gamma = self.gamma_head(self.encode(self.gamma_encoder, z))[..., 0]
        kernel_features = self.encode(self.kernel_encoder, z)
        if cfg.drive_lowpass_ms > 0:
            sigma = cfg.drive_lowpass_ms / 1000.0 * cfg.sample_rate
            omega = gaussian_lowpass(omega, sigma)
            gamma = gaussian_lowpass(gamma, sigma)
            # The low-pass is linear and its taps sum to 1, so filtering the 2 encoder channels
            # before the affine head equals filtering all P*P weight channels after it, at 1/128
            # of the cost with the default P = 16.
            kernel_features = gaussian_lowpass(kernel_features, sigma, axis=1)
        W = _sum_of_products(self.kernel_head, kernel_features).reshape(batch, length, p, p)
        W = W * structural_mask(p, cfg.keep_const)[None, None]
        return Drives(omega=omega, gamma=gamma, W=W, K=kernel_value(W, x, v))
