"""Synthetic training data and model sizes shared by the benchmarks.

Timings do not depend on what the audio says, only on its shape, so the benchmarks train on
harmonic tones instead of recordings: no data files, and the same batch on every machine.
"""

import jax.numpy as jnp
import numpy as np

from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.objective.derivatives import first_derivative, second_derivative
from ouroboros_jax.objective.losses import teacher_acceleration_variance
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.step import Batch, StepConfig, make_optimizer

MODELS = {
    "default": ModelConfig(),  # the reference CLI defaults: P 16, 3 layers, d_state 4, d_conv 4, expand 10
    "small": ModelConfig(n_kernels=3, n_layers=2, d_state=2, expand_factor=2),
}

RUN = RunConfig()  # a run's default settings: what every benchmark's step trains with


def run_optimizer():
    """The optimiser of a run with the default settings (--lr, --grad_clip)."""
    return make_optimizer(RUN.lr, RUN.grad_clip)


def run_step_config(horizon: int, model: ModelConfig, rollout) -> StepConfig:
    """The static step settings of a run with the default objective, at horizon H `horizon`."""
    return RUN.objective.step_config(horizon, model.sample_rate, rollout)


_FADE_IN_S = 0.002  # onset ramp: a step from silence would be an unrealistically broadband click


def harmonic_batch(n: int, length: int, sample_rate: float = 44100.0, time_scale: float = 1.0,
                   seed: int = 0) -> Batch:
    """n segments of a three-harmonic tone (f0 in 1.5..3 kHz, random phases), half of them cold start.

    The cold-start (ONSET-like) half is silent for its first quarter and then fades in, as a
    segment cut around a syllable onset would be; the other half is tone throughout.

    Args:
      n: number of segments B.
      length: segment length L in samples.
      sample_rate: Hz.
      time_scale: tau / dt of the model (`ModelConfig.time_scale`); scales the teacher acceleration.
      seed: NumPy seed of the frequencies and phases.

    Returns:
      `Batch` of float32 NumPy arrays x, dxdt, d2x: (n, L), and cold_start: (n,) bool.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sample_rate
    f0 = rng.uniform(1500.0, 3000.0, (n, 1, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, 3, 1))
    harmonic = np.arange(1, 4)[None, :, None]
    amplitude = 0.5 ** np.arange(3)[None, :, None]
    x = 0.2 * np.sum(amplitude * np.sin(2.0 * np.pi * harmonic * f0 * t + phase), axis=1)
    cold_start = np.arange(n) < n // 2
    onset = length // 4
    ramp = np.clip((np.arange(length) - onset) / (_FADE_IN_S * sample_rate), 0.0, 1.0)
    x[cold_start] *= ramp
    return Batch(
        x=x.astype(np.float32),
        dxdt=first_derivative(x).astype(np.float32),
        d2x=(second_derivative(x) * time_scale**2).astype(np.float32),
        cold_start=cold_start,
    )


def device_training_set(model: ModelConfig, n: int, length: int) -> tuple[Batch, float]:
    """`harmonic_batch` of n segments of `length` for `model` (its sample rate and time scale), on
    the device, and the teacher-acceleration variance of the anchor (`tf_var`)."""
    segments = harmonic_batch(n, length, model.sample_rate, model.time_scale)
    return Batch(*(jnp.asarray(a) for a in segments)), teacher_acceleration_variance(segments.d2x)
