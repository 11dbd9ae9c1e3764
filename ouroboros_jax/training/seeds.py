"""All seeds of a run as one compiled program (docs/training.md, "What a run does").

Every seed's `TrainState` is stacked on a leading axis of length S. One compiled call trains all
seeds for one epoch: `lax.scan` over the epoch's batches inside `jit`, `vmap` over seeds. Each
seed draws its own batch order and cold-start noise from its own key. A seed whose step is not
finite skips its own update; a seed that skips `max_consecutive_skips` steps in a row stops
(is marked inactive) and its state is frozen; the other seeds are unaffected.
"""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, PartitionSpec

from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.objective.losses import LossWeights
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.scoring.evaluation import autonomous_outputs
from ouroboros_jax.training.compilation import Compiled, compile_ahead
from ouroboros_jax.training.step import (
    Batch,
    StepConfig,
    StepMetrics,
    TrainState,
    init_train_state,
    scored_params,
    train_step,
    with_hyperparameters,
)


class MemberSettings(NamedTuple):
    """An epoch's settings that may differ between the members of a sweep without changing shapes.

    Attributes:
      weights: the (warmed-up) loss weights, each a scalar or (S,).
      ic_noise_rms: the cold-start noise, a scalar or (S,).
    """

    weights: LossWeights
    ic_noise_rms: float | np.ndarray


class SeedProgress(NamedTuple):
    """Per-seed bookkeeping carried across epochs (checkpointed with the states).

    Attributes:
      active: (S,) bool, False once a seed has stopped (diverged).
      skip_run: (S,) int32, the current run of consecutive skipped steps.
    """

    active: jax.Array
    skip_run: jax.Array


class EpochResult(NamedTuple):
    """What one epoch of the seeds' program returns.

    Attributes:
      states: the stacked `TrainState` after the epoch.
      progress: the `SeedProgress` after it.
      metrics: `StepMetrics` with leaves (S, n_batches).
      ran: (S, n_batches) bool, False for the steps of a seed that had already stopped.
    """

    states: TrainState
    progress: SeedProgress
    metrics: StepMetrics
    ran: jax.Array


