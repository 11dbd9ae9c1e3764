"""Horizon curriculum and loss-weight warm-ups (docs/method.md, "Horizon curriculum and warm-ups").

Pure functions of the epoch. `epoch` is the global 0-based epoch of the run and `n_epochs` the
run's total number of epochs, so seed culling does not restart the curriculum (the reference's
did). Horizons are Python ints; the trainer passes them to its compiled programs as data,
one program per group of horizons that share their STFT configs (`program_horizons`).
"""

import jax.numpy as jnp

from ouroboros_jax.errors import InputError
from ouroboros_jax.model.lowpass import gaussian_radius
from ouroboros_jax.objective.losses import LossWeights, stft_configs_for_horizon

HORIZON_SCHEDULES = ("geom", "linear", "const", "pow2")


def pow2_horizon_buckets(h_min: int, h_max: int) -> tuple[int, ...]:
    """Horizons of the `pow2` schedule: h_min, 2 h_min, 4 h_min, ... (all < h_max), then h_max.

    Example: (512, 2048) -> (512, 1024, 2048); (300, 1000) -> (300, 600, 1000).
    """
    buckets = []
    h = h_min
    while h < h_max:
        buckets.append(h)
        h *= 2
    return (*buckets, h_max)


def horizon_for_epoch(epoch: int, n_epochs: int, h_min: int, h_max: int, schedule: str) -> int:
    """Rollout horizon H (samples) for a 0-based global epoch of a run of `n_epochs` epochs.

    * `const`, or n_epochs <= 1: h_max.
    * `pow2`: bucket index min(epoch * n_buckets // n_epochs, n_buckets - 1) into
      `pow2_horizon_buckets(h_min, h_max)`.
    * otherwise, with t = epoch / max(1, n_epochs - 1), rounded half-to-even:
      `linear` h_min + t (h_max - h_min); `geom` h_min (h_max / h_min)^t.

    Raises:
      InputError: unknown schedule, or a ramp with not 1 <= h_min <= h_max (h_min is ignored,
        so not checked, when the horizon is constant).
    """
    if schedule not in HORIZON_SCHEDULES:
        raise InputError(
            f"--h_schedule must be one of {', '.join(HORIZON_SCHEDULES)}, got {schedule!r}"
        )
    if n_epochs <= 1 or schedule == "const":
        return h_max
    if not 1 <= h_min <= h_max:
        raise InputError(f"need 1 <= --h_min <= --h_max, got --h_min={h_min} --h_max={h_max}")
    if schedule == "pow2":
        buckets = pow2_horizon_buckets(h_min, h_max)
        return buckets[min(epoch * len(buckets) // n_epochs, len(buckets) - 1)]
    t = epoch / max(1, n_epochs - 1)
    if schedule == "linear":
        return round(h_min + t * (h_max - h_min))
    return round(h_min * (h_max / h_min) ** t)


def distinct_horizons(n_epochs: int, h_min: int, h_max: int, schedule: str) -> tuple[int, ...]:
    """The distinct horizons a run uses, in order of first use."""
    horizons = (horizon_for_epoch(e, n_epochs, h_min, h_max, schedule) for e in range(n_epochs))
    return tuple(dict.fromkeys(horizons))


def program_horizons(horizons, stft_configs, env_sigma: float | None = None) -> dict[int, int]:
    """The compiled program that serves each horizon, named by its largest horizon.

    Horizons share a program when they keep the same STFT configs (docs/method.md, "Objective":
    the set changes only where an n_fft stops fitting) and, with envelope terms (`env_sigma` in
    samples), the same envelope filter radius (capped at H - 1). The program rolls out to its
    largest horizon and leaves the later steps out of the loss (`ouroboros_jax.objective.losses`).

    Example: horizons 512..2048 with n_fft 256, 512, 1024 -> 512..1023 served by the program of
    the largest of them below 1024, 1024..2048 by that of 2048.

    Returns:
      {horizon: program horizon} for every horizon given.
    """

    def group(h):
        return stft_configs_for_horizon(stft_configs, h), None if env_sigma is None else gaussian_radius(env_sigma, h)

    largest = {}
    for h in horizons:
        largest[group(h)] = max(h, largest.get(group(h), h))
    return {h: largest[group(h)] for h in horizons}


def _ramp(epoch, warmup_epochs: int):
    """epoch / warmup_epochs while epoch < warmup_epochs, else 1; warmup 0 means no ramp."""
    if warmup_epochs <= 0:
        return 1.0
    return jnp.minimum(epoch / warmup_epochs, 1.0)


def warmup_weights(
    epoch, weights: LossWeights, spec_warmup_epochs: int, env_warmup_epochs: int
) -> LossWeights:
    """Loss weights of an epoch after the linear warm-ups (docs/method.md, "Horizon curriculum and warm-ups").

    lam_spec is scaled by epoch / spec_warmup_epochs while epoch < spec_warmup_epochs (so epoch 0
    trains on the anchor alone); lam_env and lam_env_log share the ramp
    epoch / env_warmup_epochs; lam_tf is never ramped. A warm-up of 0 epochs means no ramp.

    Args:
      epoch: global 0-based epoch (Python int or traced integer scalar).
      weights: the configured weights.
      spec_warmup_epochs: `--spec_warmup_epochs` (static).
      env_warmup_epochs: `--env_warmup_epochs` (static).

    Returns:
      LossWeights; a field with a warm-up on is a JAX scalar, the others are passed through.
    """
    spec_ramp = _ramp(epoch, spec_warmup_epochs)
    env_ramp = _ramp(epoch, env_warmup_epochs)
    return weights._replace(
        lam_spec=weights.lam_spec * spec_ramp,
        lam_env=weights.lam_env * env_ramp,
        lam_env_log=weights.lam_env_log * env_ramp,
    )
