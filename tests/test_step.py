"""One training step: golden loss and gradient parity, skipping, clipping, learning (docs/method.md, "Objective")."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ouroboros_jax.model.ouroboros import Drives, ModelConfig, Ouroboros
from ouroboros_jax.model.reference_params import load_reference_params
from ouroboros_jax.objective.derivatives import first_derivative, second_derivative
from ouroboros_jax.objective.losses import LossWeights, mrstft_loss, total_loss
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.training.config import ObjectiveConfig, RunConfig
from ouroboros_jax.training.programs import EpochPrograms
from ouroboros_jax.training.step import (
    Batch,
    StepConfig,
    TrainState,
    init_train_state,
    make_optimizer,
    model_graphdef,
    rollout_health,
    scored_params,
    spectral_losses,
    train_step,
)
from tests.helpers import RUN, golden_model, step_config

ALL_TERMS = LossWeights(1.0, 1.0, 1.0, 1.0)
DEFAULT_WEIGHTS = ObjectiveConfig().weights
# The XLA rollout kernel: example 3's float32 gradient norm is chaotic (below) and its bounds were
# measured with this kernel's rounding; with the numba kernel's it is 11x the reference's (measured;
# in float64 the two kernels' gradients there agree to 3e-8; tests/test_numba_rollout.py).
GOLDEN_STEP = step_config(1100, use_env=True, use_env_log=True, rollout=RolloutConfig(clamp_stages=False, kernel="xla"))


def golden_batch_and_ic(golden, dtype=jnp.float32):
    mask = golden["small/rollout_noise_ic/mask"]
    x, dxdt = golden["small/input/x"], golden["small/input/dxdt"]
    x0 = np.where(mask, golden["small/rollout_noise_ic/noise_x"], x[:, 0])
    v0 = np.where(mask, golden["small/rollout_noise_ic/noise_v"], dxdt[:, 0])
    batch = Batch(jnp.asarray(x, dtype), jnp.asarray(dxdt, dtype), jnp.asarray(golden["small/input/d2x"], dtype),
                  jnp.asarray(mask))
    return batch, jnp.asarray(x0, dtype), jnp.asarray(v0, dtype)


def test_golden_losses_from_injected_drives(golden):
    """tf, env and env_log agree to round-off. The spectral term's log-magnitude part amplifies
    1e-4 rollout differences: the reference's own stored rollout (small/rollout_noise_ic/xhat)
    scores 13.7264 through the same MRSTFT, against 13.7121 in its loss evaluation; ours 13.7263."""
    batch, x0, v0 = golden_batch_and_ic(golden)
    drives = Drives(*(jnp.asarray(golden[f"small/drives/{k}"]) for k in Drives._fields))
    tf_var = float(golden["small/loss/tf_var"])
    components, *_ = jax.jit(spectral_losses, static_argnums=(5, 6))(drives, batch, x0, v0, tf_var, 1.0, GOLDEN_STEP)
    for term in ("tf", "env", "env_log"):
        np.testing.assert_allclose(components[term], golden[f"small/loss/{term}"], rtol=2e-5, err_msg=term)
    np.testing.assert_allclose(components["spec"], golden["small/loss/spec"], rtol=3e-3)
    np.testing.assert_allclose(total_loss(components, ALL_TERMS), golden["small/loss/total"], rtol=2e-3)


def reference_layout(model_config, arrays):
    """Golden gradients (reference names and layouts) as a pytree shaped like our parameters."""
    holder = Ouroboros(model_config, rngs=nnx.Rngs(0))
    load_reference_params(holder, arrays)
    return nnx.state(holder)


def test_golden_full_step_loss_and_gradients(golden, golden_json):
    model = golden_model(golden, golden_json, "small")
    graphdef, params = nnx.split(model)
    batch, x0, v0 = golden_batch_and_ic(golden)
    tf_var = float(golden["small/loss/tf_var"])

    def loss(params):
        drives = nnx.merge(graphdef, params)(batch.x, batch.dxdt)
        components, trajectory = spectral_losses(drives, batch, x0, v0, tf_var, 1.0, GOLDEN_STEP)
        return total_loss(components, ALL_TERMS), (components, trajectory.x_hat)

    (total, (components, x_hat)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    for term in ("spec", "tf", "env", "env_log", "total"):
        value = total if term == "total" else components[term]
        np.testing.assert_allclose(value, golden[f"small/loss/{term}"], rtol=1e-2, err_msg=term)
    # Examples 0-2 do not saturate: from our own encoders' drives their rollouts are the reference's
    # (measured within 8e-7) and so are their spectral losses (2e-6 relative).
    reference_rollout = golden["small/rollout_noise_ic/xhat"]
    np.testing.assert_allclose(x_hat[:3], reference_rollout[:3], atol=1e-5)
    for k in range(3):
        target = batch.x[k : k + 1, : GOLDEN_STEP.horizon]
        np.testing.assert_allclose(mrstft_loss(x_hat[k : k + 1], target, GOLDEN_STEP.stft_configs),
                                   mrstft_loss(jnp.asarray(reference_rollout[k : k + 1]), target,
                                               GOLDEN_STEP.stft_configs), rtol=1e-5, err_msg=f"example {k}")
    expected = dict(nnx.to_flat_state(reference_layout(
        model.config, {k[len("small/grad/"):]: v for k, v in golden.items() if k.startswith("small/grad/")})))
    ours = {path: np.ravel(g[...]) for path, g in nnx.to_flat_state(grads)}
    expected = {path: np.ravel(r[...]) for path, r in expected.items()}
    # Example 3 saturates hard and its gradient (norm ~1e6, against ~5e2 for the other three)
    # sets the magnitude, which is chaotic: measured 0.45x the reference's in float32, 0.1x in
    # float64. So compare directions, and how the norm is spread over the tensors.
    total_ours = np.sqrt(sum(g @ g for g in ours.values()))
    total_ref = np.sqrt(sum(r @ r for r in expected.values()))
    assert 1e6 < total_ref < 1e7 and 0.35 < total_ours / total_ref < 0.55, (total_ours, total_ref)
    for path, r in expected.items():
        g = ours[path]
        cosine = g @ r / (np.linalg.norm(g) * np.linalg.norm(r) + 1e-30)
        assert cosine > 0.97, (path, cosine)
        np.testing.assert_allclose(np.linalg.norm(g) / total_ours, np.linalg.norm(r) / total_ref, rtol=0.2,
                                   err_msg=str(path))


TINY = ModelConfig(n_kernels=3, n_layers=1, d_state=2, d_conv=4, expand_factor=2)


def syllable(n_segments=2, length=256, sample_rate=44100, seed=0):
    """A short synthetic harmonic syllable (2 kHz fundamental + 2 harmonics) under an envelope."""
    t = np.arange(length) / sample_rate
    rng = np.random.default_rng(seed)
    x = np.stack([
        np.sin(2 * np.pi * t * 1800 + phase) * 0.3 + 0.1 * np.sin(2 * np.pi * t * 3600 + 2 * phase)
        for phase in rng.uniform(0, 2 * np.pi, n_segments)
    ]) * np.sin(np.pi * np.arange(length) / length)
    return Batch(jnp.asarray(x, jnp.float32), jnp.asarray(first_derivative(x), jnp.float32),
                 jnp.asarray(second_derivative(x), jnp.float32), jnp.array([True] + [False] * (n_segments - 1)))


@functools.lru_cache(maxsize=None)
def jitted_step(config: StepConfig, learning_rate: float, grad_clip: float = 5.0, average_decay: float = 0.0):
    optimizer = make_optimizer(learning_rate, grad_clip, average_decay=average_decay)
    step = functools.partial(train_step, horizon=None, ic_noise_rms=RUN.objective.ic_noise_rms,
                             graphdef=model_graphdef(TINY), optimizer=optimizer, config=config)
    return optimizer, jax.jit(step)


SMALL_STEP = step_config(128, stft_configs=((64, 16), (128, 32)))


def fresh_state(optimizer, seed=0):
    return init_train_state(TINY, optimizer, jax.random.key(seed))


def tree_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_normal_step_changes_parameters_and_reports_metrics():
    optimizer, step = jitted_step(SMALL_STEP, 1e-3)
    state = fresh_state(optimizer)
    weights = LossWeights(0.4, 1.0, 0.0, 0.0)
    new, metrics = step(state, syllable(), weights, 1e-3)
    assert int(metrics.skipped) == 0
    assert not tree_equal(new.params, state.params)
    assert int(new.step) == 1 and not np.array_equal(jax.random.key_data(new.key), jax.random.key_data(state.key))
    assert int(metrics.horizon) == 128
    np.testing.assert_allclose(metrics.lam_spec_t, 0.4)
    np.testing.assert_allclose(metrics.total, 0.4 * metrics.spec + metrics.tf, rtol=1e-6)
    assert float(metrics.env) == 0.0 and float(metrics.env_log) == 0.0  # disabled terms are not computed


@pytest.mark.parametrize("poison", ["batch", "tf_var"])
def test_non_finite_step_changes_nothing_and_is_flagged(poison):
    optimizer, step = jitted_step(SMALL_STEP, 1e-3)
    state = fresh_state(optimizer)
    state, _ = step(state, syllable(), ALL_TERMS, 1e-3)  # a non-trivial optimiser state
    batch, tf_var = syllable(), 1e-3
    if poison == "batch":
        batch = batch._replace(x=batch.x.at[1, 10].set(jnp.nan))
    else:
        tf_var = jnp.nan  # the loss itself is non-finite
    new, metrics = step(state, batch, ALL_TERMS, tf_var)
    assert int(metrics.skipped) == 1
    assert tree_equal(new.params, state.params)
    assert tree_equal(new.opt_state, state.opt_state)


def test_the_parameter_average_is_the_moving_average_of_the_parameters_after_each_update():
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    grads = [{"a": jnp.array([0.3, -0.4]), "b": jnp.array([0.1])}, {"a": jnp.array([0.2, 0.1]), "b": jnp.array([-2.0])},
             {"a": jnp.array([-0.5, 0.0]), "b": jnp.array([0.7])}]
    averaged, plain = make_optimizer(0.1, 5.0, average_decay=0.9), make_optimizer(0.1, 5.0)
    s_avg, s_plain = averaged.init(params), plain.init(params)
    p_avg, p_plain, expected = params, params, {k: np.asarray(v, np.float64) for k, v in params.items()}
    for g in grads:
        u_avg, s_avg = averaged.update(g, s_avg, p_avg)
        u_plain, s_plain = plain.update(g, s_plain, p_plain)
        for k in params:  # the updates are Adam's, unchanged
            np.testing.assert_array_equal(u_avg[k], u_plain[k])
        p_avg, p_plain = optax.apply_updates(p_avg, u_avg), optax.apply_updates(p_plain, u_plain)
        expected = {k: 0.9 * expected[k] + 0.1 * np.asarray(p_avg[k], np.float64) for k in params}
    state = TrainState(p_avg, s_avg, None, None)
    for k in params:
        np.testing.assert_allclose(scored_params(state)[k], expected[k], rtol=1e-6)
    assert not np.allclose(scored_params(state)["b"], p_avg["b"])
    assert scored_params(TrainState(p_plain, s_plain, None, None)) is p_plain  # without an average: the parameters


def test_a_skipped_step_leaves_the_parameter_average_alone():
    optimizer, step = jitted_step(SMALL_STEP, 1e-3, average_decay=0.5)
    state, _ = step(fresh_state(optimizer), syllable(), ALL_TERMS, 1e-3)
    assert not tree_equal(scored_params(state), state.params)
    new, metrics = step(state, syllable(), ALL_TERMS, jnp.nan)
    assert int(metrics.skipped) == 1 and tree_equal(scored_params(new), scored_params(state))


def test_rollout_health_by_hand():
    x_hat = jnp.array([[0.5 * 0.995, 0.1, -0.5, 0.0]])
    target = jnp.array([[0.2, -0.2, 0.2, -0.2]])
    rms_ratio, pinned = rollout_health(x_hat, target, 0.5)
    np.testing.assert_allclose(pinned, 0.5)  # 0.4975 and -0.5 are within 1 % of the bound
    np.testing.assert_allclose(rms_ratio, np.sqrt((0.4975**2 + 0.01 + 0.25) / 4) / 0.2, rtol=1e-6)


def test_clipping_happens_before_adam_at_the_global_norm():
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    grads = [{"a": jnp.array([30.0, -40.0]), "b": jnp.array([0.0])}, {"a": jnp.array([0.3, 0.1]), "b": jnp.array([2.0])}]
    clip = 5.0
    ours, adam = make_optimizer(0.1, clip), optax.adam(0.1)
    s_ours, s_adam = ours.init(params), adam.init(params)
    for g in grads:
        norm = np.sqrt(sum(float(jnp.sum(v**2)) for v in g.values()))
        clipped = {k: v * min(1.0, clip / norm) for k, v in g.items()}
        u_ours, s_ours = ours.update(g, s_ours, params)
        u_adam, s_adam = adam.update(clipped, s_adam, params)
        for k in params:
            np.testing.assert_allclose(u_ours[k], u_adam[k], rtol=1e-6)
    # Without clipping the second update differs: the first gradient's norm (50) is 10x the bound.
    unclipped = optax.adam(0.1)
    s = unclipped.init(params)
    _, s = unclipped.update(grads[0], s, params)
    u, _ = unclipped.update(grads[1], s, params)
    assert not np.allclose(u["a"], u_ours["a"])


@pytest.mark.parametrize("mode", ["spectral_rollout", "mse_accel"])
def test_loss_decreases_on_a_synthetic_syllable(mode):
    config = step_config(128, stft_configs=((64, 16), (128, 32)), loss_mode=mode)
    optimizer, step = jitted_step(config, 3e-3)
    state = fresh_state(optimizer, seed=1)
    batch = syllable()
    tf_var = float(np.var(np.asarray(batch.d2x), ddof=1))
    totals = []
    for _ in range(80):
        state, metrics = step(state, batch, DEFAULT_WEIGHTS, tf_var)
        assert int(metrics.skipped) == 0
        totals.append(float(metrics.total))
    # The tiny model's spectral loss settles near 3/4 of its start within 80 steps (measured 0.78;
    # its path is chaotic in float32 rounding, so the margin); a wrong gradient does not descend.
    assert np.mean(totals[-10:]) < 0.85 * np.mean(totals[:5]), totals


def test_mse_mode_reports_the_legacy_objective_with_the_run_s_penalty():
    programs = EpochPrograms(RunConfig(objective=ObjectiveConfig(loss_mode="mse_accel")), 44100.0, RolloutConfig(),
                             int)
    config = dataclasses.replace(programs.step_config(0), horizon=128)
    assert config.penalty_lam == 1.068  # --lam, which the run passes as the penalty base in this mode
    optimizer, step = jitted_step(config, 1e-3)
    state, batch = fresh_state(optimizer), syllable()
    _, metrics = step(state, batch, DEFAULT_WEIGHTS, 1.0)
    # The objective by hand (legacy mode): mean_b sum_t (y_hat - d2x)^2 + mean_b sum_{t,i,j} lam^(i+j) W^2.
    drives = nnx.merge(model_graphdef(TINY), state.params)(batch.x, batch.dxdt)
    omega, gamma, W = (np.asarray(a, np.float64) for a in (drives.omega, drives.gamma, drives.W))
    x, v, d2x = (np.asarray(a, np.float64) for a in (batch.x, batch.dxdt, batch.d2x))
    p = W.shape[-1]
    y_hat = -omega**2 * x - gamma * v - sum(W[..., i, j] * x**i * v**j for i in range(p) for j in range(p))
    penalty = sum(1.068 ** (i + j) * W[..., i, j] ** 2 for i in range(p) for j in range(p))
    expected = np.mean(np.sum((y_hat - d2x) ** 2, axis=1)) + np.mean(np.sum(penalty, axis=1))
    np.testing.assert_allclose(metrics.total, expected, rtol=1e-4)
    assert float(metrics.tf) == float(metrics.total) and float(metrics.spec) == 0.0
    assert np.mean(np.sum(penalty, axis=1)) > 0.1 * expected  # the penalty is a real part of it
    assert np.isnan(metrics.rms_ratio)


def test_unknown_loss_mode_is_an_error():
    with pytest.raises(ValueError, match="mse_accel"):
        step_config(128, loss_mode="mse")


@pytest.mark.parametrize("max_iter", [30, pytest.param(1, marks=pytest.mark.slow)])
def test_deer_step_equals_the_scan_step(max_iter):
    """Same losses and update with either backend; with one Newton iteration every example falls
    back to the scan (and is counted), so the step is the scan's exactly."""
    _, scan_step = jitted_step(SMALL_STEP, 1e-3)
    deer_config = dataclasses.replace(SMALL_STEP, rollout=RolloutConfig(backend="deer", deer_max_iter=max_iter))
    optimizer, deer_step = jitted_step(deer_config, 1e-3)
    state, batch = fresh_state(optimizer), syllable()
    batch = batch._replace(x=0.2 * batch.x, dxdt=0.2 * batch.dxdt, d2x=0.2 * batch.d2x)  # well inside the bounds
    scan_state, scan_metrics = scan_step(state, batch, ALL_TERMS, 1e-3)
    new_state, metrics = deer_step(state, batch, ALL_TERMS, 1e-3)
    for term in ("spec", "tf", "total"):
        np.testing.assert_allclose(getattr(metrics, term), getattr(scan_metrics, term), rtol=1e-4, err_msg=term)
    # Adam's first step moves every parameter by ~lr = 1e-3; the adjoint gradient differs from
    # autodiff through the scan at round-off, which Adam amplifies where a gradient is near 0
    # (measured: up to 1.3e-5 after the step; a wrong gradient would move a parameter by ~2e-3).
    for a, b in zip(jax.tree_util.tree_leaves(new_state.params), jax.tree_util.tree_leaves(scan_state.params)):
        np.testing.assert_allclose(a, b, rtol=0, atol=5e-5)
    if max_iter == 1:
        assert int(metrics.deer_fallbacks) == batch.x.shape[0]
    else:
        assert int(metrics.deer_fallbacks) == 0 and 1 < float(metrics.deer_iterations) <= max_iter
    assert int(scan_metrics.deer_fallbacks) == 0 and float(scan_metrics.deer_iterations) == 0.0


