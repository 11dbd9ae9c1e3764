"""One layer's selective scan alone, several `--encoder_scan` implementations side by side.

    python benchmarks/scan_impls.py                                  # fused against numba
    python benchmarks/scan_impls.py --impls sequential,fused,numba --repeats 9
    python benchmarks/scan_impls.py --quick                          # tiny shapes, a smoke test

Every round times each implementation's jitted forward and forward + backward (the gradient of
<y, a fixed cotangent> w.r.t. all five inputs) once, alternating, so a shared machine's noise
falls on all alike. One JSON line per implementation: medians and mins (ms), and `max_abs_error`
of y and each gradient against "sequential" in float32.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import shared_flags
import timing
from absl import flags

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.model.selective_scan import SCAN_IMPLS, selective_ssm

QUICK = {"batch": 2, "length": 256, "repeats": 2}
FLAGS = cli.flag_set()
flags.DEFINE_list("impls", ["fused", "numba"], f"Implementations timed against sequential, of {SCAN_IMPLS}.",
                  flag_values=FLAGS)
flags.DEFINE_integer("batch", 8, "Batch size B.", flag_values=FLAGS)
flags.DEFINE_integer("length", 4410, "T: twice the segment length (2 L at L 2205).", flag_values=FLAGS)
flags.DEFINE_integer("width", 20, "d_inner.", flag_values=FLAGS)
flags.DEFINE_integer("n_state", 4, "Mamba state size N.", flag_values=FLAGS)
flags.DEFINE_integer("repeats", 7, "Timed rounds.", flag_values=FLAGS)
shared_flags.define_quick(FLAGS, QUICK)


def inputs(batch, length, width, n_state):
    k = jax.random.split(jax.random.key(0), 5)
    delta = jax.nn.softplus(jax.random.normal(k[0], (batch, length, width)) - 2.0)  # ~ the trained dt range
    x = jax.random.normal(k[1], (batch, length, width))
    A = -jnp.tile(jnp.arange(1.0, n_state + 1), (width, 1))  # the reference init
    Bt, Ct = (jax.random.normal(k[i], (batch, length, n_state)) for i in (2, 3))
    return (delta, x, A, Bt, Ct), jax.random.normal(k[4], (batch, length, width))


@report_input_errors
def main(argv):
    shared_flags.begin(argv, FLAGS, QUICK)
    impls = FLAGS.impls
    args, gy = inputs(FLAGS.batch, FLAGS.length, FLAGS.width, FLAGS.n_state)
    calls = {}
    for impl in ["sequential", *impls]:
        def f(*z, impl=impl):
            return selective_ssm(*z, impl=impl)

        calls[impl] = {"forward": jax.jit(f),
                       "forward_backward": jax.jit(jax.grad(lambda *z, f=f: jnp.vdot(f(*z), gy), argnums=range(5)))}
    results = {impl: {k: jax.block_until_ready(c(*args)) for k, c in cs.items()} for impl, cs in calls.items()}
    times = {impl: {k: [] for k in cs} for impl, cs in calls.items()}
    for _ in range(FLAGS.repeats):
        for impl, cs in calls.items():
            for k, c in cs.items():
                t0 = time.perf_counter()
                jax.block_until_ready(c(*args))
                times[impl][k].append(time.perf_counter() - t0)
    ref = results["sequential"]
    for impl in impls:
        errors = [float(jnp.abs(u - v).max()) for u, v in zip([results[impl]["forward"], *results[impl]["forward_backward"]],
                                                              [ref["forward"], *ref["forward_backward"]])]
        config = {"batch": FLAGS.batch, "length": FLAGS.length, "width": FLAGS.width, "n_state": FLAGS.n_state,
                  "dtype": "float32"}
        timing.emit({"benchmark": "scan_impls", "impl": impl, "config": config, "device": timing.device_info(),
                     "versions": timing.versions(), "repeats": FLAGS.repeats,
                     **{f"{k}_{s}_ms": 1e3 * f(v) for k, v in times[impl].items()
                        for s, f in (("median", statistics.median), ("min", min))},
                     "max_abs_error": dict(zip(["y", "delta", "x", "A", "B", "C"], errors))})


if __name__ == "__main__":
    cli.run(main, FLAGS)
