"""The ODE, RK4 step, soft-tanh bounds and the rollout (docs/method.md, "The ODE and the rollout")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from ouroboros_jax.model.ouroboros import Drives, ModelConfig, Ouroboros
from ouroboros_jax.ode.dynamics import RolloutConfig, initial_state, rollout, teacher_acceleration
from tests.helpers import golden_drives

UNBOUNDED = RolloutConfig(bound_x=None, bound_v=None)
run_rollout = jax.jit(rollout, static_argnums=(3, 4))


def constant_drives(batch, length, omega, gamma, W=None, size=4, dtype=jnp.float32):
    W = jnp.zeros((batch, length, size, size), dtype) if W is None else W
    full = jnp.full((batch, length), 1.0, dtype)
    return Drives(omega * full, gamma * full, W, 0.0 * full)


def random_drives(seed, batch=3, length=80, size=4):
    rng = np.random.default_rng(seed)
    omega = 0.3 + 0.1 * rng.standard_normal((batch, length))
    gamma = 0.05 * rng.standard_normal((batch, length))
    W = 0.3 * rng.standard_normal((batch, length, size, size))
    W[..., 1, 0] = W[..., 0, 1] = 0.0
    return omega, gamma, W


def numpy_rk4_rollout(omega, gamma, W, x0, v0, horizon, h, bound_x, bound_v, clamp):
    """An independent float64 loop: classic RK4, drive k held over step k, soft-tanh after each."""
    size = W.shape[-1]

    def sat(u, b):
        return u if b is None else b * np.tanh(u / b)

    def accel(x, v, k):
        kx, kv = (sat(x, bound_x), sat(v, bound_v)) if clamp else (x, v)
        K = sum(W[:, k, i, j] * kx**i * kv**j for i in range(size) for j in range(size))
        return -omega[:, k] ** 2 * x - gamma[:, k] * v - K

    x, v, out = x0.astype(np.float64), v0.astype(np.float64), [x0]
    for k in range(horizon - 1):
        k1 = (v, accel(x, v, k))
        k2 = (v + h / 2 * k1[1], accel(x + h / 2 * k1[0], v + h / 2 * k1[1], k))
        k3 = (v + h / 2 * k2[1], accel(x + h / 2 * k2[0], v + h / 2 * k2[1], k))
        k4 = (v + h * k3[1], accel(x + h * k3[0], v + h * k3[1], k))
        x = sat(x + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0]), bound_x)
        v = sat(v + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1]), bound_v)
        out.append(x)
    return np.stack(out, axis=1)


def damped_oscillator(s, x0, v0, omega, gamma):
    """Closed form of x'' = -omega^2 x - gamma x' (underdamped)."""
    wd = np.sqrt(omega**2 - gamma**2 / 4)
    return np.exp(-gamma * s / 2) * (x0 * np.cos(wd * s) + (v0 + gamma * x0 / 2) / wd * np.sin(wd * s))


def test_linear_oscillator_matches_closed_form_with_fourth_order_convergence():
    omega, gamma, x0, v0, span = 0.3, 0.02, 0.4, -0.1, 200.0
    huge = RolloutConfig(bound_x=1e6, bound_v=1e6)
    errors = []
    with jax.enable_x64(True):
        for h in (1.0, 0.5):
            n = int(span / h) + 1
            drives = constant_drives(1, n, omega, gamma, dtype=jnp.float64)
            config = RolloutConfig(step_size=h, bound_x=huge.bound_x, bound_v=huge.bound_v)
            x = np.asarray(rollout(drives, jnp.array([x0]), jnp.array([v0]), n, config))[0]
            s = np.arange(n) * h
            errors.append(np.abs(x - damped_oscillator(s, x0, v0, omega, gamma))[:: int(1 / h)])
    assert errors[0].max() < 1e-3 * abs(x0)  # (h omega)^4 / 120 per unit time, over 200 units
    ratio = errors[0].max() / errors[1].max()
    assert 14.0 < ratio < 18.0, ratio