@functools.lru_cache(maxsize=None)
def step_gradients(scan_impl: str, gradient: str):
    """The loss and parameter gradients of one spectral step with these implementations."""
    from ouroboros_jax.training.step import objective

    model = dataclasses.replace(TINY, scan_impl=scan_impl)
    # The XLA rollout kernel for both gradients: the numba kernel is compared in test_numba_rollout.py.
    config = dataclasses.replace(SMALL_STEP, rollout=RolloutConfig(gradient=gradient, kernel="xla"))
    state = init_train_state(model, make_optimizer(RUN.lr, RUN.grad_clip), jax.random.key(0))
    f = functools.partial(objective, graphdef=model_graphdef(model), batch=syllable(), key=jax.random.key(1),
                          weights=ALL_TERMS, tf_var=1e-3, config=config, horizon=None,
                          ic_noise_rms=RUN.objective.ic_noise_rms)
    (total, _), grads = jax.jit(jax.value_and_grad(f, has_aux=True))(state.params)
    return total, grads


@pytest.mark.parametrize("scan_impl,gradient", [
    ("sequential", "autodiff"), *(pytest.param(*case, marks=pytest.mark.slow)
                                  for case in (("associative", "adjoint"), ("chunked", "adjoint"), ("fused", "autodiff"))),
    ("numba", "adjoint")])
