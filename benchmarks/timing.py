"""Shared timing for the benchmark scripts: one JSON object per configuration on stdout.

Each record has the configuration, the device, the library versions, the compile (first-call)
seconds and the median, min and max seconds over `repeats` calls after `warmup` calls.
"""

import json
import platform
import statistics
import time
from collections.abc import Callable


def device_info() -> dict:
    import jax

    d = jax.devices()[0]
    # The precision of the matmuls (JAX_DEFAULT_MATMUL_PRECISION; None: XLA's default, TF32 on recent GPUs).
    return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count(),
            "cpu": platform.processor() or platform.machine(),
            "matmul_precision": jax.config.jax_default_matmul_precision}


def versions() -> dict:
    import jax

    return {"jax": jax.__version__, "python": platform.python_version()}


def measure(run: Callable[[], object], block: Callable[[object], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Times `block(run())`: the first call (compile + run), then `repeats` calls after `warmup` more."""
    t0 = time.perf_counter()
    block(run())
    first = time.perf_counter() - t0
    for _ in range(warmup):
        block(run())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(run())
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": repeats}


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def apply_quick(flag_values, preset: dict) -> None:
    """`--quick`: sets the preset's flags, except those given on the command line."""
    for name, value in preset.items():
        if not flag_values[name].present:
            flag_values[name].value = value
