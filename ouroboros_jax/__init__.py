"""ouroboros_jax: the polynomial Ouroboros neural ODE of birdsong in JAX/Flax.

The core API below is re-exported lazily: `ouroboros_jax.RunConfig` imports its module on first
use, so that importing one part (say `ouroboros_jax.objective.losses`) does not import the rest, nor the
checkpointing, logging, plotting and clustering libraries that only the run and the commands need
(tests/test_package.py). Syllable types by clustering (ouroboros_jax.data.syllable_types,
ouroboros_jax.data.segmentation) are not re-exported: they import scikit-learn, which nothing else needs.
"""

import importlib

__version__ = "0.1.0"

# module -> the names it exports here
_EXPORTS = {
    "ouroboros_jax.data": (
        "ANNOTATION_FORMATS", "AnnotationSource", "Category", "DataConfig", "SamplerConfig", "TrainingData",
        "example_data_dir", "find_syllables", "load_training_data", "read_labelled_annotations",
    ),
    "ouroboros_jax.errors": ("InputError",),
    "ouroboros_jax.model.lowpass": ("gaussian_lowpass",),
    "ouroboros_jax.model.ouroboros": ("Drives", "ModelConfig", "Ouroboros"),
    "ouroboros_jax.model.reference_params": ("load_reference_params",),
    "ouroboros_jax.objective.curriculum": (
        "HORIZON_SCHEDULES", "distinct_horizons", "horizon_for_epoch", "warmup_weights",
    ),
    "ouroboros_jax.objective.derivatives": ("first_derivative", "second_derivative"),
    "ouroboros_jax.objective.losses": (
        "LossWeights", "acceleration_anchor_loss", "envelope_l1_loss", "envelope_log_loss", "mrstft_loss",
        "stft_magnitude", "teacher_acceleration_variance",
    ),
    "ouroboros_jax.ode.deer": ("DeerStats", "deer_rollout", "held_guess"),
    "ouroboros_jax.ode.dynamics": ("RolloutConfig", "initial_state", "rollout", "teacher_acceleration"),
    "ouroboros_jax.ode.integrators": ("Rollout", "integrate"),
    "ouroboros_jax.scoring.evaluation": (
        "Autonomy", "autonomous_outputs", "autonomy_score", "autonomy_summary", "correct", "generate", "rank_seeds",
    ),
    "ouroboros_jax.training.config": ("ObjectiveConfig", "RunConfig"),
    "ouroboros_jax.training.run_state": (
        "RunState", "cull", "init_run", "restore_run", "save_run", "select", "train_epoch",
    ),
    "ouroboros_jax.training.step": (
        "Batch", "StepConfig", "StepMetrics", "TrainState", "init_train_state", "make_optimizer", "model_graphdef",
        "train_step", "with_hyperparameters",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'ouroboros_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
