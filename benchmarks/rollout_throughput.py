"""Throughput of the rollout alone: forward, and forward + backward to the drives.

    python benchmarks/rollout_throughput.py                       # the full grid
    python benchmarks/rollout_throughput.py --batches 8,64 --horizons 512 --unrolls 1,4
    python benchmarks/rollout_throughput.py --quick               # tiny shapes, a smoke test

One JSON line per (backend, mode, B, H, unroll) with `sample_steps_per_s` = B (H - 1) / median
and `drive_bytes_per_sample_step`, the drive data one example reads per step (omega^2, gamma and
W in float32), for the bandwidth analysis. DEER lines add its Newton iteration counts (mean and
max over the batch; the solve runs until the slowest example converges) and fallbacks; `unroll`
only affects DEER's fallback scan.

    python benchmarks/rollout_throughput.py --backend scan,deer --unrolls 1   # issue 8's grid
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import shared_flags
from absl import flags
from timing import device_info, emit, measure, versions

from ouroboros_jax import cli
from ouroboros_jax.errors import InputError, report_input_errors
from ouroboros_jax.model.ouroboros import Drives
from ouroboros_jax.model.polynomial import structural_mask
from ouroboros_jax.ode.deer import deer_rollout
from ouroboros_jax.ode.dynamics import RolloutConfig, rollout


def deer_with_counts(drives, x0, v0, horizon, config):
    """DEER from the held IC (the cold-start guess), with its Newton counts for the JSON."""
    x_hat, stats = deer_rollout(drives, x0, v0, horizon, config)
    return x_hat, {"newton_iterations_mean": jnp.mean(stats.iterations),
                   "newton_iterations_max": jnp.max(stats.iterations), "fallbacks": jnp.sum(stats.fell_back)}


# name -> fn(drives, x0, v0, horizon, config) -> (x_hat (B, H), {name: scalar} to report). A new
# backend is one entry here.
BACKENDS = {
    "scan": lambda drives, x0, v0, horizon, config: (rollout(drives, x0, v0, horizon, config), {}),
    "deer": deer_with_counts,
}
MODES = ("forward", "forward_backward")
QUICK = {"batches": ["2"], "horizons": ["64"], "unrolls": ["1", "2"], "repeats": 2}

FLAGS = cli.flag_set()
flags.DEFINE_list("backend", ["scan"], f"Rollout backends to time, any of {sorted(BACKENDS)}.", flag_values=FLAGS)
flags.DEFINE_list("modes", list(MODES), f"Any of {MODES}.", flag_values=FLAGS)
flags.DEFINE_list("batches", ["8", "64", "512"], "Batch sizes B.", flag_values=FLAGS)
flags.DEFINE_list("horizons", ["512", "2048"], "Horizons H (samples; H - 1 steps).", flag_values=FLAGS)
flags.DEFINE_list("unrolls", ["1", "2", "4", "8"], "lax.scan unroll factors.", flag_values=FLAGS)
flags.DEFINE_integer("n_poly", 16, "P, the kernel's powers per state variable (n_kernels + 1).", flag_values=FLAGS)
shared_flags.define_repeats(FLAGS, "calls", repeats=5)
shared_flags.define_quick(FLAGS, QUICK)

SAMPLE_RATE = 44100.0


def smooth_drives(key: jax.Array, batch: int, length: int, n_poly: int) -> Drives:
    """Random slowly varying drives in the regime of trained models, float32.

    omega near 2 pi 2 kHz / 44.1 kHz per sample, |gamma| <= 2e-3, W ~ 1e-3 with the structural
    zeros; each varies by +-10 % over the segment. Smooth drives matter: a sharp one would not
    change the work per step, but an exploding rollout would fill the timing with inf and NaN.

    Returns:
      `Drives` with omega, gamma, K: (batch, length) and W: (batch, length, P, P); K is zero
      (the rollout does not read it).
    """
    k_omega, k_gamma, k_w, k_phase = jax.random.split(key, 4)
    t = jnp.arange(length) / length
    phase = jax.random.uniform(k_phase, (batch, 1), maxval=2 * jnp.pi)
    wobble = 1.0 + 0.1 * jnp.sin(2 * jnp.pi * t[None, :] + phase)  # (B, L)
    omega0 = 2 * jnp.pi * jax.random.uniform(k_omega, (batch, 1), minval=1500.0, maxval=2500.0) / SAMPLE_RATE
    gamma0 = jax.random.uniform(k_gamma, (batch, 1), minval=-2e-3, maxval=2e-3)
    mask = structural_mask(n_poly, keep_const=True)[None, None]
    w0 = 1e-3 * jax.random.normal(k_w, (batch, 1, n_poly, n_poly)) * mask
    return Drives(omega=omega0 * wobble, gamma=gamma0 * wobble, W=w0 * wobble[:, :, None, None],
                  K=jnp.zeros((batch, length)))


def compiled(backend, mode: str, horizon: int, config: RolloutConfig):
    """The jitted call to time: drives, x0, v0 -> (x_hat, counts) (forward) or
    (d(mean x_hat^2)/d drives, counts)."""
    forward = functools.partial(BACKENDS[backend], horizon=horizon, config=config)
    if mode == "forward":
        return jax.jit(forward)

    def loss(drives, x0, v0):
        x_hat, counts = forward(drives, x0, v0)
        return jnp.mean(jnp.square(x_hat)), counts

    return jax.jit(jax.grad(loss, has_aux=True))


@report_input_errors
def main(argv):
    shared_flags.begin(argv, FLAGS, QUICK)
    for name, allowed in ("backend", BACKENDS), ("modes", MODES):
        if unknown := set(FLAGS[name].value) - set(allowed):
            raise InputError(f"--{name}: unknown {sorted(unknown)}; use any of {sorted(allowed)}")
    p = FLAGS.n_poly
    drive_bytes = 4 * (2 + p * p)  # float32 omega^2, gamma and W of one example for one step
    for batch, horizon in itertools.product(map(int, FLAGS.batches), map(int, FLAGS.horizons)):
        drives = smooth_drives(jax.random.key(0), batch, horizon, p)
        x0, v0 = jnp.full((batch,), 0.1), jnp.zeros((batch,))
        for backend, mode, unroll in itertools.product(FLAGS.backend, FLAGS.modes, map(int, FLAGS.unrolls)):
            fn = compiled(backend, mode, horizon, RolloutConfig(unroll=unroll))
            timing = measure(lambda: fn(drives, x0, v0), jax.block_until_ready, FLAGS.repeats, FLAGS.warmup)
            counts = {name: value.item() for name, value in fn(drives, x0, v0)[1].items()}
            throughput = batch * (horizon - 1) / timing["median_s"]
            emit({"benchmark": "rollout_throughput", "impl": "jax",
                  "config": {"backend": backend, "mode": mode, "batch": batch, "horizon": horizon, "n_poly": p,
                             "unroll": unroll, "dtype": "float32"},
                  "device": device_info(), "versions": versions(), **timing,
                  "sample_steps_per_s": throughput, "drive_bytes_per_sample_step": drive_bytes,
                  "drive_read_gb_per_s": throughput * drive_bytes / 1e9, **counts})


if __name__ == "__main__":
    cli.run(main, FLAGS)
