"""Which compiled epoch program trains each epoch of a run (`EpochPrograms`, the plan, static), and
the programs a run has compiled with what they cost (`ProgramLedger`, the one place they are kept).

The horizon is data, not shape: one program serves every horizon of the curriculum that keeps
the same STFT configs (`curriculum.program_horizons`), rolling out to its largest horizon and
leaving the later steps out of the loss. So geom 512 -> 2048 needs 2 programs per stack length,
and culling (which changes the seed count once) at most 2 more. The DEER rollout needs its horizon
static: with it every distinct horizon is its own program. A program is specialised to the
length of the member stack, which padding (to a multiple of the devices or of --seed_chunk) can
keep the same when culling leaves fewer seeds: then no new program is needed.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

from ouroboros_jax.objective.curriculum import (
    distinct_horizons,
    horizon_for_epoch,
    program_horizons,
)
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.ode.integrators import horizon_is_data
from ouroboros_jax.training.compilation import Compiled
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.step import StepConfig
from ouroboros_jax.training.sweep import values_of


@dataclasses.dataclass(frozen=True)
class EpochPrograms:
    """The run's epoch programs: which one trains each epoch, keyed by (program horizon, stack length).

    `stack` gives the stack length that holds a number of seeds (`runtime.Runtime.n_stacked`).
    """

    config: RunConfig
    sample_rate: float
    rollout: RolloutConfig
    stack: Callable[[int], int]
    _program_horizon: dict = dataclasses.field(init=False, repr=False, compare=False)  # horizon -> its program's

    def __post_init__(self):
        c = self.config
        horizons = distinct_horizons(c.n_epochs, c.h_min, c.h_max, c.h_schedule)
        if self.horizon_is_data:
            uses_envelope = self.uses("lam_env") or self.uses("lam_env_log")
            env_sigma = c.objective.env_sigma(self.sample_rate) if uses_envelope else None
            program_horizon = program_horizons(horizons, c.objective.spec_configs, env_sigma)
        else:
            program_horizon = {h: h for h in horizons}
        object.__setattr__(self, "_program_horizon", program_horizon)  # derived once from the frozen fields

    def uses(self, weight: str) -> bool:
        """Whether some member of the run gives loss term `weight` (e.g. "lam_env") a positive weight."""
        return max(values_of(self.config, weight)) > 0

    @property
    def horizon_is_data(self) -> bool:
        return horizon_is_data(self.rollout)

    def horizon(self, epoch: int) -> int:
        c = self.config
        return horizon_for_epoch(epoch, c.n_epochs, c.h_min, c.h_max, c.h_schedule)

    def key(self, epoch: int, n_seeds: int) -> tuple[int, int]:
        """(program horizon, stack length) of the program that trains `epoch` with `n_seeds` seeds."""
        return self._program_horizon[self.horizon(epoch)], self.stack(n_seeds)

    def step_config(self, epoch: int) -> StepConfig:
        """The static settings of the epoch's program (its horizon: the largest it serves)."""
        return self.config.objective.step_config(self._program_horizon[self.horizon(epoch)], self.sample_rate,
                                                 self.rollout, self.uses("lam_env"), self.uses("lam_env_log"))

    def traced_horizon(self, epoch: int) -> int | None:
        """The horizon the epoch passes to its program as data (None: the program's own)."""
        return self.horizon(epoch) if self.horizon_is_data else None

    def serves(self, program_horizon: int) -> tuple[int, int]:
        """The smallest and largest horizon of the run that the program of `program_horizon` serves."""
        served = [h for h, p in self._program_horizon.items() if p == program_horizon]
        return min(served), max(served)

    def seeds_at(self, epoch: int, n_seeds: int) -> int:
        """The seed count at `epoch` of a run that has `n_seeds` now (culling keeps --cull_keep)."""
        c = self.config
        culls_later = c.culling and epoch >= c.cull_epoch and n_seeds > c.cull_keep
        return c.cull_keep if culls_later else n_seeds


@dataclasses.dataclass
class ProgramLedger:
    """The epoch programs this process has compiled for a run, by `EpochPrograms.key`: the one place
    they are kept (the run compiles each before its first epoch, `training.run`), with their cost."""

    plan: EpochPrograms
    compiled: dict[tuple[int, int], Compiled] = dataclasses.field(default_factory=dict)

    def record(self, key: tuple[int, int], compiled: Compiled) -> None:
        self.compiled[key] = compiled

    def compile_seconds_ahead(self, next_epoch: int, n_seeds: int) -> float:
        """Expected compile time of the programs the epochs from `next_epoch` on still need: their
        number times the mean time of the fresh compiles so far (0 before any)."""
        plan = self.plan
        ahead = {plan.key(e, plan.seeds_at(e, n_seeds)) for e in range(next_epoch, plan.config.n_epochs)}
        fresh = [c.seconds for c in self.compiled.values() if not c.cached]
        return len(ahead - set(self.compiled)) * (float(np.mean(fresh)) if fresh else 0.0)

    def cost(self, key: tuple[int, int]) -> dict:
        """What compiling the program of `key` cost: its `seconds`, whether it was `cached`, and its
        `memory_bytes` per device (`Compiled.memory`)."""
        compiled = self.compiled[key]
        return {"seconds": compiled.seconds, "cached": compiled.cached, "memory_bytes": compiled.memory}

    def summary(self) -> dict:
        """For run.json and the manifest: the programs compiled by this process and their cost."""
        programs = [{"horizon": h, "serves": list(self.plan.serves(h)), "n_stacked": n, **self.cost((h, n))}
                    for h, n in self.compiled]
        return {"epoch_programs": programs, "n_epoch_programs": len(programs),
                "compile_seconds": sum(c.seconds for c in self.compiled.values())}
