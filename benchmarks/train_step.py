"""Throughput of one full training step: encoders, anchor, rollout, MRSTFT, backward, Adam.

    python benchmarks/train_step.py                          # reference defaults, H 512, 1024, 2048
    python benchmarks/train_step.py --horizons 512 --encoder_scan sequential,fused --unroll 4
    python benchmarks/train_step.py --breakdown              # where the time of one step goes
    python benchmarks/train_step.py --breakdown --horizons 2048 --encoder_scan numba --rollout_kernel xla,numba
    python benchmarks/train_step.py --quick                  # small model, tiny shapes, a smoke test

One JSON line per encoder scan, rollout kernel and horizon with `samples_per_s` = B H / median: rollout samples
trained per second. The batch is fixed (`synthetic.harmonic_batch`, half of it cold start) and
every timed call starts from the same state, so every call does the same work.

The default path (the kernels a run without flags gets: "auto" resolved for the model) always
comes first, then the other encoder scans and rollout kernels given; each concrete pair once.

`--breakdown` times the parts of the step separately, each jitted alone, in alternating rounds
over the encoder scans and rollout kernels given: the drives (three encoders, heads, low-pass, K) forward and
forward + backward (of a fixed cotangent), the rollout likewise (gradient w.r.t. the drives),
the losses (MRSTFT of the rollout and the anchor, forward + backward), the optimiser (clip and
Adam) and the whole step. "backward" is forward + backward minus forward.
"""

import dataclasses
import functools
import statistics

import jax
import jax.numpy as jnp
import shared_flags
from absl import flags
from flax import nnx
from synthetic import MODELS, RUN, harmonic_batch, run_optimizer, run_step_config
from timing import device_info, emit, measure, versions

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.model.selective_scan import resolve_scan_impl
from ouroboros_jax.objective.losses import (
    LossWeights,
    acceleration_anchor_loss,
    mrstft_loss,
    teacher_acceleration_variance,
)
from ouroboros_jax.ode.dynamics import (
    RolloutConfig,
    initial_state,
    resolve_rollout_kernel,
    rollout,
    teacher_acceleration,
)
from ouroboros_jax.training.step import init_train_state, model_graphdef, train_step

QUICK = {"model": "small", "batch_size": 2, "segment_len": 256, "horizons": ["128"], "repeats": 2}

FLAGS = cli.flag_set()
shared_flags.define_segments(FLAGS, model="default")
shared_flags.define_horizons(FLAGS, "segment_len")
shared_flags.define_kernels(FLAGS)
flags.DEFINE_integer("unroll", 1, "lax.scan unroll factor of the rollout.", flag_values=FLAGS)
shared_flags.define_repeats(FLAGS, "steps", repeats=5)
flags.DEFINE_bool("breakdown", False, "Time the parts of the step (module docstring) instead of whole steps.",
                  flag_values=FLAGS)
shared_flags.define_quick(FLAGS, QUICK)


@dataclasses.dataclass
class StepBench:
    """The JAX training step of one configuration on the fixed synthetic batch; `step(H)` runs it."""

    model_name: str = "default"
    encoder_scan: str = "auto"
    batch_size: int = 8
    segment_len: int = 2205
    unroll: int = 1
    rollout_gradient: str = "adjoint"
    rollout_kernel: str = "auto"

    def __post_init__(self):
        self.model = dataclasses.replace(MODELS[self.model_name], scan_impl=self.encoder_scan)
        data = harmonic_batch(self.batch_size, self.segment_len, self.model.sample_rate, self.model.time_scale)
        self.tf_var = jnp.float32(teacher_acceleration_variance(data.d2x))  # of the batch: the whole "training set"
        self.batch = jax.tree_util.tree_map(jnp.asarray, data)
        # Arrays, as the run loop passes them.
        self.weights = LossWeights(*(jnp.float32(w) for w in RUN.objective.weights))
        self.optimizer = run_optimizer()
        self.state = init_train_state(self.model, self.optimizer, jax.random.key(0))
        self.graphdef = model_graphdef(self.model)
        # "auto" resolved beside the encoders, as a run resolves it (`records.resolved_kernels`, in `Setup.build`).
        kernel = resolve_rollout_kernel(RolloutConfig(gradient=self.rollout_gradient, kernel=self.rollout_kernel),
                                        encoder_scan=resolve_scan_impl(self.encoder_scan, self.model.d_inner))
        self.rollout_config = RolloutConfig(unroll=self.unroll, gradient=self.rollout_gradient, kernel=kernel)

        self._steps = {}  # horizon -> jitted step

    def step(self, horizon: int):
        if horizon not in self._steps:
            config = run_step_config(horizon, self.model, self.rollout_config)
            self._steps[horizon] = jax.jit(functools.partial(train_step, graphdef=self.graphdef,
                                                             optimizer=self.optimizer, config=config))
        return self._steps[horizon](self.state, self.batch, self.weights, self.tf_var, None, RUN.objective.ic_noise_rms)

    def config_record(self, horizon: int) -> dict:
        m = self.model
        return {"model": self.model_name, "n_poly": m.n_poly, "n_layers": m.n_layers, "d_state": m.d_state,
                "d_conv": m.d_conv, "expand_factor": m.expand_factor, "batch": self.batch_size,
                "segment_len": self.segment_len, "horizon": horizon,
                "encoder_scan": resolve_scan_impl(m.scan_impl, m.d_inner),
                "unroll": self.unroll, "rollout_gradient": self.rollout_gradient,
                "rollout_kernel": resolve_rollout_kernel(self.rollout_config), "dtype": "float32"}

    def parts(self, horizon: int) -> dict:
        """The step's parts as zero-argument callables (module docstring), all jitted."""
        batch, graphdef = self.batch, self.graphdef
        v = self.model.time_scale * batch.dxdt

        def drives_of(params):
            return nnx.merge(graphdef, params)(batch.x, batch.dxdt)

        drives = jax.jit(drives_of)(self.state.params)
        leaves, treedef = jax.tree_util.tree_flatten(drives)
        keys = jax.random.split(jax.random.key(1), len(leaves))
        cotangent = jax.tree_util.tree_unflatten(treedef, [jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)])

        def pulled(f, tangent):
            return lambda *a: sum(jnp.vdot(u, w) for u, w in zip(jax.tree_util.tree_leaves(f(*a)),
                                                                  jax.tree_util.tree_leaves(tangent)))

        x0, v0 = initial_state(batch.x, v, batch.cold_start, jax.random.key(2), RUN.objective.ic_noise_rms)

        def rolled(d):
            return rollout(d, x0, v0, horizon, self.rollout_config)

        x_hat = jax.jit(rolled)(drives)
        target = batch.x[:, :horizon]

        def losses(x_hat, d):
            anchor = acceleration_anchor_loss(teacher_acceleration(d, batch.x, v), batch.d2x, self.tf_var)
            return mrstft_loss(x_hat, target) + anchor

        grads = jax.jit(jax.grad(pulled(drives_of, cotangent)))(self.state.params)
        calls = {
            "drives_forward": (jax.jit(drives_of), self.state.params),
            "drives_forward_backward": (jax.jit(jax.grad(pulled(drives_of, cotangent))), self.state.params),
            "rollout_forward": (jax.jit(rolled), drives),
            "rollout_forward_backward": (jax.jit(jax.grad(pulled(rolled, x_hat))), drives),
            "losses_forward_backward": (jax.jit(jax.grad(losses, argnums=(0, 1))), x_hat, drives),
            "optimiser": (jax.jit(self.optimizer.update), grads, self.state.opt_state, self.state.params),
        }
        parts = {name: functools.partial(f, *args) for name, (f, *args) in calls.items()}
        parts["step"] = functools.partial(self.step, horizon)
        return parts


