"""The run as one state: a `RunState` and its transitions (docs/architecture.md, "From flags to outputs").

    state = init_run(setup, config)                                  # or restore_run(...)
    state, outcome = train_epoch(setup, config, state, train_set, tf_var, program)  # its compiled program
    scores = score_members(vocalisations, outputs, sample_rate)      # host: SciPy
    state = cull(setup, config, state, scores)                       # at the cull epoch
    best = select(config, state, scores)             # None: every member diverged

A transition returns a new state and changes none it is given. The members' training is one
compiled program per epoch (`seeds.SeedProgram`): every member's PRNG key lives in its
`TrainState`, fold_in(key(--seed), its seed), so a run is a function of its config. The autonomy
scores that culling and selection rank by are computed on the host (SciPy's filters and peak
picking, `evaluation.autonomy_score`), which is why the loop over epochs is Python (`run.py`) and
not one `lax.scan`. A checkpoint is a RunState (`save_run`, `restore_run`): resuming restores one
and continues.
"""

from typing import NamedTuple

import numpy as np
from absl import logging

from ouroboros_jax.data.vocalisations import Vocalisations
from ouroboros_jax.objective.curriculum import warmup_weights
from ouroboros_jax.scoring.evaluation import Autonomy, autonomy_score, ranking
from ouroboros_jax.training.checkpoints import Checkpoints
from ouroboros_jax.training.compilation import Compiled
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.records import checkpoint_meta, read_checkpoint_meta, seed_row
from ouroboros_jax.training.runtime import pad_ids, unpadded
from ouroboros_jax.training.seeds import MemberSettings, SeedProgress, select_seeds
from ouroboros_jax.training.setup import Setup
from ouroboros_jax.training.step import Batch, StepMetrics, TrainState
from ouroboros_jax.training.sweep import member_label, member_loss_weights, member_values


class Records(NamedTuple):
    """What the run keeps about its members besides their states (host values, saved as JSON).

    Attributes:
      culled: seed_cv.csv rows of the members culled from the stack.
      stopped: member id -> the epoch after which it was stopped as diverged.
      skips: member id -> its skipped (non-finite) steps so far, every member.
    """

    culled: tuple = ()
    stopped: dict = {}
    skips: dict = {}


class RunState(NamedTuple):
    """Everything a run is between two epochs.

    Attributes:
      states: the stacked `TrainState` of the members in the stack (their parameters, optimiser
        states, steps and PRNG keys), padded with inactive members and sharded over the devices.
      progress: their `SeedProgress` (active, current run of skipped steps), stacked alike.
      members: the ids of the real members, in stack order.
      records: the `Records`.
      epoch: the completed epochs.
    """

    states: TrainState
    progress: SeedProgress
    members: tuple
    records: Records
    epoch: int

    def fetched(self, setup: Setup, tree):
        """A device tree of the stack (outputs, metrics) on the host, without the padding members."""
        return unpadded(setup.runtime.fetch(tree), len(self.members))

    def active(self, setup: Setup) -> np.ndarray:
        """(S,) bool: which real members still train."""
        return self.fetched(setup, self.progress.active)


class EpochOutcome(NamedTuple):
    """An epoch's metrics, on the host without the padding: `StepMetrics` (S, n_batches), `ran`
    (S, n_batches), False for the steps of a member that had already stopped, and `active` (S,),
    the members still training after the epoch."""

    metrics: StepMetrics
    ran: np.ndarray
    active: np.ndarray


def init_run(setup: Setup, config: RunConfig) -> RunState:
    """The run before its first epoch: every member fresh (`Setup.init`), on the devices."""
    members = tuple(range(config.n_members))
    return RunState(*setup.place(*setup.init(config, members)), members, Records(), 0)


def save_run(checkpoints: Checkpoints, config: RunConfig, state: RunState) -> None:
    """Saves `state` as the checkpoint of its epoch: the stacks as arrays, the rest as JSON."""
    r = state.records
    meta = checkpoint_meta(config, state.members, list(r.culled), r.stopped, r.skips, state.progress.active.shape[0])
    checkpoints.save(state.epoch, (state.states, state.progress), meta)


def restore_run(setup: Setup, config: RunConfig, checkpoints: Checkpoints, epoch: int) -> RunState:
    """The `RunState` saved at `epoch`, placed on this run's devices (whatever the devices were)."""
    members, culled, stopped, skips, n_stacked = read_checkpoint_meta(checkpoints.meta(epoch))
    states, progress = setup.place(*setup.restore(checkpoints, epoch, config, members, n_stacked))
    return RunState(states, progress, tuple(members), Records(tuple(culled), stopped, skips), epoch)


def epoch_settings(config: RunConfig, state: RunState) -> MemberSettings:
    """The stack's loss weights (warmed up for the epoch after `state.epoch`) and cold-start noise.

    The padding members take their copies' settings."""
    stacked = pad_ids(list(state.members), state.progress.active.shape[0])
    o = config.objective
    weights = warmup_weights(state.epoch, member_loss_weights(config, stacked), o.spec_warmup_epochs,
                             o.env_warmup_epochs)
    return MemberSettings(weights, member_values(config, stacked, "ic_noise_rms"))


