"""Test-wide JAX settings: strict rank promotion catches silent broadcasting bugs."""

import os
import pathlib
import tempfile

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# The runs' default precision (--matmul_precision=highest), so that on a GPU host the tests
# compare float32 products, not TF32 ones, against their NumPy references.
jax.config.update("jax_default_matmul_precision", "highest")

# The CLIs the tests start cache their compiled programs in one fresh folder per test session,
# never in the user's cache (and the tests that fill the disk turn the cache off).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ouroboros_jax_test_cache_")

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def golden():
    """Arrays computed by the PyTorch reference (see tests/golden/README.md)."""
    with np.load(GOLDEN_DIR / "reference_golden.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def golden_json():
    import json

    return json.loads((GOLDEN_DIR / "reference_golden.json").read_text())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny trained run shared by the commands that read runs: (run_dir, manifest).

    The bundled finch, 2 seeds, 2 epochs at one horizon (one compilation), checkpoints after
    epochs 1 and 2, batches of 6 (4 per epoch).
    """
    from ouroboros_jax.training.run import train_and_evaluate
    from tests.test_run import tiny_run_config

    run_dir = tmp_path_factory.mktemp("tiny_run")
    return run_dir, train_and_evaluate(tiny_run_config(run_dir, batch_size=6))