def kernel_pairs(model_name: str, encoder_scans: list, rollout_kernels: list, rollout_gradient: str) -> list:
    """The (encoder scan, rollout kernel) pairs to time, as the concrete kernels "auto" resolves to:
    the default path (what a run without flags gets) first, then the others given, each once."""
    d_inner = MODELS[model_name].d_inner

    def concrete(scan, kernel):
        scan = resolve_scan_impl(scan, d_inner)
        return scan, resolve_rollout_kernel(RolloutConfig(gradient=rollout_gradient, kernel=kernel), encoder_scan=scan)

    pairs = [concrete("auto", "auto")] + [concrete(s, k) for s in encoder_scans for k in rollout_kernels]
    return list(dict.fromkeys(pairs))


def breakdown(benches: list[StepBench], horizons: list[int], repeats: int) -> None:
    """Times every part of every bench in alternating rounds (noise hits all alike); one JSON line each."""
    for horizon in horizons:
        parts = [b.parts(horizon) for b in benches]
        for p in parts:
            for f in p.values():
                jax.block_until_ready(f())  # compile
        times = [{name: [] for name in p} for p in parts]
        for _ in range(repeats):
            for p, t in zip(parts, times):
                for name, f in p.items():
                    t[name].append(measure(f, jax.block_until_ready, repeats=1, warmup=0)["median_s"])
        for b, t in zip(benches, times):
            median = {name: statistics.median(v) for name, v in t.items()}
            record = {name + "_s": value for name, value in median.items()}
            for part in ("drives", "rollout"):
                record[f"{part}_backward_s"] = median[f"{part}_forward_backward"] - median[f"{part}_forward"]
            emit({"benchmark": "train_step_breakdown", "impl": "jax", "config": b.config_record(horizon),
                  "device": device_info(), "versions": versions(), "repeats": repeats, **record})


@report_input_errors
def main(argv):
    shared_flags.begin(argv, FLAGS, QUICK)
    horizons = shared_flags.checked_horizons(FLAGS, "horizons", "segment_len")
    benches = [StepBench(FLAGS.model, scan, FLAGS.batch_size, FLAGS.segment_len, FLAGS.unroll, FLAGS.rollout_gradient,
                         kernel) for scan, kernel in kernel_pairs(FLAGS.model, FLAGS.encoder_scan, FLAGS.rollout_kernel,
                                                                  FLAGS.rollout_gradient)]
    if FLAGS.breakdown:
        breakdown(benches, horizons, FLAGS.repeats)
        return
    for bench in benches:
        for horizon in horizons:
            timing = measure(lambda: bench.step(horizon), jax.block_until_ready, FLAGS.repeats, FLAGS.warmup)
            emit({"benchmark": "train_step", "impl": "jax", "config": bench.config_record(horizon),
                  "device": device_info(), "versions": versions(), **timing,
                  "samples_per_s": bench.batch_size * horizon / timing["median_s"]})


if __name__ == "__main__":
    cli.run(main, FLAGS)
