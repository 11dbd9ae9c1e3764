"""The residual-block kernels (model/numba_layer.py) of this checkout against another's, in one process.

    python benchmarks/block_kernels.py --against=/path/to/other/checkout
    python benchmarks/block_kernels.py --against=/path/to/other/checkout --rounds=25 --length=4410

Run-to-run noise on a shared machine (the same kernel 4.6 to 7.0 ms from one process to the next)
hides the 10-20 % a kernel change makes, so both versions are loaded into this process (the
other's `numba_scan` and `numba_layer` under other module names, compiled without caching) and
their calls alternate, round after round, on the same NumPy inputs (one chain per batch element,
the reference model's block: d_model 2, d_inner 20, N 4, K 4, rank 1). One JSON line: the median
forward and backward of each, in ms, and the largest difference of their outputs.
"""

import pathlib
import statistics
import sys
import time
import types

import numpy as np
from absl import flags
from timing import emit, versions

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.model import numba_layer

FLAGS = cli.flag_set()
flags.DEFINE_string("against", None, "root of another checkout whose block kernels to compare", flag_values=FLAGS)
flags.DEFINE_integer("rounds", 25, "alternating rounds (each: forward and backward of both)", flag_values=FLAGS)
flags.DEFINE_integer("batch", 8, "chains (batch elements)", flag_values=FLAGS)
flags.DEFINE_integer("length", 4410, "samples per chain", flag_values=FLAGS)


def _load(name: str, path: pathlib.Path, renames: dict) -> types.ModuleType:
    """The module at `path` under `name`, its imports renamed as `renames` says, compiled uncached."""
    source = path.read_text().replace("cache=True", "cache=False")
    for old, new in renames.items():
        source = source.replace(old, new)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def _operands(batch: int, length: int) -> list[np.ndarray]:
    d_model, width, n_state, d_conv, rank = 2, 20, 4, 4, 1
    shapes = ((batch, length, d_model), (d_model,), (d_model, width), (d_model, width), (d_conv, width), (width,),
              (width, rank + 2 * n_state), (rank, width), (width,), (n_state, width), (width,), (width, d_model))
    rng = np.random.default_rng(0)
    operands = [(0.3 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
    operands[9] = -np.abs(operands[9]) - 0.1  # A < 0
    return operands


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS, {"against": "the root of another checkout whose block kernels to compare"})
    root = pathlib.Path(FLAGS.against) / "ouroboros_jax" / "model"
    _load("other_numba_scan", root / "numba_scan.py", {})
    other = _load("other_numba_layer", root / "numba_layer.py",
                  {"from ouroboros_jax.model.numba_scan import": "from other_numba_scan import"})
    operands = _operands(FLAGS.batch, FLAGS.length)
    cotangent = np.random.default_rng(1).standard_normal(operands[0].shape).astype(np.float32)
    kernels = {"this": numba_layer, "other": other}
    results = {k: (m._host_forward(*operands)[0], m._host_backward(*operands, cotangent)) for k, m in kernels.items()}
    times = {f"{k}_{part}": [] for k in kernels for part in ("forward", "backward")}
    for _ in range(FLAGS.rounds):
        for name, module in kernels.items():
            t0 = time.perf_counter()
            module._host_forward(*operands)
            t1 = time.perf_counter()
            module._host_backward(*operands, cotangent)
            times[f"{name}_forward"].append(t1 - t0)
            times[f"{name}_backward"].append(time.perf_counter() - t1)
    (out, grads), (other_out, other_grads) = results["this"], results["other"]
    emit({"benchmark": "block_kernels", "against": FLAGS.against, "rounds": FLAGS.rounds, "batch": FLAGS.batch,
          "length": FLAGS.length, **{f"{k}_ms": 1e3 * statistics.median(v) for k, v in times.items()},
          "max_abs_diff_forward": float(np.abs(out - other_out).max()),
          "max_abs_diff_gradients": max(float(np.abs(a - b).max()) for a, b in zip(grads, other_grads)),
          **versions()})


if __name__ == "__main__":
    cli.run(main, FLAGS)