def test_step_agrees_across_encoder_scans_and_rollout_gradients(scan_impl, gradient):
    """Every encoder scan and both rollout gradients give the default's loss and gradients to
    float32 rounding (1e-4 of each tensor's largest entry; a wrong term moves them by O(1))."""
    want_total, want = step_gradients("fused", "adjoint")
    total, grads = step_gradients(scan_impl, gradient)
    # The numba kernels' exp, sigmoid and softplus are their own polynomials, ulp-level off XLA's,
    # and this step amplifies rounding: weights moved by 1e-7 relative move the "fused" loss by
    # 5e-5 and a gradient by 3.5 % of its largest entry (measured). So numba gets the tolerance of
    # such a perturbation; its blocks are checked tightly in tests/test_numba_layer.py.
    loss_rtol, grad_atol = (2e-4, 0.15) if scan_impl == "numba" else (1e-5, 1e-4)
    np.testing.assert_allclose(total, want_total, rtol=loss_rtol)
    for (path, got), w in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(want)):
        scale = float(np.abs(np.asarray(w)).max())
        np.testing.assert_allclose(got, w, rtol=0, atol=grad_atol * scale + 1e-12, err_msg=jax.tree_util.keystr(path))


# The two programs of the default STFT configs: n_fft 1024 joins at H = 1024.
HORIZON_GROUPS = {1023: (512, 1023), 2048: (1500,)}  # the shortest, the program's own, one inside


