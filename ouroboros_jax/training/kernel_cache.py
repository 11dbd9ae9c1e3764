"""The Numba kernels a run uses, loaded from Numba's on-disk cache or compiled into it, before it trains.

A Numba kernel compiles on its first call: 1-5 minutes for all of them on a 2-core CPU, a few
seconds to load from Numba's cache afterwards (`cache=True`: `__pycache__` beside the modules, or
Numba's user cache directory where that is not writable, or NUMBA_CACHE_DIR). Left to the first
training step, that call would happen inside a host callback of a running XLA program, on one
device's thread, while the other devices of the run wait for it; here it happens up front, once,
on tiny float32 inputs of the types the run passes, and the console says where the kernels came
from.
"""

import time

import numpy as np

from ouroboros_jax.ode.dynamics import RolloutConfig


def _run_encoder_kernels() -> None:
    """Runs the residual-block kernels (`numba_layer`) forward and backward once."""
    from ouroboros_jax.model import numba_layer

    rng = np.random.default_rng(0)
    d_model, width, n_state, d_conv, rank = 2, 3, 2, 4, 1
    shapes = ((1, 5, d_model), (d_model,), (d_model, width), (d_model, width), (d_conv, width), (width,),
              (width, rank + 2 * n_state), (rank, width), (width,), (n_state, width), (width,), (width, d_model))
    operands = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    operands[9] = -np.abs(operands[9])  # A < 0
    numba_layer._host_backward(*operands, *numba_layer._host_forward(*operands))


def _run_rollout_kernels() -> None:
    """Runs the rollout kernels (`numba_rollout`) forward (with and without saving) and backward once."""
    from ouroboros_jax.ode import numba_rollout

    batch, steps, size = 2, 3, 2
    f32 = np.float32
    omega2, gamma = np.ones((batch, steps), f32), np.zeros((batch, steps), f32)
    W, state = np.zeros((batch, steps, size, size), f32), np.zeros(batch, f32)
    active, config = np.int32(steps), RolloutConfig()
    numba_rollout._host_forward(omega2, gamma, W, state, state, active, steps=steps, config=config, save=False)
    trajectory, stages, end_slopes = numba_rollout._host_forward(omega2, gamma, W, state, state, active, steps=steps,
                                                                 config=config, save=True)
    numba_rollout._host_backward(stages, end_slopes, active, np.ones_like(trajectory), config=config)


def load_kernels(encoders: bool, rollout: bool) -> str | None:
    """Loads (or compiles) the encoder and/or rollout kernels; returns the console's line about them
    (None when the run uses neither)."""
    from ouroboros_jax.model import numba_layer
    from ouroboros_jax.ode import numba_rollout

    runs = [(run, module) for run, module, used in ((_run_encoder_kernels, numba_layer, encoders),
                                                    (_run_rollout_kernels, numba_rollout, rollout)) if used]
    if not runs:
        return None
    kernels = [kernel for _, module in runs for kernel in (module._forward, module._backward)]
    misses_before = sum(sum(k.stats.cache_misses.values()) for k in kernels)
    start = time.perf_counter()
    for run, _ in runs:
        run()
    seconds = time.perf_counter() - start
    compiled = sum(sum(k.stats.cache_misses.values()) for k in kernels) - misses_before
    if not compiled:
        return f"numba kernels: loaded from the cache in {seconds:.1f} s"
    return (f"numba kernels: {compiled} compiled in {seconds:.1f} s (cached in {kernels[0].stats.cache_path} for "
            "later runs)")
