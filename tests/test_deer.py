"""The DEER rollout (issue 8): Newton on the whole trajectory equals the sequential scan."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ouroboros_jax.model.ouroboros import Drives
from ouroboros_jax.ode.deer import deer_rollout, held_guess
from ouroboros_jax.ode.dynamics import (
    RolloutConfig,
    initial_state,
    rollout,
    state_trajectory,
)
from tests.helpers import golden_drives

run_deer = jax.jit(deer_rollout, static_argnames=("horizon", "config"))
TWO_ITERATIONS = RolloutConfig(deer_max_iter=2)
run_rollout = jax.jit(rollout, static_argnums=(3, 4))


def smooth_drives(seed, batch=3, length=2048, size=4):
    """Drives that wander slowly (a few cycles of random sinusoids) around a stable oscillator."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)[None, :] / length

    def wander(scale, *shape):
        phases, freqs = rng.uniform(0, 2 * np.pi, (2, *shape, 1)), rng.uniform(0.5, 4.0, (3, *shape, 1))
        return scale * sum(np.sin(2 * np.pi * f * t + phases[0] * (i + 1)) for i, f in enumerate(freqs)) / 3

    omega = 0.3 + wander(0.1, batch)
    gamma = 0.005 + wander(0.01, batch)
    W = np.moveaxis(wander(0.1, batch, size, size), -1, 1)  # (B, L, P, P)
    W[..., 1, 0] = W[..., 0, 1] = 0.0
    return Drives(*(jnp.asarray(a, jnp.float32) for a in (omega, gamma, W)), jnp.zeros((batch, length)))


def osc_init_drives(length):
    W = jnp.zeros((1, length, 4, 4)).at[:, :, 2, 1].set(0.02).at[:, :, 3, 0].set(0.01)
    full = jnp.ones((1, length))
    return Drives(2 * np.pi * 2000 / 44100 * full, -0.01 * full, W, 0.0 * full)


def test_golden_drives_with_the_data_as_guess(golden):
    """The golden small model is a hard case: gamma ~ -0.35 drives the state into the bound within
    a few dozen samples. Examples 0-2 converge in 5-6 iterations. Example 3 needs ~40 and is
    ill-conditioned: float32 round-off grows to ~1e-2 by sample 50 (see
    test_dynamics.test_golden_rollouts_in_float32), so there DEER and the scan are each compared
    with the float64 trajectory (the XLA scan's: the numba kernel's float32 rounding differs, here
    by chance 4e-4 from float64)."""
    horizon, config = 300, RolloutConfig(clamp_stages=False, kernel="xla")
    drives = golden_drives(golden, "small")
    x, v = jnp.asarray(golden["small/input/x"]), jnp.asarray(golden["small/input/dxdt"])
    guess = jnp.stack([x[:, :horizon], v[:, :horizon]], axis=-1)
    got, stats = run_deer(drives, x[:, 0], v[:, 0], horizon, dataclasses.replace(config, deer_max_iter=64), guess=guess)
    assert not stats.fell_back.any()
    assert (stats.iterations[:3] <= 8).all() and stats.iterations[3] > 20, stats.iterations
    expected = np.asarray(run_rollout(drives, x[:, 0], v[:, 0], horizon, config))
    np.testing.assert_allclose(got[:3], expected[:3], atol=1e-5)
    with jax.enable_x64(True):
        drives64 = Drives(*(jnp.asarray(golden[f"small/drives/{k}"], jnp.float64) for k in Drives._fields))
        x0, v0 = (jnp.asarray(golden[f"small/input/{k}"][:, 0], jnp.float64) for k in ("x", "dxdt"))
        exact = np.asarray(rollout(drives64, x0, v0, horizon, config))
    deer_error, scan_error = np.abs(np.asarray(got[3]) - exact[3]).max(), np.abs(expected[3] - exact[3]).max()
    assert 1e-3 < scan_error and deer_error < 2 * scan_error, (deer_error, scan_error)


def test_osc_init_drives_from_a_cold_start():
    """The rotation-like, slowly growing oscillator from 1e-3: 12 iterations at H = 2048."""
    horizon = 2048
    drives = osc_init_drives(horizon)
    x0, v0 = initial_state(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.array([True]), jax.random.key(0), 1e-3)
    got, stats = run_deer(drives, x0, v0, horizon)
    expected = run_rollout(drives, x0, v0, horizon, RolloutConfig())
    assert not stats.fell_back.any()
    assert stats.iterations[0] <= 15, stats.iterations
    assert np.abs(expected).max() > 5 * np.abs(expected[:, :50]).max()  # it did grow
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_random_smooth_drives():
    horizon = 2048
    drives = smooth_drives(seed=0)
    x0, v0 = jnp.array([0.2, -0.1, 0.0]), jnp.array([0.0, 0.1, 0.3])
    got, stats = run_deer(drives, x0, v0, horizon)
    assert not stats.fell_back.any()
    assert (stats.iterations <= 8).all(), stats.iterations
    np.testing.assert_allclose(got, run_rollout(drives, x0, v0, horizon, RolloutConfig()), atol=1e-5)


def scalar_loss(trajectory):
    """Weights every sample differently, so no cotangent is uniform along the trajectory."""
    return jnp.sum(jnp.sin(3.0 * trajectory) * jnp.linspace(0.5, 1.5, trajectory.shape[1])[None])


