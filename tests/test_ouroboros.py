"""The polynomial Ouroboros: drives, structural zeros, low-pass, keep_const, osc_init (docs/method.md, "The model")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ouroboros_jax.errors import InputError
from ouroboros_jax.model.lowpass import gaussian_lowpass
from ouroboros_jax.model.ouroboros import ModelConfig, Ouroboros
from ouroboros_jax.model.polynomial import kernel_value, power_vector, structural_mask
from ouroboros_jax.model.reference_params import load_reference_params
from ouroboros_jax.objective.derivatives import first_derivative
from tests.helpers import compute_drives, golden_model

SMALL = ModelConfig(n_kernels=3, n_layers=2, d_state=2, d_conv=4, expand_factor=2)


def n_params(model):
    return sum(a.size for a in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


def audio(batch=2, length=300, seed=0):
    x = np.random.default_rng(seed).standard_normal((batch, length)) * 0.1
    return jnp.asarray(x, jnp.float32), jnp.asarray(first_derivative(x), jnp.float32)


def test_parameter_count_at_cli_defaults_is_the_references():
    assert n_params(Ouroboros(ModelConfig(), rngs=nnx.Rngs(0))) == 5652


def test_parameter_count_small_matches_golden(golden):
    total = sum(v.size for k, v in golden.items() if k.startswith("small/param/"))
    assert n_params(Ouroboros(SMALL, rngs=nnx.Rngs(0))) == total


@pytest.mark.parametrize("name,rtol", [("small", 1e-5), ("default", 1e-5)])
def test_golden_drives(golden, golden_json, name, rtol):
    model = golden_model(golden, golden_json, name)
    drives = compute_drives(model, jnp.asarray(golden[f"{name}/input/x"]), jnp.asarray(golden[f"{name}/input/dxdt"]))
    for field in ("omega", "gamma", "W", "K"):
        ref = golden[f"{name}/drives/{field}"]
        np.testing.assert_allclose(getattr(drives, field), ref, rtol=rtol, atol=2e-6 * np.abs(ref).max(),
                                   err_msg=field)


def test_osc_init_matches_golden_heads(golden, golden_json):
    model = golden_model(golden, golden_json, "osc_init_small")
    fresh = Ouroboros(ModelConfig(**{**SMALL.__dict__, "osc_init": True}), rngs=nnx.Rngs(5))
    np.testing.assert_array_equal(fresh.gamma_head.kernel[...], model.gamma_head.kernel[...])
    np.testing.assert_array_equal(fresh.gamma_head.bias[...], model.gamma_head.bias[...])
    for out in (0, 2 * 4 + 1, 3 * 4 + 0):
        np.testing.assert_array_equal(fresh.kernel_head.kernel[:, out], model.kernel_head.kernel[:, out])
        np.testing.assert_allclose(fresh.kernel_head.bias[out], model.kernel_head.bias[out], rtol=1e-7)


def test_osc_init_drives_are_the_constants():
    model = Ouroboros(ModelConfig(osc_init=True), rngs=nnx.Rngs(3))
    drives = compute_drives(model, *audio())
    np.testing.assert_allclose(drives.gamma, -0.01, rtol=1e-5)
    np.testing.assert_allclose(drives.W[..., 2, 1], 0.02, rtol=1e-5)
    np.testing.assert_allclose(drives.W[..., 3, 0], 0.01, rtol=1e-5)
    np.testing.assert_allclose(drives.W[..., 0, 0], 1e-3, rtol=1e-4)


@pytest.mark.parametrize("keep_const", [True, False])
def test_structural_zeros(keep_const):
    model = Ouroboros(ModelConfig(n_kernels=4, keep_const=keep_const), rngs=nnx.Rngs(1))
    # Make the (0,0) head row non-zero so keep_const is seen to keep it.
    model.kernel_head.bias[...] = model.kernel_head.bias[...].at[0].set(0.3)
    drives = compute_drives(model, *audio())
    np.testing.assert_array_equal(drives.W[..., 1, 0], 0.0)
    np.testing.assert_array_equal(drives.W[..., 0, 1], 0.0)
    if keep_const:
        assert np.abs(np.asarray(drives.W[..., 0, 0])).min() > 0.1
    else:
        np.testing.assert_array_equal(drives.W[..., 0, 0], 0.0)
    assert np.abs(np.asarray(drives.W[..., 2, 2])).max() > 0  # other coefficients are free


def test_keep_const_starts_the_constant_at_zero():
    model = Ouroboros(ModelConfig(keep_const=True), rngs=nnx.Rngs(2))
    np.testing.assert_array_equal(model.kernel_head.kernel[:, 0], 0.0)
    assert model.kernel_head.bias[0] == 0.0
    np.testing.assert_array_equal(compute_drives(model, *audio()).W[..., 0, 0], 0.0)


def test_lowpass_equals_filtering_every_drive_channel():
    """Filtering the kernel encoder's 2 channels before the head equals filtering all P*P after."""
    x, dxdt = audio(length=400)
    smooth = Ouroboros(ModelConfig(n_kernels=4, drive_lowpass_ms=1.0), rngs=nnx.Rngs(4))
    raw = Ouroboros(ModelConfig(n_kernels=4, drive_lowpass_ms=0.0), rngs=nnx.Rngs(4))
    d_smooth, d_raw = compute_drives(smooth, x, dxdt), compute_drives(raw, x, dxdt)
    sigma = 44.1
    np.testing.assert_allclose(d_smooth.omega, gaussian_lowpass(d_raw.omega, sigma), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_smooth.gamma, gaussian_lowpass(d_raw.gamma, sigma), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_smooth.W, gaussian_lowpass(d_raw.W, sigma, axis=1), rtol=1e-5, atol=1e-6)
    # ...and K is recomputed from the filtered weights on the unfiltered data state.
    np.testing.assert_allclose(d_smooth.K, kernel_value(d_smooth.W, x, dxdt), rtol=1e-5, atol=1e-7)
    assert np.abs(np.diff(np.asarray(d_smooth.omega), axis=1)).max() < np.abs(np.diff(np.asarray(d_raw.omega), axis=1)).max()


