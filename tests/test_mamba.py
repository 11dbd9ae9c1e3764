"""The selective-SSM encoder (SPEC a.2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ouroboros_jax.model.mamba import MambaEncoder
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


def test_initialisation_follows_the_reference():
    enc = MambaEncoder(2, 3, d_state=4, d_conv=4, expand_factor=10, rngs=nnx.Rngs(0))
    for layer in enc.layers:
        m = layer.mixer
        np.testing.assert_allclose(m.A_log[...], np.log(np.tile(np.arange(1, 5), (20, 1))), rtol=1e-6)
        np.testing.assert_array_equal(m.D[...], 1.0)
        np.testing.assert_array_equal(layer.norm.weight[...], 1.0)
        dt = np.asarray(jax.nn.softplus(m.dt_proj.bias[...]))
        assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
        assert np.abs(m.dt_proj.kernel[...]).max() <= 1.0  # +-dt_rank^-1/2 with dt_rank 1
        assert np.abs(m.conv_weight[...]).max() <= 0.5  # +-d_conv^-1/2
        assert np.abs(m.in_proj.kernel[...]).max() <= 2**-0.5
        assert np.abs(m.x_proj.kernel[...]).max() <= 20**-0.5
        assert m.x_proj.kernel[...].shape == (20, 1 + 2 * 4)


def test_golden_encoder_stack(golden, golden_json):
    model = golden_model(golden, golden_json, "small")
    out = run_encoder(model.omega_encoder, jnp.asarray(golden["small/encoder/omega_mamba_in"]), "associative")
    np.testing.assert_allclose(out, golden["small/encoder/omega_mamba_out"], rtol=1e-5, atol=1e-6)
