"""S seeds in one vmapped program against S separate runs of the 1-seed program.

    python benchmarks/seed_scaling.py                        # small model, S 1, 2, 4, 8, 16
    python benchmarks/seed_scaling.py --model default --seeds 1,4 --horizon 512
    python benchmarks/seed_scaling.py --quick                # tiny shapes, a smoke test

An epoch is `--n_batches` steps of `--batch_size` segments (`SeedProgram.run_epoch`). One JSON
line per S: the timing (`first_call_s`: compile plus one epoch; `median_s`, ...) of one epoch of
all S seeds stacked in one call; `separate`, the timing of S sequential 1-seed epochs (what S
independent runs cost, minus their compiles); `separate_over_one`, the ratio of the medians (> 1:
the one program is faster); and `samples_per_s` = S n_batches B H / median of the one program.
The 1-seed program is compiled once, before the grid (`single_seed_first_call_s`). Every timed
epoch starts from the same fresh states, so every call does the same work.
"""

import jax
import shared_flags
from absl import flags
from synthetic import RUN, run_optimizer, run_step_config
from timing import device_info, emit, measure, versions

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.model.selective_scan import resolve_scan_impl
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.training.seeds import MemberSettings, SeedProgram, init_seeds, seed_keys
from ouroboros_jax.training.step import model_graphdef

QUICK = {"seeds": ["1", "2"], "n_batches": 2, "batch_size": 2, "segment_len": 256, "horizon": 128, "repeats": 2}

FLAGS = cli.flag_set()
shared_flags.define_epoch(FLAGS, model="small", n_batches=8, horizon=512)
flags.DEFINE_list("seeds", ["1", "2", "4", "8", "16"], "Seed counts S.", flag_values=FLAGS)
flags.DEFINE_integer("unroll", 1, "lax.scan unroll factor of the rollout.", flag_values=FLAGS)
shared_flags.define_repeats(FLAGS, "epochs", repeats=3)
shared_flags.define_quick(FLAGS, QUICK)


@report_input_errors
def main(argv):
    shared_flags.begin(argv, FLAGS, QUICK)
    model, data, tf_var = shared_flags.epoch_inputs(FLAGS)
    optimizer = run_optimizer()
    rollout = RolloutConfig(unroll=FLAGS.unroll)
    program = SeedProgram(model_graphdef(model), optimizer, FLAGS.batch_size, max_consecutive_skips=50,
                          rollout=rollout)
    config = run_step_config(FLAGS.horizon, model, rollout)

    def epoch(seed_ids):
        """A call that trains the seeds `seed_ids`, stacked in one program, for one epoch from a fresh start."""
        states, progress = init_seeds(model, optimizer, seed_keys(0, seed_ids))
        settings = MemberSettings(RUN.objective.weights, RUN.objective.ic_noise_rms)
        compiled = program.compile_epoch(config, states, progress, data, settings, tf_var)
        return lambda: program.run_epoch(compiled, states, progress, data, settings, tf_var)

    separate_runs = [epoch([k]) for k in range(max(map(int, FLAGS.seeds)))]
    single = measure(separate_runs[0], jax.block_until_ready, FLAGS.repeats, FLAGS.warmup)
    for n_seeds in map(int, FLAGS.seeds):
        # S = 1 is the 1-seed program itself, already compiled and timed above.
        one = single if n_seeds == 1 else measure(epoch(list(range(n_seeds))), jax.block_until_ready,
                                                  FLAGS.repeats, FLAGS.warmup)
        # Each separate run finishes before the next starts, as S runs one after another would.
        separate = measure(lambda: [jax.block_until_ready(run()) for run in separate_runs[:n_seeds]],
                           jax.block_until_ready, FLAGS.repeats, FLAGS.warmup)
        emit({"benchmark": "seed_scaling", "impl": "jax",
              "config": {"model": FLAGS.model, "n_poly": model.n_poly, "seeds": n_seeds, "n_batches": FLAGS.n_batches,
                         "batch": FLAGS.batch_size, "segment_len": FLAGS.segment_len, "horizon": FLAGS.horizon,
                         "encoder_scan": resolve_scan_impl(FLAGS.encoder_scan, model.d_inner), "unroll": FLAGS.unroll,
                         "dtype": "float32"},
              "device": device_info(), "versions": versions(),
              **one, "separate": separate, "single_seed_first_call_s": single["first_call_s"],
              "separate_over_one": separate["median_s"] / one["median_s"],
              "samples_per_s": n_seeds * FLAGS.n_batches * FLAGS.batch_size * FLAGS.horizon / one["median_s"]})


if __name__ == "__main__":
    cli.run(main, FLAGS)
