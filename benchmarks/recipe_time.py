"""Extrapolated wall time of a whole training recipe, from a few steps of each program it needs.

    python benchmarks/recipe_time.py                                   # experiments/blk445.flags
    python benchmarks/recipe_time.py --flagfile=experiments/demo.flags
    python benchmarks/recipe_time.py --quick                           # tiny shapes, a smoke test

The recipe's flags are read as `python -m ouroboros_jax.train` reads them; the data are
synthetic (`synthetic.harmonic_batch` at the recipe's window length and 44.1 kHz, or the flags'
--sample_rate) with the recipe's number of training segments (--max_segs), so nothing is read
from --data_dir. For every epoch program the run will compile (`training/programs.py`: one per
group of horizons with the same STFT configs and per seed count), it compiles it, times
`--steps` training steps at the smallest and the largest horizon it serves (a step's time is
linear in the horizon: the rollout is), times one validation scoring pass and one checkpoint
save, and extrapolates to the recipe's epochs. Prints one JSON line: compile, train, evaluation
and checkpoint seconds and their total, with the per-program numbers.
"""

import pathlib
import statistics
import sys
import tempfile
import time

import jax
from absl import flags
from synthetic import harmonic_batch
from timing import device_info, emit, versions

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.objective.derivatives import first_derivative
from ouroboros_jax.training.checkpoints import Checkpoints
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.programs import ProgramLedger
from ouroboros_jax.training.seeds import MemberSettings, init_seeds, n_batches, seed_keys
from ouroboros_jax.training.setup import Setup
from ouroboros_jax.training.step import Batch

FLAGS = cli.flag_set()
cli.define_settings(RunConfig, FLAGS)  # the recipe's flags, as the training CLI defines them
flags.DEFINE_integer("steps", 2, "Training steps timed per program and horizon.", flag_values=FLAGS)
flags.DEFINE_float("sample_rate", 44100.0, "Sample rate of the synthetic data.", flag_values=FLAGS)
flags.DEFINE_integer("vocalisation_len", 6410, "Samples of each synthetic validation vocalisation (lead-in "
                     "included).", flag_values=FLAGS)
flags.DEFINE_bool("quick", False, "Smoke test: a tiny model, 4 epochs, short windows.", flag_values=FLAGS)
QUICK = ["--n_kernels=2", "--n_layers=1", "--d_state=2", "--expand_factor=1", "--context_len=0.01", "--max_segs=32",
         "--n_epochs=4", "--h_min=64", "--h_max=256", "--spec_configs=32,8;64,16;128,32", "--n_seeds=2",
         "--cull_frac=0.5", "--cull_keep=1", "--n_val_vocs=2", "--min_eval_vocs=2",
         "--vocalisation_len=1000"]


def seconds(call) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    return time.perf_counter() - t0


def recipe_argv(argv: list[str]) -> list[str]:
    """`argv` completed: experiments/blk445.flags unless a --flagfile is given, synthetic data, and
    with --quick the preset last. The preset is flags, not `timing.apply_quick`, because a recipe's
    flagfile sets its flags as if typed: apply_quick would keep the recipe's full model."""
    given = [a for a in argv[1:] if a.startswith("--flagfile")]
    recipe = [] if given else [f"--flagfile={pathlib.Path(__file__).parents[1] / 'experiments' / 'blk445.flags'}"]
    quick = QUICK if "--quick" in argv[1:] else []
    return [argv[0], *recipe, *argv[1:], *quick, "--data_dir=synthetic"]


@report_input_errors
def main(argv) -> None:
    cli.check_command(argv, FLAGS)
    config = cli.from_flags(RunConfig, FLAGS)
    sample_rate = FLAGS.sample_rate
    length = round(config.sampler.context_len * sample_rate)
    steps_per_epoch = n_batches(config.sampler.max_segs, config.batch_size)
    setup = Setup.build(config, sample_rate, steps_per_epoch)
    plan, program = setup.programs, setup.program
    programs = ProgramLedger(plan)
    few = harmonic_batch(FLAGS.steps * config.batch_size, length, sample_rate, setup.model.time_scale)
    data = setup.runtime.replicate(Batch(*few))
    vocalisations = harmonic_batch(config.data.n_val_vocs, FLAGS.vocalisation_len, sample_rate).x
    tf_var = 1.0

    epochs_of = {}  # program key -> its epochs
    n_seeds = config.n_seeds
    for epoch in range(config.n_epochs):
        epochs_of.setdefault(plan.key(epoch, plan.seeds_at(epoch, n_seeds)), []).append(epoch)
    report, train_s, eval_s, checkpoint_s, saves = [], 0.0, 0.0, 0.0, 0
    for (program_horizon, seeds), epochs in epochs_of.items():
        states, progress = setup.place(*init_seeds(setup.model, setup.optimizer, seed_keys(0, range(seeds))))
        low, high = plan.serves(program_horizon)
        step_s = {}
        for horizon in (low, high):  # the program's settings are those of any of its epochs
            settings = MemberSettings(config.objective.weights, config.objective.ic_noise_rms)
            args = (states, progress, data, settings, tf_var, horizon if plan.horizon_is_data else None)
            key = (program_horizon, seeds)
            if key not in programs.compiled:
                programs.record(key, program.compile_epoch(plan.step_config(epochs[0]), *args))
            seconds(lambda: program.run_epoch(programs.compiled[key], *args))  # warm
            step_s[horizon] = statistics.median(seconds(lambda: program.run_epoch(programs.compiled[key], *args))
                                                for _ in range(2)) / FLAGS.steps
        outputs_s = [seconds(lambda: program.autonomous_outputs(states, vocalisations, first_derivative(vocalisations)))
                     for _ in range(2)]
        with tempfile.TemporaryDirectory() as folder, Checkpoints(pathlib.Path(folder), 2) as checkpoints:
            save_s = seconds(lambda: checkpoints.save(1, (states, progress), {"seed_ids": list(range(seeds))}))
        slope = (step_s[high] - step_s[low]) / (high - low) if high > low else 0.0
        program_train = sum(steps_per_epoch * (step_s[low] + slope * (plan.horizon(e) - low)) for e in epochs)
        n_saves = sum(1 for e in epochs if (config.save_freq > 0 and (e + 1) % config.save_freq == 0)
                      or e + 1 == config.n_epochs or (config.culling and e + 1 == config.cull_epoch))
        train_s += program_train
        eval_s += len(epochs) * outputs_s[-1]
        checkpoint_s += n_saves * save_s
        saves += n_saves
        report.append({"horizon": program_horizon, "serves": [low, high], "seeds": seeds, "epochs": len(epochs),
                       "step_s": {str(h): s for h, s in step_s.items()}, "train_s": program_train,
                       "evaluation_s": outputs_s[-1], "checkpoint_s": save_s,
                       **programs.cost((program_horizon, seeds))})
    compile_s = programs.summary()["compile_seconds"]
    recipe = [a for a in sys.argv[1:] if a.startswith("--flagfile")]  # sys.argv as `recipe_argv` completed it
    emit({"benchmark": "recipe_time", "recipe": recipe,
          "n_epochs": config.n_epochs, "steps_per_epoch": steps_per_epoch, "n_epoch_programs": len(report),
          "compile_s": compile_s, "train_s": train_s, "evaluation_s": eval_s, "checkpoint_s": checkpoint_s,
          "n_checkpoints": saves, "total_s": compile_s + train_s + eval_s + checkpoint_s, "programs": report,
          "device": device_info(), "versions": versions()})


if __name__ == "__main__":
    sys.argv = recipe_argv(sys.argv)
    cli.run(main, FLAGS)