def gradients(rollout_fn, drives, x0, v0, horizon):
    def loss(omega, gamma, W, x0, v0):
        return scalar_loss(rollout_fn(Drives(omega, gamma, W, drives.K), x0, v0, horizon))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(drives.omega, drives.gamma, drives.W, x0, v0)


def assert_gradients_equal(got, expected):
    for name, g, e in zip(("omega", "gamma", "W", "x0", "v0"), got, expected):
        e = np.asarray(e)
        assert np.abs(e).max() > 0, name
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=name)


def test_adjoint_gradients_equal_those_through_the_scan():
    """Drives longer than the horizon: the unused tail gets zero gradient, as through the scan."""
    horizon = 300
    drives = smooth_drives(seed=1, batch=2, length=320)
    x0, v0 = jnp.array([0.2, -0.1]), jnp.array([0.05, 0.1])

    def deer(*args):
        return deer_rollout(*args)[0]

    got = gradients(deer, drives, x0, v0, horizon)
    assert_gradients_equal(got, gradients(rollout, drives, x0, v0, horizon))
    np.testing.assert_array_equal(got[2][:, horizon - 1:], 0.0)


def test_an_unconverged_example_falls_back_to_the_scan_with_its_gradient():
    """Example 0 rests at 0 (no constant forcing) and its guess is exact: converged at the first
    iteration. Example 1 starts from a far guess that 2 iterations cannot correct."""
    horizon = 200
    drives = smooth_drives(seed=2, batch=2, length=horizon)
    drives = drives._replace(W=drives.W.at[0, :, 0, 0].set(0.0))
    x0, v0 = jnp.array([0.0, 0.2]), jnp.array([0.0, 0.1])
    guess = jnp.zeros((2, horizon, 2)).at[1].set(jnp.array([0.4, -0.8])[None])
    got, stats = run_deer(drives, x0, v0, horizon, TWO_ITERATIONS, guess=guess)
    np.testing.assert_array_equal(stats.fell_back, [False, True])
    np.testing.assert_array_equal(stats.iterations, [1, 2])
    np.testing.assert_allclose(got, run_rollout(drives, x0, v0, horizon, RolloutConfig()), atol=1e-6)

    def deer(*args):
        return deer_rollout(*args, TWO_ITERATIONS, guess=guess)[0]

    assert_gradients_equal(gradients(deer, drives, x0, v0, horizon), gradients(rollout, drives, x0, v0, horizon))


def test_vmap_over_drive_sets():
    horizon = 512
    sets = [smooth_drives(seed, batch=2, length=horizon) for seed in (3, 4)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *sets)
    x0, v0 = jnp.array([[0.2, -0.1], [0.0, 0.3]]), jnp.array([[0.05, 0.1], [0.2, 0.0]])
    got, stats = jax.jit(jax.vmap(lambda d, x, v: deer_rollout(d, x, v, horizon)))(stacked, x0, v0)
    assert stats.iterations.shape == stats.fell_back.shape == (2, 2)
    assert not stats.fell_back.any()
    for i, drives in enumerate(sets):
        np.testing.assert_allclose(got[i], run_rollout(drives, x0[i], v0[i], horizon, RolloutConfig()), atol=1e-5)


def scans_outside_loops(jaxpr, in_loop=False) -> tuple[int, int]:
    """(scans that no `while` encloses, all scans) in a jaxpr and the jaxprs nested in it."""
    outside = total = 0
    for eqn in jaxpr.eqns:
        is_scan = eqn.primitive.name == "scan"
        outside, total = outside + (is_scan and not in_loop), total + is_scan
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    counts = scans_outside_loops(sub, in_loop or eqn.primitive.name == "while")
                    outside, total = outside + counts[0], total + counts[1]
    return outside, total


def test_under_vmap_only_the_sets_that_need_it_fall_back_and_a_loop_can_skip_the_scan():
    """Set 0's guess is its exact trajectory, set 1's the held IC that 2 iterations cannot correct.
    The fallback scan sits in a loop (not a `cond`, which `vmap` turns into running both branches),
    so training over vmapped seeds pays for it only when some seed needs it."""
    horizon, config = 200, RolloutConfig(kernel="xla")  # its fallback a lax.scan, which the jaxpr shows
    sets = [smooth_drives(seed, batch=2, length=horizon) for seed in (5, 6)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *sets)
    x0, v0 = jnp.array([[0.2, -0.1], [0.0, 0.3]]), jnp.array([[0.05, 0.1], [0.2, 0.0]])
    exact = [state_trajectory(jnp.square(d.omega), d.gamma, d.W, x0[i], v0[i], horizon - 1, config)
             for i, d in enumerate(sets)]
    guess = jnp.stack([exact[0], held_guess(x0[1], v0[1], horizon)])

    def solve(d, x, v, g):
        return deer_rollout(d, x, v, horizon, dataclasses.replace(config, deer_max_iter=2), guess=g)

    got, stats = jax.jit(jax.vmap(solve))(stacked, x0, v0, guess)
    np.testing.assert_array_equal(stats.fell_back, [[False, False], [True, True]])
    for i in range(2):
        np.testing.assert_allclose(got[i], exact[i][..., 0], atol=1e-6)
    outside, total = scans_outside_loops(jax.make_jaxpr(jax.vmap(solve))(stacked, x0, v0, guess).jaxpr)
    assert total >= 1 and outside == 0, (outside, total)


def test_horizon_must_have_a_step():
    drives = smooth_drives(seed=0, batch=1, length=10)
    with pytest.raises(ValueError, match="horizon"):
        deer_rollout(drives, jnp.zeros(1), jnp.zeros(1), 1)