@pytest.mark.parametrize("clamp", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_scan_equals_python_loop(clamp, masked):
    omega, gamma, W = random_drives(seed=int(clamp) + 2 * int(masked))
    rng = np.random.default_rng(7)
    x_data, v_data = 0.3 * rng.standard_normal((3, 80)), 0.3 * rng.standard_normal((3, 80))
    ic_mask = jnp.array([True, False, True]) if masked else None
    key = jax.random.key(3)
    x0, v0 = initial_state(jnp.asarray(x_data, jnp.float32), jnp.asarray(v_data, jnp.float32), ic_mask, key, 0.05)
    config = RolloutConfig(clamp_stages=clamp)
    drives = Drives(*(jnp.asarray(a, jnp.float32) for a in (omega, gamma, W)), jnp.zeros((3, 80)))
    got = run_rollout(drives, x0, v0, 60, config)
    expected = numpy_rk4_rollout(omega, gamma, W, np.asarray(x0), np.asarray(v0), 60, 1.0, 0.5, 1.0, clamp)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-6)
    if masked:
        noise = 0.05 * np.asarray(jax.random.normal(key, (2, 3)))
        np.testing.assert_allclose(got[:, 0], np.where([True, False, True], noise[0], x_data[:, 0]), rtol=1e-6)


def test_unroll_does_not_change_the_result():
    drives = Drives(*(jnp.asarray(a, jnp.float32) for a in random_drives(seed=4)), jnp.zeros((3, 80)))
    x0 = v0 = jnp.full((3,), 0.1)
    a = run_rollout(drives, x0, v0, 77, RolloutConfig(unroll=1))
    b = run_rollout(drives, x0, v0, 77, RolloutConfig(unroll=8))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_soft_tanh_bounds_are_never_exceeded():
    rng = np.random.default_rng(0)
    drives = Drives(jnp.asarray(3.0 * rng.random((4, 300)), jnp.float32),
                    jnp.asarray(-2.0 * rng.random((4, 300)), jnp.float32),  # strong anti-damping
                    jnp.asarray(5.0 * rng.standard_normal((4, 300, 4, 4)), jnp.float32), jnp.zeros((4, 300)))
    config = RolloutConfig(bound_x=0.5, bound_v=1.0)
    x = np.asarray(run_rollout(drives, jnp.full((4,), 0.4), jnp.full((4,), 0.9), 300, config))
    assert np.isfinite(x).all()
    assert np.abs(x).max() <= 0.5
    assert np.abs(x).max() > 0.45  # the drives do push the state to the bound


def test_clamped_stages_stay_finite_where_the_reference_form_overflows():
    """Drives known to overflow the reference's form: a large v^15 term (P = 16, the CLI default).
    From the bounded state (|v| <= 1) the first stage's acceleration is ~50, so the second stage's
    unbounded v is ~25 and the third evaluates 50 * 25^15 ~ 1e22 and then (1e22)^15: beyond float32
    and float64 alike. Bounding the kernel's input keeps every stage's kernel below 50."""
    batch, length, size = 2, 64, 16
    W = np.zeros((batch, length, size, size), np.float32)
    W[..., 0, 15] = 50.0
    omega, gamma = np.full((batch, length), 0.2, np.float32), np.zeros((batch, length), np.float32)
    x0, v0 = np.array([0.1, -0.2], np.float32), np.array([0.9, -1.0], np.float32)
    drives = Drives(jnp.asarray(omega), jnp.asarray(gamma), jnp.asarray(W), jnp.zeros((batch, length)))
    clamped, reference = (np.asarray(run_rollout(drives, jnp.asarray(x0), jnp.asarray(v0), length,
                                                 RolloutConfig(clamp_stages=clamp))) for clamp in (True, False))
    # The clamped form is the float64 loop's clamped RK4 (measured within 6e-7), and it stays bounded.
    expected = numpy_rk4_rollout(omega, gamma, W.astype(np.float64), x0, v0, length, 1.0, 0.5, 1.0, clamp=True)
    np.testing.assert_allclose(clamped, expected, atol=1e-5)
    assert np.abs(clamped).max() <= 0.5
    # The reference's form overflows within the first step, for both examples.
    assert not np.isfinite(reference[:, 1]).any()


