"""Test-wide JAX settings: strict rank promotion catches silent broadcasting bugs."""

import pathlib

import jax
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

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
