"""The package's top level: the core API by name, imported lazily, so that the core imports light."""

import importlib
import subprocess
import sys

import pytest

import ouroboros_jax

HEAVY = {"orbax", "tensorboardX", "matplotlib", "sklearn"}  # checkpoints, logs, figures, clustering


def test_every_exported_name_is_its_module_s_object():
    for name in ouroboros_jax.__all__:
        module = importlib.import_module(ouroboros_jax._MODULE_OF[name])
        assert getattr(ouroboros_jax, name) is getattr(module, name), name
    assert {"RunConfig", "mrstft_loss", "Ouroboros"} <= set(dir(ouroboros_jax))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        ouroboros_jax.no_such_name  # noqa: B018


def top_level_packages_after(imports: str) -> set:
    code = f"import sys, {imports}; print(' '.join({{m.split('.')[0] for m in sys.modules}}))"
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())


def test_importing_the_core_imports_no_checkpointing_logging_plotting_or_clustering():
    core = ("ouroboros_jax, ouroboros_jax.objective.losses, ouroboros_jax.ode.dynamics, ouroboros_jax.ode.integrators, "
            "ouroboros_jax.model.ouroboros, ouroboros_jax.scoring.evaluation, ouroboros_jax.objective.curriculum")
    loaded = top_level_packages_after(core)
    assert "jax" in loaded and "flax" in loaded and not loaded & HEAVY, loaded & HEAVY
    # The run does need them: what the check looks for is there once the training side is imported.
    assert {"orbax", "tensorboardX"} <= top_level_packages_after("ouroboros_jax.training.run")
