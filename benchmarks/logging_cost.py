"""What logging costs a run per epoch: TensorBoard scalars and the checkpoint media, at S seeds.

    python benchmarks/logging_cost.py                   # 64 seeds of the demo (32 steps per epoch)
    python benchmarks/logging_cost.py --quick           # 4 seeds, a smoke test

`Logbook.epoch` (every step's scalars of every seed, written once after the epoch from the
metric arrays, and the console line) and `Logbook.media` (audio and a spectrogram figure per seed
shown) on synthetic metrics of the demo's shapes (experiments/demo.flags: 32 batches per epoch, a
vocalisation of 6410 samples at 32 kHz), written to a temporary folder. One JSON line: seconds
per epoch for the scalars, for the media of `--media_seeds` seeds, and for the media of every
seed (what a run without --media_seeds would draw).
"""

import contextlib
import pathlib
import sys
import tempfile
import time

import numpy as np
import shared_flags
from absl import flags
from timing import device_info, emit, versions

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.scoring.evaluation import Autonomy
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.logbook import VAL_SCALARS, Logbook
from ouroboros_jax.training.step import StepMetrics

QUICK = {"seeds": 4, "epochs": 1}
FLAGS = cli.flag_set()
flags.DEFINE_integer("seeds", 64, "Seeds S.", flag_values=FLAGS)
flags.DEFINE_integer("batches_per_epoch", 32, "Steps per epoch (the demo's).", flag_values=FLAGS)
flags.DEFINE_integer("media_seeds", 4, "--media_seeds of the run.", flag_values=FLAGS)
flags.DEFINE_integer("epochs", 3, "Epochs logged; the medians are reported.", flag_values=FLAGS)
shared_flags.define_quick(FLAGS, QUICK)
SAMPLE_RATE, VOCALISATION = 32000, 6410


def metrics(rng, n_seeds: int, n_steps: int) -> StepMetrics:
    fields = {name: rng.uniform(0.1, 1.0, (n_seeds, n_steps)).astype(np.float32) for name in StepMetrics._fields}
    fields["skipped"] = (rng.uniform(size=(n_seeds, n_steps)) < 0.01).astype(np.int32)
    fields["horizon"] = np.full((n_seeds, n_steps), 512, np.int32)
    return StepMetrics(**fields)


@report_input_errors
def main(argv):
    shared_flags.begin(argv, FLAGS, QUICK)
    n_seeds, epochs = FLAGS.seeds, FLAGS.epochs
    rng = np.random.default_rng(0)
    seed_ids = list(range(n_seeds))
    # Every breakdown value an epoch logs (its size does not change the cost).
    scores = [Autonomy(float(s), None, dict.fromkeys(VAL_SCALARS, 0.5)) for s in rng.uniform(-1, 0, n_seeds)]
    active = np.ones(n_seeds, bool)
    ran = np.ones((n_seeds, FLAGS.batches_per_epoch), bool)
    vocalisation = rng.normal(0, 0.1, VOCALISATION)
    outputs = rng.normal(0, 0.1, (n_seeds, VOCALISATION))
    timings = {"scalars_s": [], "media_s": [], "media_every_seed_s": []}
    # The console lines go to stderr: stdout is the JSON.
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(sys.stderr):
        for media_seeds, key in ((FLAGS.media_seeds, "media_s"), (n_seeds, "media_every_seed_s")):
            config = RunConfig.of(data_dir="@example", n_epochs=epochs, n_seeds=n_seeds, media_seeds=media_seeds)
            with Logbook(pathlib.Path(folder) / key, config, FLAGS.batches_per_epoch) as logbook:
                for epoch in range(epochs):
                    step_metrics = metrics(rng, n_seeds, FLAGS.batches_per_epoch)
                    t0 = time.perf_counter()
                    logbook.epoch(epoch, seed_ids, step_metrics, ran, scores, active, [1.0])
                    if key == "media_s":
                        timings["scalars_s"].append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    logbook.media(epoch, seed_ids, active, scores, vocalisation, outputs, SAMPLE_RATE)
                    timings[key].append(time.perf_counter() - t0)
    emit({"benchmark": "logging_cost", "config": {"seeds": n_seeds, "batches_per_epoch": FLAGS.batches_per_epoch,
                                                  "media_seeds": FLAGS.media_seeds, "epochs": epochs},
          "device": device_info(), "versions": versions(),
          **{k: float(np.median(v)) for k, v in timings.items()}})


if __name__ == "__main__":
    cli.run(main, FLAGS)
