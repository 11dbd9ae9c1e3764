"""One optimisation step of ONE seed (docs/method.md, "Objective": the objective and the training step).

Pure functions in the optax style: a `TrainState` pytree in, a new one and the step's metrics
out. The seed axis is added by `jax.vmap` over stacked states, never written here.

The drives are computed once per step and shared by the teacher-forced anchor and the rollout,
so the gradients of both terms add through one encoder pass. A step whose loss or gradient is
not finite leaves parameters and optimiser state untouched and reports `skipped = 1`.
"""

import dataclasses
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ouroboros_jax.model.ouroboros import Drives, ModelConfig, Ouroboros
from ouroboros_jax.objective.losses import (
    LossWeights,
    acceleration_anchor_loss,
    envelope_l1_loss,
    envelope_log_loss,
    mrstft_loss,
    mse_accel_loss,
    total_loss,
)
from ouroboros_jax.ode.deer import held_guess
from ouroboros_jax.ode.dynamics import RolloutConfig, initial_state, teacher_acceleration
from ouroboros_jax.ode.integrators import Rollout, integrate

LossMode = Literal["spectral_rollout", "mse_accel"]
LOSS_MODES = ("spectral_rollout", "mse_accel")

# A rollout sample within 1 % of the soft-tanh bound counts as pinned at the bound.
_PINNED = 0.99


class Batch(NamedTuple):
    """Training segments: a step's batch, or the whole training set (B = N) the batches are drawn from.

    Attributes:
      x: (B, L) audio.
      dxdt: (B, L) first derivative per sample.
      d2x: (B, L) teacher acceleration in rescaled time (per-sample value * time_scale^2).
      cold_start: (B,) bool, True for ONSET segments (rolled out from a noise IC).
    """

    x: jax.Array
    dxdt: jax.Array
    d2x: jax.Array
    cold_start: jax.Array


class TrainState(NamedTuple):
    """Everything one seed's training carries: parameters, optimiser state, PRNG key, step."""

    params: nnx.State
    opt_state: optax.OptState
    key: jax.Array
    step: jax.Array


