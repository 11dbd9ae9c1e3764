"""The Numba rollout kernels against the XLA kernel of `dynamics.state_trajectory`."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from ouroboros_jax.ode import numba_rollout
from ouroboros_jax.ode.dynamics import RolloutConfig, resolve_rollout_kernel, state_trajectory
from ouroboros_jax.training.step import init_train_state, make_optimizer, model_graphdef, train_step
from tests.helpers import step_config
from tests.test_step import ALL_TERMS, TINY, syllable

# The settings the kernels branch on: bounds inside the stages or not, either bound absent, h != 1.
CONFIGS = {
    "default": RolloutConfig(),
    "reference form": RolloutConfig(clamp_stages=False),
    "no x bound": RolloutConfig(bound_x=None, step_size=0.7),
    "no v bound": RolloutConfig(bound_v=None),
    "unbounded": RolloutConfig(bound_x=None, bound_v=None, clamp_stages=False),
}


def drives(batch, length, size, seed=0, dtype=np.float32):
    """Random slowly varying drives under which the rollout stays bounded and non-chaotic over
    ~100 steps, bounds or not (so that rounding differences stay rounding-sized); W's structural
    zeros included, its high powers small."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, (batch, 1))
    omega2 = (0.3 + 0.05 * np.sin(2 * np.pi * np.arange(length) / 37 + phase)) ** 2
    gamma = 0.05 + 0.02 * np.cos(2 * np.pi * np.arange(length) / 23 + phase)
    powers = np.arange(1, size + 1)
    W = 0.02 * rng.standard_normal((batch, length, size, size)) / (powers[:, None] * powers[None, :]) ** 2
    W[..., 1, 0] = W[..., 0, 1] = 0.0
    x0, v0 = 0.2 * rng.standard_normal(batch), 0.2 * rng.standard_normal(batch)
    return tuple(jnp.asarray(a, dtype) for a in (omega2, gamma, W, x0, v0))


def trajectory_and_grads(operands, cotangent, active_steps, *, steps, config):
    """The trajectory and the gradients of <trajectory, cotangent> w.r.t. the five operands."""
    trajectory, pullback = jax.vjp(lambda *a: state_trajectory(*a, steps, config, active_steps), *operands)
    return trajectory, pullback(cotangent)


jitted = jax.jit(trajectory_and_grads, static_argnames=("steps", "config"))


def both_kernels(operands, steps, config, active_steps=None, seed=1, run=jitted):
    cotangent = jax.random.normal(jax.random.key(seed), operands[3].shape + (steps + 1, 2), operands[0].dtype)
    return [run(operands, cotangent, active_steps, steps=steps, config=dataclasses.replace(config, kernel=kernel))
            for kernel in ("numba", "xla")]


def assert_grads_close(got, want, rtol):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert np.abs(np.asarray(w)).max() > 0
        np.testing.assert_allclose(g, w, rtol=0, atol=rtol * float(jnp.max(jnp.abs(w))))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("size", [4, 16])  # P below and at two whole 8-lane vectors
def test_float32_trajectory_and_gradients_match_the_xla_kernel(name, size):
    """float32, 100 steps: the trajectory within 2e-6 (|x| ~ 0.3), every gradient within 1e-5 of
    its largest entry (measured ~1e-6: the sums are ordered differently, and fastmath)."""
    operands = drives(3, 110, size, seed=size)
    (traj, grads), (want_traj, want_grads) = both_kernels(operands, 100, CONFIGS[name])
    assert traj.shape == (3, 101, 2) and traj.dtype == jnp.float32
    np.testing.assert_array_equal(traj[:, 0], np.stack(operands[3:], axis=-1))
    np.testing.assert_allclose(traj, want_traj, rtol=0, atol=2e-6)
    assert_grads_close(grads, want_grads, 1e-5)
    assert not np.any(grads[2][:, 100:]) and not np.any(grads[0][:, 100:])  # drives past the last step


@pytest.mark.parametrize("name", CONFIGS)
def test_float64_trajectory_and_gradients_match_the_xla_kernel_tightly(name):
    with jax.enable_x64(True):
        operands = drives(2, 64, 6, seed=3, dtype=np.float64)
        (traj, grads), (want_traj, want_grads) = both_kernels(operands, 60, CONFIGS[name])
        assert traj.dtype == jnp.float64
        np.testing.assert_allclose(traj, want_traj, rtol=0, atol=1e-13)
        assert_grads_close(grads, want_grads, 1e-12)


@pytest.mark.parametrize("config", [RolloutConfig(step_size=0.8), RolloutConfig(clamp_stages=False, bound_v=None)])
def test_float64_gradients_by_finite_differences(config):
    """The hand-written adjoint against central differences of the kernels' own forward."""
    config = dataclasses.replace(config, kernel="numba")
    with jax.enable_x64(True):
        operands = drives(2, 24, 4, seed=5, dtype=np.float64)

        def f(*operands):
            return jnp.sum(jnp.sin(3.0 * state_trajectory(*operands, 20, config, jnp.int32(17))))

        test_util.check_grads(f, operands, order=1, modes=["rev"], eps=1e-6, atol=1e-7, rtol=1e-6)


