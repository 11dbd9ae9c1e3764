"""ouroboros_jax: the polynomial Ouroboros neural ODE of birdsong in JAX/Flax."""

from ouroboros_jax.curriculum import (
    HORIZON_SCHEDULES,
    distinct_horizons,
    horizon_for_epoch,
    warmup_weights,
)
from ouroboros_jax.data import (
    ANNOTATION_FORMATS,
    AnnotationSource,
    Category,
    DataConfig,
    SamplerConfig,
    TrainingData,
    example_data_dir,
    find_syllables,
    load_training_data,
    read_labelled_annotations,
)
from ouroboros_jax.deer import DeerStats, deer_rollout, held_guess
from ouroboros_jax.derivatives import first_derivative, second_derivative
from ouroboros_jax.dynamics import (
    RolloutConfig,
    initial_state,
    rollout,
    teacher_acceleration,
)
from ouroboros_jax.errors import InputError
from ouroboros_jax.evaluation import (
    Autonomy,
    autonomous_outputs,
    autonomy_score,
    autonomy_summary,
    correct,
    generate,
    rank_seeds,
)
from ouroboros_jax.integrators import Rollout, integrate
from ouroboros_jax.losses import (
    LossWeights,
    acceleration_anchor_loss,
    envelope_l1_loss,
    envelope_log_loss,
    mrstft_loss,
    stft_magnitude,
    teacher_acceleration_variance,
)
from ouroboros_jax.model.lowpass import gaussian_lowpass
from ouroboros_jax.model.ouroboros import Drives, ModelConfig, Ouroboros
from ouroboros_jax.model.reference_params import load_reference_params
from ouroboros_jax.training.config import ObjectiveConfig, RunConfig
from ouroboros_jax.training.run_state import (
    RunState,
    cull,
    init_run,
    restore_run,
    save_run,
    select,
    train_epoch,
)
from ouroboros_jax.training.step import (
    Batch,
    StepConfig,
    StepMetrics,
    TrainState,
    init_train_state,
    make_optimizer,
    model_graphdef,
    train_step,
    with_hyperparameters,
)

__version__ = "0.1.0"

# Syllable types by clustering (ouroboros_jax.data.syllable_types, ouroboros_jax.segmentation) are not
# re-exported: they import scikit-learn, which nothing else needs.
__all__ = [
    "ANNOTATION_FORMATS",
    "HORIZON_SCHEDULES",
    "AnnotationSource",
    "Autonomy",
    "Batch",
    "Category",
    "DataConfig",
    "DeerStats",
    "Drives",
    "InputError",
    "LossWeights",
    "ModelConfig",
    "ObjectiveConfig",
    "Ouroboros",
    "Rollout",
    "RolloutConfig",
    "RunConfig",
    "RunState",
    "SamplerConfig",
    "StepConfig",
    "StepMetrics",
    "TrainState",
    "TrainingData",
    "acceleration_anchor_loss",
    "autonomous_outputs",
    "autonomy_score",
    "autonomy_summary",
    "correct",
    "cull",
    "deer_rollout",
    "distinct_horizons",
    "envelope_l1_loss",
    "envelope_log_loss",
    "example_data_dir",
    "find_syllables",
    "first_derivative",
    "gaussian_lowpass",
    "generate",
    "held_guess",
    "horizon_for_epoch",
    "init_run",
    "init_train_state",
    "initial_state",
    "integrate",
    "load_reference_params",
    "load_training_data",
    "make_optimizer",
    "model_graphdef",
    "mrstft_loss",
    "rank_seeds",
    "read_labelled_annotations",
    "restore_run",
    "rollout",
    "save_run",
    "second_derivative",
    "select",
    "stft_magnitude",
    "teacher_acceleration",
    "teacher_acceleration_variance",
    "train_epoch",
    "train_step",
    "warmup_weights",
    "with_hyperparameters",
]
