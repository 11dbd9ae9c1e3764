"""Throughput of one full training step: encoders, anchor, rollout, MRSTFT, backward, Adam.

    python benchmarks/train_step.py                          # reference defaults, H 512, 1024, 2048
    python benchmarks/train_step.py --horizons 512 --encoder_scan sequential --unroll 4
    python benchmarks/train_step.py --quick                  # small model, tiny shapes, a smoke test

One JSON line per horizon with `samples_per_s` = B H / median: rollout samples trained per
second. The batch is fixed (`synthetic.harmonic_batch`, half of it cold start) and every timed
call starts from the same state, so every call does the same work.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from absl import app, flags

from ouroboros_jax.dynamics import RolloutConfig
from ouroboros_jax.losses import LossWeights, teacher_acceleration_variance
from ouroboros_jax.model.mamba import SCAN_IMPLS, resolve_scan_impl
from ouroboros_jax.training.step import StepConfig, init_train_state, make_optimizer, model_graphdef, train_step
from synthetic import MODELS, harmonic_batch
from timing import apply_quick, device_info, emit, measure, versions

QUICK = {"model": "small", "batch_size": 2, "segment_len": 256, "horizons": ["128"], "repeats": 2}

flags.DEFINE_enum("model", "default", sorted(MODELS), "Model size (default: the reference CLI defaults).")
flags.DEFINE_integer("batch_size", 8, "Segments per step B.")
flags.DEFINE_integer("segment_len", 2205, "Segment length L in samples (0.05 s at 44.1 kHz).")
flags.DEFINE_list("horizons", ["512", "1024", "2048"], "Rollout horizons H (<= segment_len).")
flags.DEFINE_enum("encoder_scan", "auto", SCAN_IMPLS, "Selective-scan implementation of the encoders.")
flags.DEFINE_integer("unroll", 1, "lax.scan unroll factor of the rollout.")
flags.DEFINE_integer("repeats", 5, "Timed steps per configuration.")
flags.DEFINE_integer("warmup", 1, "Untimed steps after the first (compiling) one.")
flags.DEFINE_bool("quick", False, f"Smoke test: {QUICK} unless those flags are given.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.quick:
        apply_quick(FLAGS, QUICK)
    horizons = [int(h) for h in FLAGS.horizons]
    if max(horizons) > FLAGS.segment_len:
        raise app.UsageError(f"--horizons={','.join(FLAGS.horizons)}: a horizon cannot exceed "
                             f"--segment_len={FLAGS.segment_len}")
    model = dataclasses.replace(MODELS[FLAGS.model], scan_impl=FLAGS.encoder_scan)
    batch_size, length = FLAGS.batch_size, FLAGS.segment_len
    data = harmonic_batch(batch_size, length, model.sample_rate, model.time_scale)
    tf_var = jnp.float32(teacher_acceleration_variance(data.d2x))  # of the batch: it is the whole "training set"
    batch = jax.tree_util.tree_map(jnp.asarray, data)
    weights = LossWeights(*(jnp.float32(w) for w in LossWeights()))  # arrays, as the run loop passes them
    optimizer = make_optimizer()
    state = init_train_state(model, optimizer, jax.random.key(0))
    for horizon in horizons:
        config = StepConfig(horizon=horizon, rollout=RolloutConfig(unroll=FLAGS.unroll))
        step = jax.jit(functools.partial(train_step, graphdef=model_graphdef(model), optimizer=optimizer,
                                         config=config))
        timing = measure(lambda: step(state, batch, weights, tf_var), jax.block_until_ready,
                         FLAGS.repeats, FLAGS.warmup)
        emit({"benchmark": "train_step", "impl": "jax",
              "config": {"model": FLAGS.model, "n_poly": model.n_poly, "n_layers": model.n_layers,
                         "d_state": model.d_state, "d_conv": model.d_conv, "expand_factor": model.expand_factor,
                         "batch": batch_size, "segment_len": length, "horizon": horizon,
                         "encoder_scan": resolve_scan_impl(FLAGS.encoder_scan), "unroll": FLAGS.unroll, "dtype": "float32"},
              "device": device_info(), "versions": versions(), **timing,
              "samples_per_s": batch_size * horizon / timing["median_s"]})


if __name__ == "__main__":
    app.run(main)
