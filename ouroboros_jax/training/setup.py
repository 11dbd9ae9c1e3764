"""What a run builds from its settings and data before it trains: the model's config at the
data's sample rate, the optimiser, the integrator, the plan of its programs and the devices.

`Setup` is static (nothing in it changes while the run trains); the run's state is
`run_state.RunState`, and the programs it has compiled are in its `programs.ProgramLedger`.
"""

import dataclasses

import jax
import numpy as np
import optax

from ouroboros_jax.data import Category, TrainingData
from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.training.checkpoints import Checkpoints
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.programs import EpochPrograms
from ouroboros_jax.training.records import resolved_kernels
from ouroboros_jax.training.runtime import (
    Runtime,
    inactive_padding,
    pad_ids,
    pad_members,
    unpadded,
)
from ouroboros_jax.training.seeds import (
    SeedProgram,
    SeedProgress,
    init_seeds,
    seed_keys,
)
from ouroboros_jax.training.step import (
    Batch,
    TrainState,
    make_optimizer,
    model_graphdef,
)
from ouroboros_jax.training.sweep import member_seed, member_values


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a run builds from its config and data: model config, optimiser, integrator, the programs
    it compiles and runs (`program`) and which one trains each epoch (`programs`), devices."""

    model: ModelConfig
    optimizer: optax.GradientTransformation
    rollout: RolloutConfig
    program: SeedProgram
    programs: EpochPrograms
    runtime: Runtime

    @classmethod
    def build(cls, config: RunConfig, sample_rate: float, steps_per_epoch: int | None,
              runtime: Runtime | None = None) -> "Setup":
        """`steps_per_epoch`: the optimiser's steps per epoch (None where unknown: a constant
        learning rate needs none)."""
        runtime = runtime or Runtime(config.seed_chunk)
        # "auto" kernels are resolved here, once: what the run's programs trace is what it records.
        kernels = resolved_kernels(config)
        model = dataclasses.replace(config.model, sample_rate=float(sample_rate), scan_impl=kernels["encoder_scan"])
        decay_steps = config.n_epochs * steps_per_epoch if config.lr_schedule == "cosine" else None
        optimizer = make_optimizer(config.lr, config.grad_clip, decay_steps, config.ema_decay)
        rollout = dataclasses.replace(config.rollout, step_size=1.0 / model.time_scale,
                                      kernel=kernels["rollout_kernel"])
        program = SeedProgram(model_graphdef(model), optimizer, config.batch_size, config.max_consecutive_skips,
                              rollout, runtime.seed_chunk, runtime.mesh)
        programs = EpochPrograms(config, float(sample_rate), rollout, runtime.n_stacked)
        return cls(model, optimizer, rollout, program, programs, runtime)

    @property
    def kernels(self) -> dict:
        """The encoder scan and rollout kernel the run's programs use (run.json's `kernels`)."""
        return {"encoder_scan": self.model.scan_impl, "rollout_kernel": self.rollout.kernel}

    def init(self, config: RunConfig, member_ids, params=None) -> tuple[TrainState, SeedProgress]:
        """Fresh stacked states of the members `member_ids` on the host: each with its seed's key
        and its own learning rate and clip (`sweep`); `params` (one model's) replaces every
        member's initialisation."""
        keys = seed_keys(config.seed, [member_seed(k, config.n_seeds) for k in member_ids])
        lr, clip = (member_values(config, member_ids, name) for name in ("lr", "grad_clip"))
        return init_seeds(self.model, self.optimizer, keys, params, learning_rate=lr, grad_clip=clip)

    def restore(self, checkpoints: Checkpoints, epoch: int, config: RunConfig, member_ids,
                n_stacked: int | None = None) -> tuple[TrainState, SeedProgress]:
        """The stacked states of `member_ids` saved at `epoch` in a stack of `n_stacked` (with its
        padding, whatever the device count was; None: no padding), on the host without the padding
        (`place` them)."""
        like = jax.eval_shape(lambda: self.init(config, pad_ids(member_ids, n_stacked or len(member_ids))))
        restored = checkpoints.restore(epoch, self.runtime.replicated_like(like))
        return unpadded(self.runtime.fetch(restored), len(member_ids))

    def place(self, states: TrainState, progress: SeedProgress) -> tuple[TrainState, SeedProgress]:
        """The (host) stack of the real members, padded with inactive ones and sharded over the devices."""
        n_real, n_stacked = progress.active.shape[0], self.runtime.n_stacked(progress.active.shape[0])
        states, progress = pad_members(self.runtime.fetch((states, progress)), n_stacked)
        progress = progress._replace(active=inactive_padding(progress.active, n_real))
        return self.runtime.shard((states, progress))


def training_set(data: TrainingData, time_scale: float) -> Batch:
    """The training segments as the program trains on them: the teacher acceleration in rescaled
    time (d2x * time_scale^2, docs/method.md "The model") and the cold start on ONSET segments
    (docs/method.md, "The ODE and the rollout")."""
    return Batch(np.asarray(data.x, np.float32), np.asarray(data.dxdt, np.float32),
                 np.asarray(data.d2x * time_scale**2, np.float32), np.asarray(data.categories == Category.ONSET))
