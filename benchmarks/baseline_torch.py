"""PyTorch eager baseline: one full spectral-rollout training step of the polynomial Ouroboros, timed.

The step itself is `torch_ouroboros.py` (the method in eager PyTorch, checked against the
reference's golden values by tests/test_baseline_torch.py).

Fairness notes (CPU): denormals are flushed to zero (``torch.set_flush_denormal``), as XLA does
on CPU; without it the cold-start rollout (noise IC ~1e-3 raised to powers up to 15) computes on
denormals and a step is 10-40x slower (``--keep_denormals`` measures that). The Gaussian
low-pass runs all channels as one depthwise ``conv1d`` (identical result; the batch-of-1-channel
layout has a pathologically slow CPU backward). Every timed call starts from the same parameters
and a fresh Adam state, like the JAX ``train_step.py`` benchmark, on the same synthetic batch
(``synthetic.harmonic_batch``).

Usage::

    python benchmarks/baseline_torch.py [--horizons 512,1024,2048] [--batch 8] [--length 2205]
        [--repeats 3] [--threads N] [--keep_denormals] [--quick]

prints one JSON object per horizon (``benchmarks/timing.py`` format). torch is a benchmark-only
dependency (CPU wheel is enough).
"""

from __future__ import annotations

import pathlib
import platform
import sys

import numpy as np
import torch
from absl import flags

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import shared_flags  # noqa: E402  (benchmarks/shared_flags.py)
import timing  # noqa: E402  (benchmarks/timing.py)
from torch_ouroboros import SR, Ouroboros, configs_for, train_step  # noqa: E402

QUICK = {"horizons": ["32", "64"], "batch": 2, "length": 256, "n_terms": 3, "n_layers": 1, "d_state": 2, "d_conv": 4,
         "expand": 2, "repeats": 1, "warmup": 0}
FLAGS = cli.flag_set()
shared_flags.define_horizons(FLAGS, "length")
flags.DEFINE_integer("batch", 8, "Segments per step B.", flag_values=FLAGS)
flags.DEFINE_integer("length", 2205, "Segment length L in samples.", flag_values=FLAGS)
flags.DEFINE_integer("n_terms", 15, "Polynomial nTerms, P = nTerms + 1.", flag_values=FLAGS)
flags.DEFINE_integer("n_layers", 3, "Mamba layers per encoder.", flag_values=FLAGS)
flags.DEFINE_integer("d_state", 4, "Mamba state size N.", flag_values=FLAGS)
flags.DEFINE_integer("d_conv", 4, "Mamba conv width.", flag_values=FLAGS)
flags.DEFINE_integer("expand", 10, "Mamba expand factor.", flag_values=FLAGS)
shared_flags.define_repeats(FLAGS, "steps", repeats=3)
flags.DEFINE_float("lr", 1e-3, "Adam learning rate.", flag_values=FLAGS)
flags.DEFINE_float("grad_clip", 5.0, "Gradient-norm clip.", flag_values=FLAGS)
flags.DEFINE_integer("threads", None, "torch.set_num_threads (default: torch's choice).", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the parameters and the batch.", flag_values=FLAGS)
flags.DEFINE_bool("keep_denormals", False, "Do not flush denormals to zero (torch's default; XLA on CPU flushes "
                  "them).", flag_values=FLAGS)
shared_flags.define_quick(FLAGS, QUICK)


def synthetic_batch(B: int, L: int, seed: int = 0):
    """The JAX benchmarks' fixed batch (`synthetic.harmonic_batch`: harmonic tones at 44.1 kHz, the
    first half cold start / ONSET) as torch tensors (x, dxdt, d2x, ic_mask)."""
    from synthetic import harmonic_batch  # benchmarks/synthetic.py (NumPy data, needs ouroboros_jax)

    b = harmonic_batch(B, L, float(SR), 1.0, seed)
    return (torch.from_numpy(np.asarray(b.x)), torch.from_numpy(np.asarray(b.dxdt)),
            torch.from_numpy(np.asarray(b.d2x)), torch.from_numpy(np.asarray(b.cold_start)))


def configure(threads: int | None, keep_denormals: bool) -> bool:
    """torch's threads and denormal mode; returns whether denormals are flushed."""
    if threads:
        torch.set_num_threads(threads)
    # XLA on CPU flushes denormals to zero; torch does not by default, and the cold-start rollout
    # (|x| ~ 1e-3 raised to powers up to 15) then runs on denormals, 10-40x slower.
    return torch.set_flush_denormal(not keep_denormals) and not keep_denormals


def step_runner(batch: int, length: int, n_terms: int, n_layers: int, d_state: int, d_conv: int, expand: int,
                lr: float = 1e-3, grad_clip: float = 5.0, seed: int = 0):
    """`run(H)`: one training step at horizon H from the same state every call."""
    torch.manual_seed(seed)
    model = Ouroboros(n_terms, n_layers, d_state, d_conv, expand)
    data = synthetic_batch(batch, length, seed)
    tf_var = max(float(data[2].double().var(unbiased=True)), 1e-6)
    params = list(model.parameters())
    initial = [q.detach().clone() for q in params]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def run(H):
        # Every timed call starts from the same state (initial parameters, fresh Adam), as the JAX
        # benchmark does, so every call does the same work; the reset is ~50 tiny copies.
        with torch.no_grad():
            for q, q0 in zip(params, initial):
                q.copy_(q0)
        opt.state.clear()
        return train_step(model, opt, data, H, tf_var, grad_clip)

    return run


@report_input_errors
def main(argv) -> None:
    shared_flags.begin(argv, FLAGS, QUICK)
    a = FLAGS
    flush = configure(a.threads, a.keep_denormals)
    horizons = shared_flags.checked_horizons(FLAGS, "horizons", "length")
    run = step_runner(a.batch, a.length, a.n_terms, a.n_layers, a.d_state, a.d_conv, a.expand, a.lr, a.grad_clip,
                      a.seed)

    device = {"platform": "cpu", "kind": "torch_cpu", "count": 1, "cpu": platform.processor() or platform.machine()}
    for H in horizons:
        stats = timing.measure(lambda: run(H), lambda r: r, repeats=a.repeats, warmup=a.warmup)
        timing.emit({
            "benchmark": "train_step", "what": "train_step", "impl": "torch_eager",
            "B": a.batch, "L": a.length, "P": a.n_terms + 1, "n_layers": a.n_layers, "d_state": a.d_state,
            "d_conv": a.d_conv, "expand": a.expand, "H": H, "n_stft_configs": len(configs_for(H)),
            "config": {"n_poly": a.n_terms + 1, "n_layers": a.n_layers, "d_state": a.d_state, "d_conv": a.d_conv,
                       "expand_factor": a.expand, "batch": a.batch, "segment_len": a.length, "horizon": H,
                       "dtype": "float32"},
            "quick": a.quick, "device": device, "versions": {**timing.versions(), "torch": torch.__version__},
            "torch_threads": torch.get_num_threads(), "flush_denormal": flush, **stats,
            "samples_per_s": a.batch * H / stats["median_s"],
        })


if __name__ == "__main__":
    cli.run(main, FLAGS)
