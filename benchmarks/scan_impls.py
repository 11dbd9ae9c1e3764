"""One layer's selective scan alone, several `--encoder_scan` implementations side by side.

    python benchmarks/scan_impls.py                                  # fused against numba
    python benchmarks/scan_impls.py --impls sequential,fused,numba --repeats 9
    python benchmarks/scan_impls.py --quick                          # tiny shapes, a smoke test

Every round times each implementation's jitted forward and forward + backward (the gradient of
<y, a fixed cotangent> w.r.t. all five inputs) once, alternating, so a shared machine's noise
falls on all alike. One JSON line per implementation: medians and mins (ms), and `max_abs_error`
of y and each gradient against "sequential" in float32.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import timing

from ouroboros_jax.model.selective_scan import selective_ssm


def inputs(batch, length, width, n_state):
    k = jax.random.split(jax.random.key(0), 5)
    delta = jax.nn.softplus(jax.random.normal(k[0], (batch, length, width)) - 2.0)  # ~ the trained dt range
    x = jax.random.normal(k[1], (batch, length, width))
    A = -jnp.tile(jnp.arange(1.0, n_state + 1), (width, 1))  # the reference init
    Bt, Ct = (jax.random.normal(k[i], (batch, length, n_state)) for i in (2, 3))
    return (delta, x, A, Bt, Ct), jax.random.normal(k[4], (batch, length, width))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impls", default="fused,numba")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=4410, help="T: twice the segment length (2 L at L 2205)")
    p.add_argument("--width", type=int, default=20, help="d_inner")
    p.add_argument("--n_state", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="B 2, T 256, 2 repeats")
    a = p.parse_args(argv)
    if a.quick:
        a.batch, a.length, a.repeats = 2, 256, 2
    args, gy = inputs(a.batch, a.length, a.width, a.n_state)
    calls = {}
    for impl in ["sequential"] + a.impls.split(","):
        def f(*z, impl=impl):
            return selective_ssm(*z, impl=impl)

        calls[impl] = {"forward": jax.jit(f),
                       "forward_backward": jax.jit(jax.grad(lambda *z, f=f: jnp.vdot(f(*z), gy), argnums=range(5)))}
    results = {impl: {k: jax.block_until_ready(c(*args)) for k, c in cs.items()} for impl, cs in calls.items()}
    times = {impl: {k: [] for k in cs} for impl, cs in calls.items()}
    for _ in range(a.repeats):
        for impl, cs in calls.items():
            for k, c in cs.items():
                t0 = time.perf_counter()
                jax.block_until_ready(c(*args))
                times[impl][k].append(time.perf_counter() - t0)
    ref = results["sequential"]
    for impl in a.impls.split(","):
        errors = [float(jnp.abs(u - v).max()) for u, v in zip([results[impl]["forward"], *results[impl]["forward_backward"]],
                                                              [ref["forward"], *ref["forward_backward"]])]
        timing.emit({"benchmark": "scan_impls", "impl": impl, "config": {"batch": a.batch, "length": a.length,
                     "width": a.width, "n_state": a.n_state, "dtype": "float32"}, "device": timing.device_info(),
                     "versions": timing.versions(), "repeats": a.repeats,
                     **{f"{k}_{s}_ms": 1e3 * f(v) for k, v in times[impl].items()
                        for s, f in (("median", statistics.median), ("min", min))},
                     "max_abs_error": dict(zip(["y", "delta", "x", "A", "B", "C"], errors))})


if __name__ == "__main__":
    main()
