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
same sizes; `baseline_torch.py` says how the baseline is built.
"""

import argparse
import functools
import statistics
import time

import baseline_torch
import jax
import timing
from train_step import StepBench, kernel_pairs

DEFAULTS = {"horizons": "512,1024,2048", "repeats": 5, "batch": 8, "length": 2205, "model": "default"}
QUICK = {"horizons": "64,128", "repeats": 2, "batch": 2, "length": 256, "model": "small"}
SIZES = {"default": {"n_terms": 15, "n_layers": 3, "d_state": 4, "d_conv": 4, "expand": 10},
         "small": {"n_terms": 3, "n_layers": 2, "d_state": 2, "d_conv": 4, "expand": 2}}


def seconds(call, block) -> float:
    t0 = time.perf_counter()
    block(call())
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--horizons", help=f"comma-separated rollout horizons (default {DEFAULTS['horizons']})")
    p.add_argument("--repeats", type=int, help="timed rounds (default 5)")
    p.add_argument("--batch", type=int, help="segments per step B (default 8)")
    p.add_argument("--length", type=int, help="segment length L (default 2205)")
    p.add_argument("--model", choices=sorted(SIZES), help="model size (default: the reference defaults)")
    p.add_argument("--encoder_scan", default="auto", help="comma-separated JAX encoder scans (default auto)")
    p.add_argument("--rollout_gradient", default="adjoint", choices=["adjoint", "autodiff"])
    p.add_argument("--rollout_kernel", default="auto", help="comma-separated rollout kernels (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}, unless given explicitly")
    a = p.parse_args(argv)
    for name, value in (QUICK if a.quick else DEFAULTS).items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    horizons = [int(h) for h in a.horizons.split(",") if h]
    if max(horizons) > a.length:
        p.error(f"horizon {max(horizons)} > length {a.length}")

    flush = baseline_torch.configure(a.threads, keep_denormals=False)
    torch_args = argparse.Namespace(batch=a.batch, length=a.length, lr=1e-3, grad_clip=5.0, seed=0,
                                    **SIZES[a.model])
    torch_step = baseline_torch.step_runner(torch_args)
    pairs = kernel_pairs(a.model, a.encoder_scan.split(","), a.rollout_kernel.split(","), a.rollout_gradient)
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
    main()