def seed_keys(seed: int, seed_ids) -> jax.Array:
    """One key per seed id, independent of how many seeds run: seed k's key is fold_in(seed, k)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(seed_ids, jnp.uint32))


def init_seeds(config: ModelConfig, optimizer: optax.GradientTransformation, keys: jax.Array,
               params: nnx.State | None = None, learning_rate=None, grad_clip=None):
    """Stacked fresh states of S seeds and their progress. keys: (S,) -> leaves with leading S.

    `params` (one model's, unstacked) replaces every seed's initialisation. `learning_rate` and
    `grad_clip`, (S,) per member of a sweep, replace the optimiser's own (`make_optimizer`).
    """
    states = jax.vmap(lambda k: init_train_state(config, optimizer, k, params))(keys)
    if learning_rate is not None:
        states = states._replace(opt_state=with_hyperparameters(states.opt_state, learning_rate, grad_clip))
    s = keys.shape[0]
    return states, SeedProgress(jnp.ones((s,), bool), jnp.zeros((s,), jnp.int32))


def n_batches(n_segments: int, batch_size: int) -> int:
    """Batches per epoch: every segment is used each epoch (the last batch wraps around)."""
    return -(-n_segments // batch_size)


def epoch_batches(key: jax.Array, n_segments: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """One seed's batches for one epoch: every segment once, in an order drawn from the seed's key.

    The last batch wraps around to the start of the order, so batches are full.

    Returns:
      (the key after the draw, batches (n_batches, batch_size) of segment indices).
    """
    steps = n_batches(n_segments, batch_size)
    key, k_order = jax.random.split(key)
    order = jax.random.permutation(k_order, n_segments)
    return key, order[jnp.arange(steps * batch_size) % n_segments].reshape(steps, batch_size)


def _seed_epoch(state: TrainState, progress: SeedProgress, weights: LossWeights, ic_noise_rms, data: Batch, tf_var,
                horizon, *, graphdef, optimizer, config: StepConfig, batch_size: int,
                max_consecutive_skips: int) -> EpochResult:
    """One epoch of one seed (`progress` of that seed: scalars), metrics (n_batches,).

    `weights`, `ic_noise_rms`: the seed's own (a member of a sweep has its own values);
    `data`: the whole training set; `horizon`: None or traced, as in `train_step`."""
    key, batches = epoch_batches(state.key, data.x.shape[0], batch_size)
    state = state._replace(key=key)

    def body(carry, idx):
        state, active, skip_run = carry
        batch = Batch(*(a[idx] for a in data))
        new, metrics = train_step(state, batch, weights, tf_var, horizon, ic_noise_rms, graphdef=graphdef,
                                  optimizer=optimizer, config=config)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, state)
        skip_run = jnp.where(active, jnp.where(metrics.skipped > 0, skip_run + 1, 0), skip_run)
        ran = active
        active = active & (skip_run < max_consecutive_skips)
        return (state, active, skip_run), (metrics, ran)

    (state, active, skip_run), (metrics, ran) = jax.lax.scan(body, (state, *progress), batches)
    return EpochResult(state, SeedProgress(active, skip_run), metrics, ran)


@dataclasses.dataclass(frozen=True)
class SeedProgram:
    """Compiles and runs the epoch and evaluation programs for all seeds. It keeps no epoch program
    (the run's `programs.ProgramLedger` does); the evaluation program is one `jax.jit` function,
    compiled by JAX when first called.

    One epoch program per distinct `StepConfig`, stack and data shape. With a traced horizon
    (`run_epoch(..., horizon=H)`), one `StepConfig` serves every horizon up to its own that keeps
    the same STFT configs (`objective.losses`), so a curriculum needs a handful of programs rather
    than one per horizon.
    With a `mesh` (`runtime.Runtime.mesh`) every device runs its own shard of the stack
    (`shard_map`; the caller shards it, `runtime.Runtime.shard`): left to itself XLA's partitioner
    gathers the whole seed axis onto every device for the FFTs of the loss. With `seed_chunk` the
    seeds run in vmapped chunks of that many (over all devices), one chunk after another inside
    the program, so its peak memory is that of one chunk.
    """

    graphdef: nnx.GraphDef
    optimizer: optax.GradientTransformation
    batch_size: int
    max_consecutive_skips: int
    rollout: RolloutConfig
    seed_chunk: int = 0
    mesh: Mesh | None = None

    def _per_device(self, fn, n_mapped: int):
        """`fn` of (the stack's first `n_mapped` arguments, shared ones), run by each device on its own
        members (identity without a mesh)."""
        if self.mesh is None:
            return fn

        def per_device(*args):
            specs = (PartitionSpec("seed"),) * n_mapped + (PartitionSpec(),) * (len(args) - n_mapped)
            return jax.shard_map(fn, mesh=self.mesh, in_specs=specs, out_specs=PartitionSpec("seed"),
                                 check_vma=False)(*args)

        return per_device

    def _epoch_fn(self, config: StepConfig):
        seed_epoch = functools.partial(
            _seed_epoch, graphdef=self.graphdef, optimizer=self.optimizer, config=config,
            batch_size=self.batch_size, max_consecutive_skips=self.max_consecutive_skips,
        )
        local_chunk = self.seed_chunk // (self.mesh.size if self.mesh is not None else 1)
        return jax.jit(self._per_device(chunked_vmap(seed_epoch, local_chunk, n_mapped=4), n_mapped=4))

    @staticmethod
    def _epoch_args(states, progress, data, settings, tf_var, horizon):
        n = states.step.shape[0]
        weights = LossWeights(*(jnp.broadcast_to(jnp.asarray(w, jnp.float32), (n,)) for w in settings.weights))
        ic_noise_rms = jnp.broadcast_to(jnp.asarray(settings.ic_noise_rms, jnp.float32), (n,))
        return (states, progress, weights, ic_noise_rms, data, jnp.asarray(tf_var, jnp.float32),
                None if horizon is None else jnp.asarray(horizon, jnp.int32))

    def compile_epoch(self, config: StepConfig, states: TrainState, progress: SeedProgress, data: Batch,
                      settings: MemberSettings, tf_var, horizon: int | None = None) -> Compiled:
        """The epoch program of `config` for `run_epoch` with arguments of these shapes and shardings
        (with a traced horizon when `horizon` is not None), compiled now: with what the compile
        cost and whether it came from the persistent cache."""
        args = self._epoch_args(states, progress, data, settings, tf_var, horizon)
        return compile_ahead(self._epoch_fn(config), *args)

    def run_epoch(self, program: Compiled, states: TrainState, progress: SeedProgress, data: Batch,
                  settings: MemberSettings, tf_var, horizon: int | None = None) -> EpochResult:
        """Trains every seed for one epoch with `program` (`compile_epoch` of arguments like these).

        `settings`: this epoch's loss weights and cold-start noise, scalars shared by every seed
        or (S,) per member of a sweep.

        `horizon`: None (the program's static `config.horizon`), or this epoch's horizon, passed to
        the program as data (<= config.horizon, with the same STFT configs).

        `data`: the whole training set, shared by every seed.
        """
        return program.executable(*self._epoch_args(states, progress, data, settings, tf_var, horizon))

    @functools.cached_property
    def _outputs_fn(self):
        def outputs(params, x, dxdt):
            return autonomous_outputs(nnx.merge(self.graphdef, params), x, dxdt, self.rollout)

        return jax.jit(self._per_device(jax.vmap(outputs, in_axes=(0, None, None)), n_mapped=1))

    def autonomous_outputs(self, states: TrainState, x, dxdt) -> jax.Array:
        """Autonomous outputs of every seed on held-out vocalisations. x, dxdt: (V, n) -> (S, V, n), on the
        devices, sharded like `states` (`runtime.Runtime.fetch` brings them to the host)."""
        return self._outputs_fn(scored_params(states), jnp.asarray(x, jnp.float32), jnp.asarray(dxdt, jnp.float32))


def select_seeds(tree, indices):
    """Gathers seeds `indices` along the leading axis of every leaf (culling), host or device arrays."""
    indices = np.asarray(indices)
    return jax.tree_util.tree_map(lambda a: a[indices], tree)



def chunked_vmap(fn, seed_chunk: int, n_mapped: int):
    """`jax.vmap(fn)` over the leading (seed) axis of the first `n_mapped` arguments, the others
    shared; with `seed_chunk` > 0 the S seeds run as S / seed_chunk vmapped chunks of consecutive
    seeds one after another (`lax.map`), so only one chunk's intermediates are live at a time."""
    def mapped(*args):
        batched = jax.vmap(fn, in_axes=(0,) * n_mapped + (None,) * (len(args) - n_mapped))
        members, shared = args[:n_mapped], args[n_mapped:]
        n_seeds = jax.tree_util.tree_leaves(members)[0].shape[0]
        if not seed_chunk or seed_chunk >= n_seeds:
            return batched(*args)
        chunked = jax.tree_util.tree_map(lambda a: a.reshape(n_seeds // seed_chunk, seed_chunk, *a.shape[1:]),
                                         members)
        out = jax.lax.map(lambda chunk: batched(*chunk, *shared), chunked)
        return jax.tree_util.tree_map(lambda a: a.reshape(n_seeds, *a.shape[2:]), out)

    return mapped