def test_kernel_value_matches_naive_sum():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 5, 5))
    x, v = rng.standard_normal(3), rng.standard_normal(3)
    naive = [sum(W[b, i, j] * x[b] ** i * v[b] ** j for i in range(5) for j in range(5)) for b in range(3)]
    np.testing.assert_allclose(kernel_value(jnp.asarray(W, jnp.float32), jnp.asarray(x, jnp.float32),
                                            jnp.asarray(v, jnp.float32)), naive, rtol=1e-5)


def test_power_vector_has_finite_gradient_at_zero():
    grad = jax.grad(lambda u: power_vector(u, 16).sum())(0.0)
    assert grad == 1.0  # d/du (1 + u + u^2 + ...) at 0


def test_structural_mask_table():
    np.testing.assert_array_equal(structural_mask(3, True), [[1, 0, 1], [0, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(structural_mask(3, False), [[0, 0, 1], [0, 1, 1], [1, 1, 1]])


def test_drives_see_the_whole_segment():
    """One encoder pass is causal, but [reverse(z); z] makes every drive depend on the future."""
    model = Ouroboros(SMALL, rngs=nnx.Rngs(0))
    x, dxdt = audio(batch=1, length=200)
    x2 = x.at[:, -20:].add(0.5)
    d1, d2 = compute_drives(model, x, dxdt), model(x2, first_derivative(np.asarray(x2)).astype(np.float32))
    assert np.abs(np.asarray(d1.omega[:, :20] - d2.omega[:, :20])).max() > 1e-6


def test_time_scale_converts_velocity():
    """With tau = 2 dt the model reads the velocity in rescaled time, v = (tau / dt) dx/dt,
    in the encoders' input and in the kernel alike: its drives on (x, dx/dt) are those of the same
    weights at tau = dt on (x, 2 dx/dt), and K is the polynomial of (x, 2 dx/dt) by a naive loop."""
    settings = dict(n_kernels=2, n_layers=1, expand_factor=1, drive_lowpass_ms=0.0)
    slow = Ouroboros(ModelConfig(**settings, tau=2.0 / 44100), rngs=nnx.Rngs(0))
    plain = Ouroboros(ModelConfig(**settings), rngs=nnx.Rngs(0))  # the same weights
    assert slow.config.time_scale == pytest.approx(2.0)
    x, dxdt = audio(length=50)
    drives = compute_drives(slow, x, dxdt)
    doubled = compute_drives(plain, x, 2.0 * dxdt)
    for field in ("omega", "gamma", "W", "K"):
        np.testing.assert_allclose(getattr(drives, field), getattr(doubled, field), rtol=1e-5, atol=1e-7,
                                   err_msg=field)
    assert np.abs(np.asarray(compute_drives(plain, x, dxdt).omega - drives.omega)).max() > 1e-4  # not a no-op
    W, xs, v = (np.asarray(a, np.float64) for a in (drives.W, x, 2.0 * dxdt))
    naive = sum(W[..., i, j] * xs**i * v**j for i in range(3) for j in range(3))
    np.testing.assert_allclose(drives.K, naive, rtol=1e-5, atol=1e-6)


def test_reference_params_errors_name_the_problem(golden):
    model = Ouroboros(SMALL, rngs=nnx.Rngs(0))
    arrays = {k[len("small/param/"):]: v for k, v in golden.items() if k.startswith("small/param/")}
    with pytest.raises(InputError, match="missing parameter 'omega_net.bias'"):
        load_reference_params(model, {k: v for k, v in arrays.items() if k != "omega_net.bias"}, "ckpt.tar")
    with pytest.raises(InputError, match="ckpt.tar: parameter 'omega_mamba.layers.0.mixer.in_proj.weight' has shape"):
        load_reference_params(Ouroboros(ModelConfig(n_kernels=3, n_layers=2, d_state=2, expand_factor=3),
                                        rngs=nnx.Rngs(0)), arrays, "ckpt.tar")
