"""Peak device memory of the epoch program per seed, from XLA's memory analysis (no run needed).

    python benchmarks/memory.py                       # default model, H 2048, B 8: S 1, 2 and 2 in chunks of 1
    python benchmarks/memory.py --quick               # tiny shapes, a smoke test

Compiles `SeedProgram`'s epoch program (`--n_batches` steps of `--batch_size`) for S = 1 and
S = 2 seeds, and for S = 2 with `--seed_chunk 1`, and prints one JSON line each with the
program's `memory_bytes` (`training.compilation.Compiled.memory`: arguments, outputs,
temporaries, peak, per device). A last line, `per_seed`, has what one more seed adds to the peak
without chunks (`peak_per_seed_bytes`, the per-seed state and one step's intermediates) and with
chunks (`chunked_peak_per_seed_bytes`, its state only: the chunks reuse one chunk's
intermediates), and `seeds_in_80gb` / `chunked_seeds_in_80gb`, how many seeds fit 80 GB at that
rate (chunked: with one chunk of `--chunk_for_80gb` seeds live).
"""

import shared_flags
from absl import flags
from synthetic import RUN, run_optimizer, run_step_config
from timing import device_info, emit, versions

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.model.selective_scan import resolve_scan_impl
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.training.seeds import MemberSettings, SeedProgram, init_seeds, seed_keys
from ouroboros_jax.training.step import model_graphdef

QUICK = {"model": "small", "n_batches": 2, "batch_size": 2, "segment_len": 256, "horizon": 128}
GB80 = 80e9

FLAGS = cli.flag_set()
shared_flags.define_epoch(FLAGS, model="default", n_batches=4, horizon=2048)
flags.DEFINE_integer("chunk_for_80gb", 8, "Seeds per chunk assumed for `chunked_seeds_in_80gb`.", flag_values=FLAGS)
shared_flags.define_quick(FLAGS, QUICK)


def program_memory(model, data, tf_var, config, n_seeds: int, seed_chunk: int) -> dict:
    program = SeedProgram(model_graphdef(model), run_optimizer(), FLAGS.batch_size, 50,
                          config.rollout, seed_chunk)
    states, progress = init_seeds(model, run_optimizer(), seed_keys(0, range(n_seeds)))
    settings = MemberSettings(RUN.objective.weights, RUN.objective.ic_noise_rms)
    compiled = program.compile_epoch(config, states, progress, data, settings, tf_var)
    return {"compile_s": compiled.seconds, "memory_bytes": compiled.memory}


@report_input_errors
def main(argv):
    shared_flags.begin(argv, FLAGS, QUICK)
    model, data, tf_var = shared_flags.epoch_inputs(FLAGS)
    config = run_step_config(FLAGS.horizon, model, RolloutConfig())
    common = {"model": FLAGS.model, "n_poly": model.n_poly, "n_batches": FLAGS.n_batches, "batch": FLAGS.batch_size,
              "segment_len": FLAGS.segment_len, "horizon": FLAGS.horizon,
              "encoder_scan": resolve_scan_impl(FLAGS.encoder_scan, model.d_inner), "dtype": "float32"}
    peaks = {}
    for n_seeds, seed_chunk in ((1, 0), (2, 0), (2, 1)):
        record = program_memory(model, data, tf_var, config, n_seeds, seed_chunk)
        peaks[n_seeds, seed_chunk] = record["memory_bytes"].get("peak")
        emit({"benchmark": "memory", "config": {**common, "seeds": n_seeds, "seed_chunk": seed_chunk},
              "device": device_info(), "versions": versions(), **record})
    if None in peaks.values():
        return  # no memory analysis on this backend
    per_seed = peaks[2, 0] - peaks[1, 0]
    chunked_per_seed = peaks[2, 1] - peaks[1, 0]
    fixed = peaks[1, 0] - per_seed  # the training set and what every seed shares
    emit({"benchmark": "memory", "per_seed": True, "config": common, "device": device_info(),
          "peak_per_seed_bytes": per_seed, "chunked_peak_per_seed_bytes": chunked_per_seed,
          "seeds_in_80gb": int((GB80 - fixed) // per_seed),
          "chunked_seeds_in_80gb": int((GB80 - fixed - FLAGS.chunk_for_80gb * (per_seed - chunked_per_seed))
                                       // chunked_per_seed) if chunked_per_seed > 0 else None})


if __name__ == "__main__":
    cli.run(main, FLAGS)
