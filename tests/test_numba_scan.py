"""What only the Numba selective scan has: its float32 exp polynomial, float64 kernels, a decay
below exp's range, and agreement with the sequential scan and in the encoder. The checks of every
kernel are in test_scan_kernels.py."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ouroboros_jax.model.numba_scan import numba_selective_ssm, vector_exp
from ouroboros_jax.model.selective_scan import selective_ssm
from tests.helpers import naive_ssm, output_and_grads, run_encoder, ssm_inputs


def test_exp_polynomial_is_within_two_ulp_of_exp():
    """The float32 exp of the kernels, over the decay's range and beyond (~2 ulp = 2.4e-7 relative)."""
    import numba

    exp32 = numba.njit(fastmath=True)(lambda v: [vector_exp(e) for e in v])
    x = np.concatenate([np.linspace(-87.0, 88.0, 200_001), -np.logspace(-8, 0, 1001)]).astype(np.float32)
    got = np.array(exp32(x), np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2.4e-7
    assert exp32(np.array([0.0], np.float32))[0] == 1.0


@pytest.mark.parametrize("length", [1, 5, 130])
def test_float64_output_matches_the_naive_loop(length):
    with jax.enable_x64(True):
        inputs = ssm_inputs(2, length, 3, 4, seed=length, dtype=np.float64)
        y = selective_ssm(*inputs, impl="numba")
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, naive_ssm(*inputs), rtol=1e-12, atol=1e-12)


def test_float32_outputs_and_gradients_agree_with_sequential():
    """At layer-like sizes (T 300, D 20, N 4), as the other implementations: < 1e-5 relative."""
    inputs = ssm_inputs(3, 300, 20, 4, seed=7)
    cotangent = jax.random.normal(jax.random.key(0), inputs[0].shape)

    def value_and_grads(which):
        f = lambda *a: jnp.vdot(selective_ssm(*a, impl=which), cotangent)
        return jax.jit(jax.value_and_grad(f, argnums=tuple(range(5))))(*inputs)

    (v_ref, g_ref), (v, g) = value_and_grads("sequential"), value_and_grads("numba")
    np.testing.assert_allclose(v, v_ref, rtol=1e-5)
    for got, want in zip(g, g_ref):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_a_vanishing_decay_is_exact():
    """delta A far below the float32 exp's range (-1e4): the state forgets at once, nothing overflows."""
    delta, x, A, Bt, Ct = ssm_inputs(2, 20, 5, 3, seed=2)
    A = A * 1e4
    y, grads = output_and_grads(numba_selective_ssm, (delta, x, A, Bt, Ct), jnp.ones_like(delta))
    np.testing.assert_allclose(y, naive_ssm(delta, x, A, Bt, Ct), rtol=1e-5, atol=1e-6)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_the_encoder_with_the_numba_scan_equals_the_associative_one():
    from flax import nnx

    from ouroboros_jax.model.mamba import MambaEncoder

    enc = MambaEncoder(2, 2, d_state=4, d_conv=4, expand_factor=3, rngs=nnx.Rngs(0))
    u = jax.random.normal(jax.random.key(1), (3, 200, 2))
    np.testing.assert_allclose(run_encoder(enc, u, "associative"), run_encoder(enc, u, "numba"), rtol=2e-5, atol=2e-6)
