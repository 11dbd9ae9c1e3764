"""The numba kernels compile once per machine and the run says where they came from (kernel_cache.py)."""

import os
import subprocess
import sys

import pytest

from ouroboros_jax.training.kernel_cache import load_kernels


def test_a_run_without_numba_kernels_loads_none():
    assert load_kernels(encoders=False, rollout=False) is None


def test_kernels_once_loaded_are_not_compiled_again():
    load_kernels(encoders=False, rollout=True)
    assert load_kernels(encoders=False, rollout=True).startswith("numba kernels: loaded from the cache in ")


@pytest.mark.slow  # compiles the kernels into an empty cache (1-5 minutes)
def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    code = "from ouroboros_jax.training.kernel_cache import load_kernels; print(load_kernels(True, True))"
    lines = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(__file__))).stdout.strip() for _ in range(2)]
    assert lines[0].startswith("numba kernels: 4 compiled in ") and str(tmp_path) in lines[0], lines[0]
    assert lines[1].startswith("numba kernels: loaded from the cache in "), lines[1]