@functools.lru_cache(maxsize=None)
def vmapped_objective(horizon: int, dynamic: bool):
    """value_and_grad of `objective` vmapped over 2 seeds; the horizon traced (shared) if dynamic."""
    from ouroboros_jax.training.step import objective

    config = step_config(horizon, use_env=True, use_env_log=True)

    def f(params, key, batch, h):
        return jax.value_and_grad(objective, has_aux=True)(params, model_graphdef(TINY), batch, key, ALL_TERMS,
                                                           1e-3, config, h if dynamic else None,
                                                           RUN.objective.ic_noise_rms)

    return jax.jit(jax.vmap(f, in_axes=(0, 0, None, None)))


@pytest.mark.parametrize("cold_start", [False, True])
def test_a_traced_horizon_gives_the_static_programs_loss_and_gradients(cold_start):
    """One program per STFT-config group serves every horizon in it: loss terms, health metrics
    and all gradients equal the program compiled for that horizon (loss rtol 1e-5; gradients
    atol 1e-5 of each tensor's largest entry: float32 sums in another order), under vmap."""
    batch = syllable(n_segments=2, length=2048)._replace(cold_start=jnp.array([cold_start, cold_start]))
    states = jax.vmap(lambda k: init_train_state(TINY, make_optimizer(RUN.lr, RUN.grad_clip), k))(
        jax.random.split(jax.random.key(3)))
    keys = jax.random.split(jax.random.key(4))
    for program_horizon, horizons in HORIZON_GROUPS.items():
        for horizon in horizons:
            (total, aux), grads = vmapped_objective(horizon, False)(states.params, keys, batch, None)
            (d_total, d_aux), d_grads = vmapped_objective(program_horizon, True)(states.params, keys, batch,
                                                                                  jnp.int32(horizon))
            np.testing.assert_allclose(d_total, total, rtol=1e-5, err_msg=str(horizon))
            for name in ("spec", "env", "env_log"):
                np.testing.assert_allclose(d_aux.components[name], aux.components[name], rtol=1e-5,
                                           err_msg=f"{name} at {horizon}")
            for name in ("rms_ratio", "pinned_frac"):
                np.testing.assert_allclose(getattr(d_aux, name), getattr(aux, name), rtol=1e-5,
                                           err_msg=f"{name} at {horizon}")
            for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(d_grads), jax.tree_util.tree_leaves(grads)):
                scale = float(np.abs(np.asarray(want)).max())
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale + 1e-12,
                                           err_msg=f"{jax.tree_util.keystr(path)} at {horizon}")