def epoch_arguments(setup: Setup, config: RunConfig, state: RunState, train_set: Batch, tf_var) -> tuple:
    """The arguments of `SeedProgram.run_epoch` (and `compile_epoch`) after the program (its
    `StepConfig`) for the epoch after `state.epoch`."""
    return (state.states, state.progress, train_set, epoch_settings(config, state), tf_var,
            setup.programs.traced_horizon(state.epoch))


def train_epoch(setup: Setup, config: RunConfig, state: RunState, train_set: Batch, tf_var,
                program: Compiled) -> tuple[RunState, EpochOutcome]:
    """Trains every member for the epoch after `state.epoch` with its compiled `program` (one call),
    and records their skipped steps and the members it stopped as diverged."""
    result = setup.program.run_epoch(program, *epoch_arguments(setup, config, state, train_set, tf_var))
    metrics, ran, active = state.fetched(setup, (result.metrics, result.ran, result.progress.active))
    skipped = (metrics.skipped * ran).sum(axis=1)
    skips, stopped = dict(state.records.skips), dict(state.records.stopped)
    for k, member in enumerate(state.members):
        skips[member] = skips.get(member, 0) + int(skipped[k])
        if not active[k] and member not in stopped:
            stopped[member] = state.epoch + 1
            logging.warning("seed %d diverged: %d non-finite steps in a row; it is stopped", member,
                            config.max_consecutive_skips)
    records = state.records._replace(stopped=stopped, skips=skips)
    new = RunState(result.states, result.progress, state.members, records, state.epoch + 1)
    return new, EpochOutcome(metrics, ran, active)


def score_members(vocalisations: Vocalisations, outputs: np.ndarray, sample_rate: float,
                  rescale: bool = False) -> list[Autonomy]:
    """The cold-start autonomy of every member (on the host: SciPy), each vocalisation scored on
    its own samples.

    Args:
      vocalisations: the V raw vocalisations, read to one length n.
      outputs: (S, V, n) the members' raw autonomous outputs on `vocalisations.audio`
        (`SeedProgram.autonomous_outputs`).
      sample_rate: Hz.
      rescale: score the outputs rescaled to the vocalisations' level.
    """
    targets, lengths = vocalisations.windows(), vocalisations.lengths
    return [autonomy_score(targets, [y[:n] for y, n in zip(out, lengths)], sample_rate, rescale=rescale,
                           cold_start=True, lead_ins=vocalisations.lead_ins) for out in outputs]


def cull(setup: Setup, config: RunConfig, state: RunState, scores: list[Autonomy]) -> RunState:
    """Keeps the --cull_keep best members by validation autonomy (the `diverged` last, kept only if
    too few others are left); the others' rows are recorded.

    `scores`: the stack's members', in stack order. The kept stack is placed on the devices."""
    keep = sorted(ranking(scores, diverged(state, scores), config.select_by)[: config.cull_keep].tolist())
    r = state.records
    rows = [seed_row(config, member, scores[k].score, scores[k].breakdown, f"checkpoints/{state.epoch}",
                     "diverged" if member in r.stopped else "culled", r.stopped.get(member, state.epoch),
                     r.skips.get(member, 0))
            for k, member in enumerate(state.members) if k not in keep]
    states, progress = setup.place(*select_seeds(state.fetched(setup, (state.states, state.progress)), keep))
    return RunState(states, progress, tuple(state.members[k] for k in keep),
                    r._replace(culled=r.culled + tuple(rows)), state.epoch)


def diverged(state: RunState, scores: list[Autonomy]) -> np.ndarray:
    """(S,) bool: the members that would give the user no model: stopped in training
    (--max_consecutive_skips non-finite steps in a row), or with no bounded output on any validation
    vocalisation (their -5.0 is the divergence sentinel, not a score). They rank after the others
    in culling and selection, and are never selected."""
    return np.array([member in state.records.stopped or not any(s.bounded for s in scores[k].segments)
                     for k, member in enumerate(state.members)])


def select(config: RunConfig, state: RunState, scores: list[Autonomy]) -> int | None:
    """The stack index of the best member by validation autonomy (its --select_by statistic); None
    when every member `diverged`."""
    unusable = diverged(state, scores)
    best = int(ranking(scores, unusable, config.select_by)[0])
    return None if unusable[best] else best


def why_none_selected(config: RunConfig, state: RunState, scores: list[Autonomy]) -> str:
    """What `select` returning None means in words, naming each member and how it diverged."""
    stopped = state.records.stopped
    parts = [f"{member_label(config, m)} in training after epoch {stopped[m]}" for m in state.members if m in stopped]
    in_rollouts = [member_label(config, m) for m in state.members if m not in stopped]
    if in_rollouts:
        parts.append(f"{', '.join(in_rollouts)}: the autonomous rollouts of all {len(scores[0].segments)} "
                     "validation vocalisations")
    return f"every seed diverged ({'; '.join(parts)})"


def final_rows(config: RunConfig, state: RunState, scores: list[Autonomy]) -> list[dict]:
    """seed_cv.csv: the culled members' rows, then one per member of the final stack."""
    r = state.records
    return list(r.culled) + [
        seed_row(config, member, scores[k].score, scores[k].breakdown, f"checkpoints/{state.epoch}",
                 "diverged" if member in r.stopped else "finished", r.stopped.get(member, state.epoch),
                 r.skips.get(member, 0))
        for k, member in enumerate(state.members)
    ]