class StepMetrics(NamedTuple):
    """Scalars of one step (arrays, so the run loop logs them after a compiled call).

    In "mse_accel" mode `tf` is the legacy objective (summed squared error plus the optional
    weight penalty), the spectral terms are 0 and the rollout health metrics are NaN.
    """

    spec: jax.Array
    tf: jax.Array
    env: jax.Array
    env_log: jax.Array
    total: jax.Array
    grad_norm: jax.Array  # before clipping
    skipped: jax.Array  # 1 where the update was skipped (non-finite loss or gradient)
    horizon: jax.Array
    lam_spec_t: jax.Array
    lam_env_t: jax.Array
    lam_env_log_t: jax.Array
    rms_ratio: jax.Array  # rollout RMS / target RMS: -> 0 when the rollout collapses to silence
    pinned_frac: jax.Array  # fraction of rollout samples pinned at the soft-tanh bound
    deer_iterations: jax.Array  # mean Newton iterations of the DEER rollout (0 with the scan)
    deer_fallbacks: jax.Array  # examples whose DEER solve fell back to the scan (0 with the scan)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """The static part of a step: one compilation per distinct value. Built from a run's settings
    (`ObjectiveConfig.step_config`), which hold every default; here only "off" is one.

    Attributes:
      horizon: rollout length H in samples; with a traced horizon passed to `train_step`, the
        largest horizon the program serves (its rollout buffer).
      loss_mode: "spectral_rollout" (the method) or "mse_accel" (the legacy baseline).
      stft_configs: (n_fft, hop) pairs of the MRSTFT loss, before filtering by H.
      env_sigma: sigma of the envelope filter in samples (env_ms / 1000 * sample_rate).
      env_log_eps: floor of the log-ratio envelope loss.
      use_env, use_env_log: whether the envelope terms are computed (configured weight > 0).
      rollout: integration settings, the integrator among them (`ouroboros_jax.ode.integrators`).
      penalty_lam: base of the legacy lam^(i+j) weight penalty; None disables it.
    """

    horizon: int
    loss_mode: LossMode
    stft_configs: tuple
    env_sigma: float
    env_log_eps: float
    rollout: RolloutConfig
    use_env: bool = False
    use_env_log: bool = False
    penalty_lam: float | None = None

    def __post_init__(self):
        if self.loss_mode not in LOSS_MODES:
            raise ValueError(f"loss_mode must be one of {LOSS_MODES}, got {self.loss_mode!r}")


class ParameterAverage(NamedTuple):
    """State of `parameter_average`: the moving average of the parameters."""

    average: nnx.State


def parameter_average(decay: float) -> optax.GradientTransformation:
    """Keeps an exponential moving average of the parameters that the updates lead to,
    average <- decay average + (1 - decay) (params + updates), starting at the initial
    parameters; the updates pass unchanged. Last in a chain, it sees the final updates."""

    def init(params):
        return ParameterAverage(jax.tree_util.tree_map(jnp.array, params))

    def update(updates, state, params):
        new = optax.apply_updates(params, updates)
        average = jax.tree_util.tree_map(lambda a, p: decay * a + (1.0 - decay) * p, state.average, new)
        return updates, ParameterAverage(average)

    return optax.GradientTransformation(init, update)


def _clipped_adam(learning_rate, grad_clip, decay_steps, average_decay):
    rate = optax.cosine_decay_schedule(learning_rate, decay_steps) if decay_steps else learning_rate
    steps = [optax.clip_by_global_norm(grad_clip), optax.adam(rate)]
    return optax.chain(*steps, *([parameter_average(average_decay)] if average_decay else []))


def make_optimizer(learning_rate: float, grad_clip: float, decay_steps: int | None = None,
                   average_decay: float = 0.0):
    """Adam (b1 0.9, b2 0.999, eps 1e-8) after clipping the global gradient norm at `grad_clip`.

    With `decay_steps` the learning rate decays from `learning_rate` to 0 along a cosine over that
    many steps. With `average_decay` > 0 the optimiser state also keeps a moving average of the
    parameters (`parameter_average`, --ema_decay), which `scored_params` returns. The learning
    rate and the clip are held in the optimiser state (`optax.inject_hyperparams`): members of a
    sweep carry their own (`with_hyperparameters`).
    """
    return optax.inject_hyperparams(_clipped_adam, static_args=("decay_steps", "average_decay"))(
        learning_rate, grad_clip, decay_steps, average_decay)


def scored_params(state: TrainState) -> nnx.State:
    """The parameters that are scored, selected and sung with: the optimiser's moving average of
    them where it keeps one (--ema_decay > 0), else the parameters. Stacked states give stacked
    parameters."""
    averages = [s for s in state.opt_state.inner_state if isinstance(s, ParameterAverage)]
    return averages[0].average if averages else state.params


def with_hyperparameters(opt_state, learning_rate, grad_clip):
    """`opt_state` of `make_optimizer` with this learning rate and clip (scalars, or (S,) when stacked)."""
    hyperparams = {**opt_state.hyperparams, "learning_rate": jnp.asarray(learning_rate, jnp.float32),
                   "grad_clip": jnp.asarray(grad_clip, jnp.float32)}
    return opt_state._replace(hyperparams=hyperparams)


def model_graphdef(config: ModelConfig) -> nnx.GraphDef:
    """The static structure of a model of this config (no parameters are materialised)."""
    return nnx.graphdef(nnx.eval_shape(lambda: Ouroboros(config, rngs=nnx.Rngs(0))))


def init_train_state(config: ModelConfig, optimizer: optax.GradientTransformation, key: jax.Array,
                     params: nnx.State | None = None) -> TrainState:
    """A fresh seed: parameters from `k_init`, the training key `k_train`. vmap over keys for S seeds.

    `params` replaces the initialisation (a model converted from the reference starts from its
    trained parameters); the keys are split all the same.
    """
    k_init, k_train = jax.random.split(key)
    if params is None:
        params = nnx.state(Ouroboros(config, rngs=nnx.Rngs(k_init)))
    return TrainState(params, optimizer.init(params), k_train, jnp.zeros((), jnp.int32))


def spectral_losses(drives: Drives, batch: Batch, x0, v0, tf_var, time_scale: float, config: StepConfig,
                    horizon=None) -> tuple[dict, Rollout]:
    """The loss terms of docs/method.md ("Objective") from already computed drives and initial state.

    Args:
      drives: the model's drives for `batch` (B, L, ...).
      batch: the segments.
      x0, v0: (B,) rollout initial state.
      tf_var: scalar normaliser of the anchor.
      time_scale: tau / dt.
      config: static settings.
      horizon: None (`config.horizon`), or the traced horizon n <= config.horizon with the same
        STFT configs: every term is that of the first n samples (`ouroboros_jax.objective.losses`).

    Returns:
      (components dict with spec, tf, env, env_log; the `Rollout`, x_hat (B, config.horizon) its
      samples from n on held).
    """
    v = time_scale * batch.dxdt
    tf = acceleration_anchor_loss(teacher_acceleration(drives, batch.x, v), batch.d2x, tf_var)
    # An iterative integrator starts from the data trajectory where the rollout starts from the
    # data (close once the model is trained), and from the held initial state for cold starts.
    data = jnp.stack([batch.x[:, : config.horizon], v[:, : config.horizon]], axis=-1)
    guess = jnp.where(batch.cold_start[:, None, None], held_guess(x0, v0, config.horizon), data)
    trajectory = integrate(drives, x0, v0, config.horizon, config.rollout, horizon, guess)
    x_hat, target = trajectory.x_hat, batch.x[:, : config.horizon]
    zero = jnp.zeros((), x_hat.dtype)
    components = {
        "spec": mrstft_loss(x_hat, target, config.stft_configs, horizon),
        "tf": tf,
        "env": envelope_l1_loss(x_hat, target, config.env_sigma, horizon) if config.use_env else zero,
        "env_log": envelope_log_loss(x_hat, target, config.env_sigma, config.env_log_eps, horizon)
        if config.use_env_log else zero,
    }
    return components, trajectory


def rollout_health(x_hat, target, bound_x, length=None):
    """Rollout RMS / target RMS, and the fraction of rollout samples within 1 % of the bound.

    x_hat, target: (B, H), of which the first `length` samples when given (traced). A ratio near
    0 means the rollout collapsed to silence; a fraction near 1 means it is pinned at the
    soft-tanh bound. Returns two scalars.
    """
    valid = None if length is None else (jnp.arange(x_hat.shape[1]) < length)[None, :]

    def mean(values):
        return jnp.mean(values) if valid is None else jnp.sum(jnp.where(valid, values, 0.0)) / (x_hat.shape[0] * length)

    rms_ratio = jnp.sqrt(mean(jnp.square(x_hat))) / (jnp.sqrt(mean(jnp.square(target))) + 1e-12)
    pinned = mean((jnp.abs(x_hat) >= _PINNED * bound_x).astype(x_hat.dtype)) if bound_x is not None else jnp.zeros(())
    return rms_ratio, pinned.astype(x_hat.dtype)


class ObjectiveParts(NamedTuple):
    """What a step's loss is made of, beside the total.

    Attributes:
      components: the loss terms, scalars under "spec", "tf", "env", "env_log".
      rms_ratio, pinned_frac: the rollout's health (`rollout_health`); NaN in "mse_accel" mode.
      rollout_iterations, rollout_fallbacks: the integrator's statistics (`integrators.Rollout`;
        zeros for the scan and in "mse_accel" mode).
    """

    components: dict
    rms_ratio: jax.Array
    pinned_frac: jax.Array
    rollout_iterations: jax.Array
    rollout_fallbacks: jax.Array


def objective(params, graphdef, batch: Batch, key, weights: LossWeights, tf_var, config: StepConfig, horizon,
              ic_noise_rms) -> tuple[jax.Array, ObjectiveParts]:
    """Total loss of one batch and its `ObjectiveParts`.

    `horizon`: None or traced, as in `spectral_losses`; `ic_noise_rms`: standard deviation of
    the cold-start initial state."""
    model = nnx.merge(graphdef, params)
    drives = model(batch.x, batch.dxdt)
    time_scale = model.config.time_scale
    if config.loss_mode == "mse_accel":
        accel = teacher_acceleration(drives, batch.x, time_scale * batch.dxdt)
        mse = mse_accel_loss(accel, batch.d2x, drives.W, config.penalty_lam)
        zero, nan = jnp.zeros_like(mse), jnp.full_like(mse, jnp.nan)
        components = {"spec": zero, "tf": mse, "env": zero, "env_log": zero}
        return mse, ObjectiveParts(components, nan, nan, zero, jnp.zeros((), jnp.int32))
    x0, v0 = initial_state(batch.x, time_scale * batch.dxdt, batch.cold_start, key, ic_noise_rms)
    components, trajectory = spectral_losses(drives, batch, x0, v0, tf_var, time_scale, config, horizon)
    rms_ratio, pinned = rollout_health(trajectory.x_hat, batch.x[:, : config.horizon], config.rollout.bound_x, horizon)
    return total_loss(components, weights), ObjectiveParts(components, rms_ratio, pinned, trajectory.iterations,
                                                           trajectory.fallbacks)


def train_step(state: TrainState, batch: Batch, weights: LossWeights, tf_var, horizon, ic_noise_rms, *,
               graphdef, optimizer: optax.GradientTransformation, config: StepConfig):
    """One optimisation step of one seed.

    Args:
      state: the seed's `TrainState`.
      batch: (B, L) segments.
      weights: this epoch's (warmed-up) loss weights, scalars.
      tf_var: scalar anchor normaliser (`teacher_acceleration_variance` of the training set).
      horizon: None (the static `config.horizon`), or this step's horizon as a traced int32
        scalar <= config.horizon that keeps the same STFT configs: one compiled step then serves
        every such horizon, with the loss and gradient of a step compiled for it.
      ic_noise_rms: standard deviation of the cold-start initial state (a scalar; traced for the
        members of a sweep).
      graphdef, optimizer, config: static (close over them or mark them static under jit).

    Returns:
      (new TrainState, StepMetrics).
    """
    key, k_ic = jax.random.split(state.key)
    (total, parts), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params, graphdef, batch, k_ic, weights, tf_var, config, horizon, ic_noise_rms
    )
    components = parts.components
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(total) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    def keep_if_finite(new, old):
        return jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)

    new_state = TrainState(
        keep_if_finite(params, state.params), keep_if_finite(opt_state, state.opt_state), key, state.step + 1
    )
    lam = weights if config.loss_mode == "spectral_rollout" else LossWeights(0.0, 1.0, 0.0, 0.0)
    metrics = StepMetrics(
        spec=components["spec"], tf=components["tf"], env=components["env"], env_log=components["env_log"],
        total=total, grad_norm=grad_norm, skipped=(~finite).astype(jnp.int32),
        horizon=jnp.asarray(config.horizon if horizon is None else horizon, jnp.int32),
        lam_spec_t=jnp.asarray(lam.lam_spec, jnp.float32), lam_env_t=jnp.asarray(lam.lam_env, jnp.float32),
        lam_env_log_t=jnp.asarray(lam.lam_env_log, jnp.float32), rms_ratio=parts.rms_ratio,
        pinned_frac=parts.pinned_frac, deer_iterations=parts.rollout_iterations, deer_fallbacks=parts.rollout_fallbacks,
    )
    return new_state, metrics