def test_gradients_are_finite_at_exact_silence():
    config = ModelConfig(n_kernels=15, n_layers=1, d_state=2, expand_factor=2)
    model = Ouroboros(config, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    silence = jnp.zeros((2, 200))

    def loss(params):
        drives = nnx.merge(graphdef, params)(silence, silence)
        x0, v0 = initial_state(silence, silence)  # a zero-velocity, zero-amplitude IC
        # Linear in the state, so the gradient at silence is not trivially zero.
        return jnp.sum(rollout(drives, x0, v0, 150)) + jnp.sum(teacher_acceleration(drives, silence, silence))

    grads = jax.jit(jax.grad(loss))(params)
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert any(np.abs(np.asarray(g)).max() > 0 for g in leaves)  # the constant forcing W[0,0] moves silence


@pytest.mark.parametrize("gradient", ["adjoint", "autodiff"])
def test_gradients_agree_with_finite_differences(gradient):
    omega, gamma, W = random_drives(seed=9, batch=2, length=30)
    config = RolloutConfig(gradient=gradient)
    with jax.enable_x64(True):
        x0, v0 = jnp.array([0.2, 0.0]), jnp.array([0.0, 0.3])

        def f(omega, gamma, W):
            drives = Drives(omega, gamma, W, jnp.zeros_like(omega))
            return jnp.sum(jnp.sin(rollout(drives, x0, v0, 25, config)))

        check_grads(f, (jnp.asarray(omega), jnp.asarray(gamma), jnp.asarray(W)), order=1,
                                  modes=["rev"], eps=1e-5, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("clamp", [True, False])
def test_adjoint_gradient_equals_autodiff_in_float32(clamp):
    """Both differentiate the same float32 scan; they differ in rounding only (relative 1e-5)."""
    omega, gamma, W = (jnp.asarray(a, jnp.float32) for a in random_drives(seed=4, batch=3, length=200))
    x0, v0 = jnp.array([0.2, 0.0, -0.1]), jnp.array([0.0, 0.3, 0.1])
    weights = jax.random.normal(jax.random.key(0), (3, 180))

    def grads(gradient):
        config = RolloutConfig(clamp_stages=clamp, gradient=gradient)

        def f(omega, gamma, W, x0, v0):
            return jnp.vdot(rollout(Drives(omega, gamma, W, jnp.zeros_like(omega)), x0, v0, 180, config), weights)

        return jax.jit(jax.grad(f, argnums=tuple(range(5))))(omega, gamma, W, x0, v0)

    for got, want in zip(grads("adjoint"), grads("autodiff")):
        assert np.abs(np.asarray(want)).max() > 0
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_osc_init_drives_ignite_a_limit_cycle_of_the_energy_balance_amplitude():
    """gamma = -0.01, W21 = 0.02, W30 = 0.01: 0.01 A^2 / 2 = 0.02 A^4 / 8 gives A = sqrt(2)."""
    n = 12000
    W = jnp.zeros((1, n, 4, 4)).at[:, :, 2, 1].set(0.02).at[:, :, 3, 0].set(0.01)
    drives = constant_drives(1, n, 2 * np.pi * 2000 / 44100, -0.01, W)
    x0, v0 = initial_state(jnp.zeros((1, n)), jnp.zeros((1, n)), jnp.array([True]), jax.random.key(0), 1e-3)
    x = np.asarray(run_rollout(drives, x0, v0, n, UNBOUNDED))[0]
    assert np.abs(x[:50]).max() < 1e-2  # starts from near-silence...
    amplitude = np.abs(x[-2000:]).max()
    np.testing.assert_allclose(amplitude, np.sqrt(2), rtol=0.01)  # ...and settles on the cycle
    np.testing.assert_allclose(np.abs(x[-4000:-2000]).max(), amplitude, rtol=1e-3)  # steady


def test_initial_state_is_the_data_or_the_masked_noise_without_gradient():
    x = jnp.arange(12.0).reshape(3, 4)
    v = -x
    x0, v0 = initial_state(x, v)
    np.testing.assert_array_equal(x0, x[:, 0])
    np.testing.assert_array_equal(v0, v[:, 0])
    key = jax.random.key(5)
    mask = jnp.array([False, True, False])
    x0, v0 = initial_state(x, v, mask, key, 1e-3)
    noise = 1e-3 * jax.random.normal(key, (2, 3))
    np.testing.assert_array_equal(x0, [0.0, noise[0, 1], 8.0])
    np.testing.assert_array_equal(v0, [-0.0, noise[1, 1], -8.0])
    grad = jax.grad(lambda x: jnp.sum(initial_state(x, v)[0]))(x)
    np.testing.assert_array_equal(grad, 0.0)


def test_teacher_acceleration_formula(golden):
    drives = golden_drives(golden, "small")
    x, v = golden["small/input/x"], golden["small/input/dxdt"]
    expected = -golden["small/drives/omega"] ** 2 * x - golden["small/drives/gamma"] * v - golden["small/drives/K"]
    np.testing.assert_allclose(teacher_acceleration(drives, jnp.asarray(x), jnp.asarray(v)), expected, rtol=1e-5,
                               atol=1e-8)


REFERENCE_FORM = RolloutConfig(clamp_stages=False)


def golden_ic(golden, noise):
    x, v = golden["small/input/x"][:, 0], golden["small/input/dxdt"][:, 0]
    if noise:
        mask = golden["small/rollout_noise_ic/mask"]
        x = np.where(mask, golden["small/rollout_noise_ic/noise_x"], x)
        v = np.where(mask, golden["small/rollout_noise_ic/noise_v"], v)
    return x, v


@pytest.mark.parametrize("case", ["rollout_data_ic", "rollout_noise_ic"])
def test_golden_rollouts_in_float64_match_tightly(golden, case):
    """The same algorithm: our rollout in float64 equals the reference's float32 to its own accuracy."""
    x0, v0 = golden_ic(golden, case == "rollout_noise_ic")
    with jax.enable_x64(True):
        drives = Drives(*(jnp.asarray(golden[f"small/drives/{k}"], jnp.float64) for k in Drives._fields))
        got = rollout(drives, jnp.asarray(x0, jnp.float64), jnp.asarray(v0, jnp.float64), 1100, REFERENCE_FORM)
    np.testing.assert_allclose(got, golden[f"small/{case}/xhat"], atol=2e-4)


@pytest.mark.parametrize("case", ["rollout_data_ic", "rollout_noise_ic"])
def test_golden_rollouts_in_float32(golden, case):
    """float32 round-off differs from the reference's (XLA's tanh is ~4 ulp off, torch's ~1); example 3
    drives the state hard into the bound, where the trajectory amplifies it to ~1e-2 (our float64
    run is within 1e-4 of the reference there). The other examples agree to round-off."""
    x0, v0 = golden_ic(golden, case == "rollout_noise_ic")
    got = np.asarray(run_rollout(golden_drives(golden, "small"), jnp.asarray(x0), jnp.asarray(v0), 1100, REFERENCE_FORM))
    ref = golden[f"small/{case}/xhat"]
    np.testing.assert_allclose(got[:3], ref[:3], atol=1e-5)
    np.testing.assert_allclose(got[3], ref[3], atol=2e-2)


def test_golden_default_model_rollout(golden):
    drives = golden_drives(golden, "default")
    x, v = jnp.asarray(golden["default/input/x"]), jnp.asarray(golden["default/input/dxdt"])
    got = run_rollout(drives, x[:, 0], v[:, 0], 300, REFERENCE_FORM)
    np.testing.assert_allclose(got, golden["default/rollout_data_ic/xhat"], atol=1e-5)