def test_a_traced_active_count_holds_the_state_and_stops_the_gradient():
    """Steps from `active_steps` on keep the state; the drives there get no gradient, the state's
    cotangent passes them unchanged; all as the XLA kernel, with the count traced (one program)."""
    operands = drives(3, 50, 5, seed=7)
    run = jax.jit(functools.partial(trajectory_and_grads), static_argnames=("steps", "config"))  # its own cache
    for active in (0, 13, 40):
        (traj, grads), (want_traj, want_grads) = both_kernels(operands, 40, RolloutConfig(), jnp.int32(active), run=run)
        held = traj[:, active:]
        np.testing.assert_array_equal(held, np.broadcast_to(traj[:, active : active + 1], held.shape))
        np.testing.assert_allclose(traj, want_traj, rtol=0, atol=2e-6)
        for g in grads[:3]:
            assert not np.any(g[:, active:])
        if active == 0:  # nothing integrated: the initial state's gradient is the cotangent's sum
            cotangent = jax.random.normal(jax.random.key(1), (3, 41, 2))
            np.testing.assert_allclose(grads[3], cotangent[..., 0].sum(axis=1), rtol=1e-5)
        else:
            assert_grads_close(grads, want_grads, 1e-5)
    assert run._cache_size() == 2  # one program per kernel, not per count


def test_vmap_over_seeds_equals_one_call_per_seed():
    """Seeds vmapped (one launch over every seed's chains, the count shared) equal the seeds one by
    one, bit for bit: a chain's arithmetic does not depend on the chains beside it."""
    seeds = [drives(2, 40, 4, seed=s) for s in range(3)]
    stacked = tuple(jnp.stack(a) for a in zip(*seeds))
    cotangent = jax.random.normal(jax.random.key(0), (3, 2, 36, 2))
    config = RolloutConfig(kernel="numba")

    def one(operands, cotangent):
        return jitted(operands, cotangent, jnp.int32(30), steps=35, config=config)

    traj, grads = jax.jit(jax.vmap(one))(stacked, cotangent)
    for s, operands in enumerate(seeds):
        want_traj, want_grads = one(operands, cotangent[s])
        np.testing.assert_array_equal(traj[s], want_traj)
        for got, want in zip(grads, want_grads):
            np.testing.assert_array_equal(got[s], want)


def test_lanes_do_not_change_the_result():
    """A thread advances several chains at once; how many must not change a bit of any chain."""
    omega2, gamma, W, x0, v0 = (np.asarray(a) for a in drives(11, 30, 16, seed=2))
    active = np.array([25, 3, 25, 25, 0, 25, 25, 25, 25, 12, 25], np.int32)
    settings, runs = numba_rollout._settings(RolloutConfig(), np.float32), []
    for lanes in (1, 4, 8):
        outputs = tuple(np.empty(shape, np.float32) for shape in ((11, 26, 2), (11, 25, 4, 6), (11, 25, 2)))
        numba_rollout._forward(omega2, gamma, W, x0, v0, active, lanes, *settings, *outputs)
        runs.append(outputs)
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            np.testing.assert_array_equal(got, want)


def test_a_training_step_with_the_numba_rollout_equals_the_xla_one():
    """One `train_step` (drives, rollout, MRSTFT, anchor, Adam) with either rollout kernel agrees
    to float32 rounding as this step amplifies it: its rollouts reach the bound, where omega moved
    by 1e-7 relative moves the XLA kernel's spectral loss by 7e-5 relative (measured). Measured
    between the kernels: losses 2.4e-5 relative, gradient norm 5.7e-4, parameters 1.4e-4 (Adam's
    first step is lr sign(g): a near-zero gradient entry's update is all rounding). A wrong term
    of the adjoint moves the gradient norm by O(1)."""
    results = []
    for kernel in ("numba", "xla"):
        config = step_config(128, stft_configs=((64, 16), (128, 32)), rollout=RolloutConfig(kernel=kernel))
        optimizer = make_optimizer(1e-3, 5.0)
        step = jax.jit(functools.partial(train_step, horizon=None, ic_noise_rms=1e-3, graphdef=model_graphdef(TINY),
                                         optimizer=optimizer, config=config))
        results.append(step(init_train_state(TINY, optimizer, jax.random.key(0)), syllable(), ALL_TERMS, 1e-3))
    (state, metrics), (want_state, want_metrics) = results
    assert int(metrics.skipped) == 0 and int(want_metrics.skipped) == 0
    np.testing.assert_array_equal(metrics.tf, want_metrics.tf)  # the anchor does not see the rollout
    for name, rtol in (("total", 1e-4), ("spec", 1e-4), ("grad_norm", 3e-3)):
        np.testing.assert_allclose(getattr(metrics, name), getattr(want_metrics, name), rtol=rtol, err_msg=name)
    for got, want in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(want_state.params)):
        np.testing.assert_allclose(got, want, rtol=0, atol=3e-4)  # of updates ~1e-3


def test_the_kernel_setting():
    assert resolve_rollout_kernel(RolloutConfig(), "cpu") == "numba"
    # Beside the XLA encoder scan the XLA rollout keeps the programs cacheable (docs/performance.md).
    assert resolve_rollout_kernel(RolloutConfig(), "cpu", encoder_scan="fused") == "xla"
    assert resolve_rollout_kernel(RolloutConfig(), "gpu") == "xla"
    assert resolve_rollout_kernel(RolloutConfig(gradient="autodiff"), "cpu") == "xla"  # JAX's transpose of the scan
    assert resolve_rollout_kernel(RolloutConfig(kernel="xla"), "cpu") == "xla"
    with pytest.raises(ValueError, match="kernel must be one of"):
        RolloutConfig(kernel="cuda")
    with pytest.raises(ValueError, match="needs kernel 'xla'"):
        RolloutConfig(kernel="numba", gradient="autodiff")
