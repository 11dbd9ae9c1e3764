"""The training objective (docs/method.md, "Objective"): pure, jit-compatible loss terms.

Spectral mode: `total = lam_spec * spec + lam_tf * tf + lam_env * env + lam_env_log * env_log`,
with `spec` the multi-resolution STFT loss of the rollout against the target audio, `tf` the
variance-normalised teacher-forced acceleration anchor, and the two envelope terms. The legacy
MSE-on-acceleration objective is `mse_accel_loss`.

Shapes, configurations and filter widths are static Python values; arrays are (B, ...) batches.
The rollout terms take an optional traced `length`: the signals are then the first `length`
samples of (B, H_max) buffers, and every term (frames, their reflect padding at the end of the
signal, envelopes, means) is that of the first `length` samples alone, so one compiled program
serves every horizon up to H_max (with the same STFT configs) and equals the program compiled for
that horizon to float32 rounding.
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from ouroboros_jax.model.lowpass import gaussian_lowpass, reflect_indices

DEFAULT_STFT_CONFIGS = ((256, 64), (512, 128), (1024, 256))
"""(n_fft, hop) pairs of the multi-resolution STFT loss."""

STFT_MIN_FFT = 16
"""Smallest n_fft of the fallback config used when no configured n_fft fits the horizon."""

_SC_EPS = 1e-8  # Spectral-convergence denominator guard (reference value).
_LOG_MAG_EPS = 1e-5  # Log-magnitude floor (reference value).
_ENV_MEAN_EPS = 1e-6  # Envelope-L1 normaliser guard (reference value).
_TF_VAR_FLOOR = 1e-6  # Floor of the anchor's normaliser (reference value).


def _safe_sqrt(s: jax.Array) -> jax.Array:
    """sqrt(s) for s >= 0 with a zero (not NaN) gradient at s = 0, exact elsewhere.

    Exact zeros are common: int16 silence and rollouts started at rest give zero STFT bins,
    and identical signals give a zero spectral difference.
    """
    positive = s > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)


def _frame_positions(size: int, n_fft: int, hop: int) -> np.ndarray:
    """Positions of centred frames in the signal padded by n_fft // 2, (n_frames, n_fft), static."""
    n_frames = 1 + (size + 2 * (n_fft // 2) - n_fft) // hop
    return hop * np.arange(n_frames)[:, None] + np.arange(n_fft)[None, :]


def n_stft_frames(length, n_fft: int, hop: int):
    """Frames of a centred STFT of `length` samples (int or traced)."""
    return 1 + (length + 2 * (n_fft // 2) - n_fft) // hop


def stft_magnitude(x: jax.Array, n_fft: int, hop: int, length=None) -> jax.Array:
    """Magnitude of the one-sided STFT, as torch.stft(center=True, pad_mode='reflect').

    Periodic Hann window of length n_fft, frames centred on multiples of `hop` (the signal is
    reflect-padded by n_fft // 2 on both sides), not normalised. The magnitude has a finite
    (zero) gradient at exactly zero bins.

    Args:
      x: (B, T) signals, T > n_fft // 2 (reflect padding).
      n_fft: FFT and window length (static).
      hop: frame step in samples (static).
      length: None, or a traced number of valid samples n <= T: the STFT of x[:, :n], in the
        first `n_stft_frames(n, ...)` frames (the later ones are meaningless).

    Returns:
      (B, n_fft // 2 + 1, n_frames) magnitudes, n_frames = `n_stft_frames(T, n_fft, hop)`.
    """
    pad, size = n_fft // 2, x.shape[-1]
    samples = reflect_indices(size + 2 * pad, pad, size if length is None else length)
    frames = x[:, samples[_frame_positions(size, n_fft, hop)]]  # (B, n_frames, n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    spec = jnp.fft.rfft(frames * jnp.asarray(window, dtype=x.dtype)[None, None, :], axis=-1)
    mag = _safe_sqrt(jnp.square(spec.real) + jnp.square(spec.imag))
    return jnp.swapaxes(mag, 1, 2)


def _sum_over(values: jax.Array, axes, valid=None) -> jax.Array:
    """Sum over `axes`, of the entries where `valid` (broadcastable) is True when given."""
    return jnp.sum(values if valid is None else jnp.where(valid, values, 0.0), axis=axes)


def stft_configs_for_horizon(configs, horizon: int) -> tuple:
    """The STFT configs usable on a rollout of `horizon` samples.

    Keeps the configs with n_fft <= horizon; if none fits, a single config
    (n_fft, hop) = (max(16, horizon // 2), max(1, n_fft // 4)).

    Args:
      configs: sequence of (n_fft, hop) pairs.
      horizon: rollout length H in samples.

    Returns:
      Tuple of (n_fft, hop) tuples, in the order given.
    """
    kept = tuple((int(n_fft), int(hop)) for n_fft, hop in configs if n_fft <= horizon)
    if kept:
        return kept
    n_fft = max(STFT_MIN_FFT, horizon // 2)
    return ((n_fft, max(1, n_fft // 4)),)


def mrstft_loss(pred: jax.Array, target: jax.Array, configs=DEFAULT_STFT_CONFIGS, length=None) -> jax.Array:
    """Multi-resolution STFT loss: spectral convergence + log-magnitude L1 (docs/method.md, "Objective").

    For each config kept by `stft_configs_for_horizon(configs, H)`, with A = |STFT(pred)| and
    G = |STFT(target)| per example:
    SC_b = ||G_b - A_b||_F / (||G_b||_F + 1e-8) and
    LM_b = mean_{f,t} |ln(G_b + 1e-5) - ln(A_b + 1e-5)|; the config's value is
    mean_b (SC_b + LM_b), and the loss is the mean over configs.
    Not symmetric: SC is normalised by the target's spectrum.

    Args:
      pred: (B, H) rollout.
      target: (B, H) audio.
      configs: (n_fft, hop) pairs before filtering for H (static).
      length: None (H), or the traced horizon n <= H: the loss of pred[:, :n] and target[:, :n];
        the configs are filtered for H, so n must keep the same ones (the caller's promise).

    Returns:
      Scalar loss.
    """
    chex.assert_equal_shape((pred, target))
    per_config = []
    for n_fft, hop in stft_configs_for_horizon(configs, pred.shape[-1]):
        a = stft_magnitude(pred, n_fft, hop, length)
        g = stft_magnitude(target, n_fft, hop, length)
        if length is None:
            valid, n_valid = None, g.shape[-1]
        else:
            n_valid = n_stft_frames(length, n_fft, hop)
            valid = (jnp.arange(g.shape[-1]) < n_valid)[None, None, :]
        sc = _safe_sqrt(_sum_over(jnp.square(g - a), (1, 2), valid)) / (
            _safe_sqrt(_sum_over(jnp.square(g), (1, 2), valid)) + _SC_EPS)
        log_diff = jnp.abs(jnp.log(g + _LOG_MAG_EPS) - jnp.log(a + _LOG_MAG_EPS))
        lm = _sum_over(log_diff, (1, 2), valid) / (g.shape[1] * n_valid)
        per_config.append(jnp.mean(sc + lm))
    return jnp.mean(jnp.stack(per_config))


def gaussian_envelope(y: jax.Array, sigma: float, length=None) -> jax.Array:
    """Amplitude envelope: zero-phase Gaussian low-pass of |y| along the last axis.

    The filter radius is capped at H - 1, so any H >= 2 works (the reference's envelope fails
    for H <= 265 at 2 ms and 44.1 kHz; docs/method.md, "Objective").

    Args:
      y: (..., H) signals.
      sigma: Gaussian width in samples (static); env_ms / 1000 * sample_rate.
      length: None, or the traced number of valid samples (`gaussian_lowpass`).

    Returns:
      (..., H) envelope.
    """
    return gaussian_lowpass(jnp.abs(y), sigma, axis=-1, length=length)


def _time_mean(values: jax.Array, length=None) -> jax.Array:
    """Mean over the last axis, of its first `length` entries when given. (..., H) -> (...)."""
    if length is None:
        return jnp.mean(values, axis=-1)
    valid = jnp.arange(values.shape[-1]) < length
    return _sum_over(values, -1, valid) / length


def envelope_l1_loss(pred: jax.Array, target: jax.Array, sigma: float, length=None) -> jax.Array:
    """Target-normalised envelope L1 (docs/method.md, "Objective").

    mean_b [ mean_t |e(pred) - e(target)| / (mean_t e(target) + 1e-6) ], e = `gaussian_envelope`.

    Args:
      pred: (B, H) rollout.
      target: (B, H) audio.
      sigma: envelope width in samples (static).
      length: None, or the traced horizon n <= H (as in `mrstft_loss`).

    Returns:
      Scalar loss.
    """
    chex.assert_equal_shape((pred, target))
    e_pred = gaussian_envelope(pred, sigma, length)
    e_target = gaussian_envelope(target, sigma, length)
    per_example = _time_mean(jnp.abs(e_pred - e_target), length) / (_time_mean(e_target, length) + _ENV_MEAN_EPS)
    return jnp.mean(per_example)


def envelope_log_loss(pred: jax.Array, target: jax.Array, sigma: float, eps: float = 1e-4,
                      length=None) -> jax.Array:
    """Log-ratio envelope loss: mean_{b,t} |ln(e(pred) + eps) - ln(e(target) + eps)|.

    Symmetric in over- and undershoot; eps is a noise floor that caps the penalty of a silent
    rollout at about ln(e(target) / eps).

    Args:
      pred: (B, H) rollout.
      target: (B, H) audio.
      sigma: envelope width in samples (static).
      eps: noise floor (`--env_log_eps`).
      length: None, or the traced horizon n <= H (as in `mrstft_loss`).

    Returns:
      Scalar loss.
    """
    chex.assert_equal_shape((pred, target))
    log_pred = jnp.log(gaussian_envelope(pred, sigma, length) + eps)
    log_target = jnp.log(gaussian_envelope(target, sigma, length) + eps)
    diff = jnp.abs(log_pred - log_target)
    return jnp.mean(diff) if length is None else jnp.mean(_time_mean(diff, length))


def acceleration_anchor_loss(
    pred_accel: jax.Array, target_accel: jax.Array, tf_var
) -> jax.Array:
    """Variance-normalised teacher-forced anchor: mean((pred - target)^2) / max(tf_var, 1e-6).

    Args:
      pred_accel: (B, L) model acceleration on the data state, in s-units.
      target_accel: (B, L) teacher acceleration d2x, in s-units.
      tf_var: scalar normaliser, `teacher_acceleration_variance` of the training set.

    Returns:
      Scalar loss.
    """
    chex.assert_equal_shape((pred_accel, target_accel))
    return jnp.mean(jnp.square(pred_accel - target_accel)) / jnp.maximum(tf_var, _TF_VAR_FLOOR)


def teacher_acceleration_variance(d2x) -> float:
    """Variance of the teacher acceleration over the whole training set, floored at 1e-6.

    Computed once on the host in float64, instead of the reference's batch-size-weighted mean of
    per-batch variances (docs/method.md, "Objective"). Unbiased (ddof = 1), like the reference's
    per-batch torch variance, so a single batch reproduces the reference's value exactly; over a
    training set (~1e7 values) ddof changes it by ~1e-7 relative.

    Args:
      d2x: (N, L) teacher accelerations of all training segments, in s-units (NumPy).

    Returns:
      The variance as a Python float.
    """
    return max(float(np.var(np.asarray(d2x, dtype=np.float64), ddof=1)), _TF_VAR_FLOOR)


def mse_accel_loss(pred_accel: jax.Array, target_accel: jax.Array, W=None, lam=None) -> jax.Array:
    """Legacy objective: mean_b sum_t (pred - target)^2, plus the kernel penalty.

    If `lam` is given, adds mean_b sum_{t,i,j} lam^(i+j) W[b,t,i,j]^2, which shrinks the
    high-order polynomial coefficients (lam > 1).

    Args:
      pred_accel: (B, L) predicted acceleration, in s-units.
      target_accel: (B, L) teacher acceleration, in s-units.
      W: (B, L, P, P) kernel weights; required when `lam` is given.
      lam: penalty base, or None for no penalty.

    Returns:
      Scalar loss.
    """
    chex.assert_equal_shape((pred_accel, target_accel))
    loss = jnp.mean(jnp.sum(jnp.square(pred_accel - target_accel), axis=-1))
    if lam is None:
        return loss
    if W is None:
        raise ValueError("mse_accel_loss: the lam penalty needs the kernel weights W")
    p = W.shape[-1]
    degree = np.add.outer(np.arange(p), np.arange(p))  # i + j
    penalty_weights = jnp.power(jnp.asarray(lam, dtype=W.dtype), degree)
    penalty = jnp.sum(penalty_weights[None, None] * jnp.square(W), axis=(1, 2, 3))
    return loss + jnp.mean(penalty)


class LossWeights(NamedTuple):
    """Weights of the spectral-mode loss terms, scalars or arrays (their settings, with the
    reference's defaults, are `training.config.ObjectiveConfig`'s)."""

    lam_spec: float
    lam_tf: float
    lam_env: float
    lam_env_log: float


def total_loss(components: dict, weights: LossWeights) -> jax.Array:
    """Weighted sum of the loss terms (docs/method.md, "Objective").

    A term whose configured weight is 0 is not computed by the training step: it passes a 0.0
    constant for it (so a disabled term costs nothing and cannot make the total NaN).

    Args:
      components: scalars under keys "spec", "tf", "env", "env_log".
      weights: the (warmed-up) weights.

    Returns:
      Scalar total.
    """
    return (
        weights.lam_spec * components["spec"]
        + weights.lam_tf * components["tf"]
        + weights.lam_env * components["env"]
        + weights.lam_env_log * components["env_log"]
    )
