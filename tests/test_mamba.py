"""The selective-SSM encoder (docs/method.md, "The model")."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from ouroboros_jax.model.mamba import MambaEncoder
from ouroboros_jax.model.ouroboros import ModelConfig, Ouroboros
from tests.helpers import golden_model, run_encoder


def encoder(seed=0, n_layers=2):
    return MambaEncoder(2, n_layers, d_state=4, d_conv=4, expand_factor=3, rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("impl", ["sequential", "chunked", "fused"])
def test_scan_implementations_give_the_same_encoder(impl):
    enc = encoder()
    u = jax.random.normal(jax.random.key(1), (3, 200, 2))
    np.testing.assert_allclose(run_encoder(enc, u, "associative"), run_encoder(enc, u, impl), rtol=2e-5, atol=2e-6)


def test_one_pass_is_causal():
    enc = encoder()
    u = jax.random.normal(jax.random.key(2), (1, 120, 2))
    t = 70
    changed = u.at[:, t + 1 :].set(jax.random.normal(jax.random.key(3), (1, 120 - t - 1, 2)))
    out, out_changed = run_encoder(enc, u, "associative"), run_encoder(enc, changed, "associative")
    np.testing.assert_allclose(out[:, : t + 1], out_changed[:, : t + 1], rtol=1e-6, atol=1e-7)
    assert np.abs(np.asarray(out[:, t + 1 :] - out_changed[:, t + 1 :])).max() > 1e-3


def assert_uniform(values, low, high, what):
    """values (arrays) are draws of U(low, high): a Kolmogorov-Smirnov test, and they fill the interval."""
    values = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in values])
    assert values.min() >= low and values.max() <= high, what
    assert values.min() < low + 0.05 * (high - low) and values.max() > high - 0.05 * (high - low), what
    assert scipy.stats.kstest(values, "uniform", args=(low, high - low)).pvalue > 1e-3, what


def test_initialisation_follows_the_reference():
    """PyTorch's defaults as the reference uses them (docs/method.md, "The model"), on the CLI-default model:
    every linear and conv weight U(+-fan_in^-1/2), dt log-uniform in [1e-3, 1e-1], A_log, D and the
    RMSNorm gains fixed, the heads U(+-2^-1/2) with keep_const's constant coefficient at exactly 0."""
    model = Ouroboros(ModelConfig(), rngs=nnx.Rngs(0))  # 3 layers, d_state 4, expand 10: d_inner 20
    mixers = [layer.mixer for enc in (model.omega_encoder, model.gamma_encoder, model.kernel_encoder)
              for layer in enc.layers]
    norms = [layer.norm for enc in (model.omega_encoder, model.gamma_encoder, model.kernel_encoder)
             for layer in enc.layers]
    for name, fan_in in (("in_proj", 2), ("x_proj", 20), ("out_proj", 20), ("dt_proj", 1)):
        bound = fan_in**-0.5
        assert_uniform([getattr(m, name).kernel[...] for m in mixers], -bound, bound, name)
    assert_uniform([m.conv_weight[...] for m in mixers] + [m.conv_bias[...] for m in mixers], -0.5, 0.5, "conv")
    assert mixers[0].x_proj.kernel[...].shape == (20, 1 + 2 * 4)
    dt = np.concatenate([np.asarray(jax.nn.softplus(m.dt_proj.bias[...])) for m in mixers])
    assert_uniform([np.log(dt)], np.log(1e-3) - 1e-5, np.log(1e-1) + 1e-5, "dt")
    for m, norm in zip(mixers, norms):
        np.testing.assert_allclose(m.A_log[...], np.log(np.tile(np.arange(1, 5), (20, 1))), rtol=1e-6)
        np.testing.assert_array_equal(m.D[...], 1.0)
        np.testing.assert_array_equal(norm.weight[...], 1.0)
    bound = 2**-0.5
    kernel, bias = np.asarray(model.kernel_head.kernel[...]), np.asarray(model.kernel_head.bias[...])
    np.testing.assert_array_equal(kernel[:, 0], 0.0)  # keep_const: the constant forcing W[0, 0] starts at 0
    assert bias[0] == 0.0
    heads = [model.omega_head.kernel[...], model.omega_head.bias[...], model.gamma_head.kernel[...],
             model.gamma_head.bias[...], kernel[:, 1:], bias[1:]]
    assert_uniform(heads, -bound, bound, "heads")
    assert kernel.shape == (2, 16 * 16)


def test_golden_encoder_stack(golden, golden_json):
    model = golden_model(golden, golden_json, "small")
    out = run_encoder(model.omega_encoder, jnp.asarray(golden["small/encoder/omega_mamba_in"]), "associative")
    np.testing.assert_allclose(out, golden["small/encoder/omega_mamba_out"], rtol=1e-5, atol=1e-6)
