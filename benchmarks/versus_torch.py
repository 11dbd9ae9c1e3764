"""The JAX training step against the PyTorch eager baseline, side by side in one process.

    python benchmarks/versus_torch.py                    # H 512, 1024, 2048, reference defaults
    python benchmarks/versus_torch.py --repeats 7 --encoder_scan sequential
    python benchmarks/versus_torch.py --horizons 2048 --encoder_scan fused,numba   # both JAX scans
    python benchmarks/versus_torch.py --horizons 2048 --encoder_scan numba --rollout_kernel xla,numba
    python benchmarks/versus_torch.py --quick            # tiny shapes, a smoke test

The default path (what a run without flags gets) comes first, then the other JAX paths given.
After one compiling/warm-up call of each, every round times one JAX step per (encoder scan,
rollout kernel) and one PyTorch step per horizon, alternating, so that a shared machine's noise
falls on all alike. One JSON line per encoder scan, rollout kernel and horizon: both medians (with min and max), and `ratio` = torch
median / JAX median (> 1: JAX is faster). The two steps do the same work on the same synthetic batch (`synthetic.py`) at the
same sizes; `torch_ouroboros.py` says how the baseline is built.
"""

import functools
import statistics
import time

import baseline_torch
import jax
import shared_flags
import timing
from absl import flags
from train_step import StepBench, kernel_pairs

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors

QUICK = {"horizons": ["64", "128"], "repeats": 2, "batch": 2, "length": 256, "model": "small"}
# The PyTorch model of each --model (`synthetic.MODELS`), in baseline_torch's terms.
SIZES = {"default": {"n_terms": 15, "n_layers": 3, "d_state": 4, "d_conv": 4, "expand": 10},
         "small": {"n_terms": 3, "n_layers": 2, "d_state": 2, "d_conv": 4, "expand": 2}}
FLAGS = cli.flag_set()
shared_flags.define_horizons(FLAGS, "length")
flags.DEFINE_integer("repeats", 5, "Timed rounds.", flag_values=FLAGS)
flags.DEFINE_integer("batch", 8, "Segments per step B.", flag_values=FLAGS)
flags.DEFINE_integer("length", 2205, "Segment length L in samples.", flag_values=FLAGS)
shared_flags.define_model(FLAGS, "default")
shared_flags.define_kernels(FLAGS)
flags.DEFINE_integer("threads", None, "torch.set_num_threads (default: torch's choice).", flag_values=FLAGS)
shared_flags.define_quick(FLAGS, QUICK)


def seconds(call, block) -> float:
    t0 = time.perf_counter()
    block(call())
    return time.perf_counter() - t0


@report_input_errors
def main(argv) -> None:
    shared_flags.begin(argv, FLAGS, QUICK)
    a = FLAGS
    horizons = shared_flags.checked_horizons(FLAGS, "horizons", "length")
    flush = baseline_torch.configure(a.threads, keep_denormals=False)
    torch_step = baseline_torch.step_runner(a.batch, a.length, **SIZES[a.model])
    pairs = kernel_pairs(a.model, a.encoder_scan, a.rollout_kernel, a.rollout_gradient)
    benches = [StepBench(a.model, scan, a.batch, a.length, rollout_gradient=a.rollout_gradient, rollout_kernel=kernel)
               for scan, kernel in pairs]
    steps = {(h, i): functools.partial(bench.step, h) for h in horizons for i, bench in enumerate(benches)}
    first = {key: seconds(step, jax.block_until_ready) for key, step in steps.items()}
    first.update({h: seconds(functools.partial(torch_step, h), lambda r: r) for h in horizons})
    times = {key: [] for key in first}
    for _ in range(a.repeats):
        for h in horizons:
            for i in range(len(benches)):
                times[h, i].append(seconds(steps[h, i], jax.block_until_ready))
            times[h].append(seconds(functools.partial(torch_step, h), lambda r: r))
    for (h, i), bench in ((key, benches[key[1]]) for key in steps):
        summary = {impl: {"median_s": statistics.median(times[k]), "min_s": min(times[k]), "max_s": max(times[k]),
                          "first_call_s": first[k]} for impl, k in (("jax", (h, i)), ("torch_eager", h))}
        timing.emit({"benchmark": "versus_torch", "config": {**bench.config_record(h), "torch_threads":
                                                             baseline_torch.torch.get_num_threads(),
                                                             "flush_denormal": flush},
                     "device": timing.device_info(),
                     "versions": {**timing.versions(), "torch": baseline_torch.torch.__version__},
                     "repeats": a.repeats, **summary,
                     "ratio": summary["torch_eager"]["median_s"] / summary["jax"]["median_s"]})


if __name__ == "__main__":
    cli.run(main, FLAGS)
