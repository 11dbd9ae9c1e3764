"""The Numba selective scan against the naive float64 loop and the XLA scans."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from ouroboros_jax.model.numba_scan import _exp, numba_selective_ssm
from ouroboros_jax.model.selective_scan import fused_selective_ssm, selective_ssm
from tests.helpers import naive_ssm, run_encoder, ssm_inputs


@functools.partial(jax.jit, static_argnums=0)
def output_and_grads(ssm, inputs, cotangent):
    """y and the gradients of <y, cotangent> w.r.t. all five inputs, in one compilation."""
    y, vjp = jax.vjp(ssm, *inputs)
    return y, vjp(cotangent)


def test_exp_polynomial_is_within_two_ulp_of_exp():
    """The float32 exp of the kernels, over the decay's range and beyond (~2 ulp = 2.4e-7 relative)."""
    import numba

    exp32 = numba.njit(fastmath=True)(lambda v: [_exp(e) for e in v])
    x = np.concatenate([np.linspace(-87.0, 88.0, 200_001), -np.logspace(-8, 0, 1001)]).astype(np.float32)
    got = np.array(exp32(x), np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2.4e-7
    assert exp32(np.array([0.0], np.float32))[0] == 1.0


# T 1 and prime; D below, at and above the 8-lane padding (5, 8, 20, 40); N 1 to 4.
@pytest.mark.parametrize("length, d_inner, d_state", [(1, 5, 4), (37, 8, 2), (37, 20, 4), (11, 40, 1)])
def test_output_matches_naive_loop_and_gradients_match_fused_scan(length, d_inner, d_state):
    """float32: y within 1e-5 relative (atol 1e-6) of the float64 loop; every gradient within 1e-5 of
    its largest entry of `fused_selective_ssm`'s (both accumulate in float32, in different orders)."""
    inputs = ssm_inputs(3, length, d_inner, d_state, seed=length * d_inner)
    cotangent = jax.random.normal(jax.random.key(length), inputs[0].shape)
    y, grads = output_and_grads(numba_selective_ssm, inputs, cotangent)
    assert y.shape == inputs[0].shape and y.dtype == jnp.float32
    np.testing.assert_allclose(y, naive_ssm(*inputs), rtol=1e-5, atol=1e-6)
    _, grads_ref = output_and_grads(fused_selective_ssm, inputs, cotangent)
    for got, want, primal in zip(grads, grads_ref, inputs):
        assert got.shape == primal.shape and got.dtype == primal.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("length", [1, 5, 130])
def test_float64_output_matches_the_naive_loop(length):
    with jax.enable_x64(True):
        inputs = ssm_inputs(2, length, 3, 4, seed=length, dtype=np.float64)
        y = selective_ssm(*inputs, impl="numba")
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, naive_ssm(*inputs), rtol=1e-12, atol=1e-12)


def test_gradients_match_finite_differences_in_float64():
    """In float64 the kernels use math.exp, so the hand-written VJP is checked to 1e-7."""
    with jax.enable_x64(True):
        inputs = ssm_inputs(2, 9, 3, 2, seed=3, dtype=np.float64)
        test_util.check_grads(jax.jit(numba_selective_ssm), inputs, order=1, modes=("rev",), atol=1e-7, rtol=1e-7)


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


@pytest.mark.parametrize("batched_A", [True, False])
def test_jit_of_vmap_over_seeds_equals_one_call_per_seed(batched_A):
    """The training step jits a vmap over seeds (the seeds' A batched, or a shared A broadcast):
    every (seed, batch element) chain runs in one launch, and the members must not mix."""
    members = [ssm_inputs(2, 13, 5, 3, seed=s) for s in range(3)]
    stacked = [jnp.stack(parts) for parts in zip(*members)]
    if not batched_A:
        members = [(*m[:2], members[0][2], *m[3:]) for m in members]
        stacked[2] = members[0][2]
    cotangents = jax.random.normal(jax.random.key(0), (3,) + members[0][0].shape)
    in_axes = ((0, 0, 0 if batched_A else None, 0, 0), 0)
    batched = jax.jit(jax.vmap(functools.partial(output_and_grads, numba_selective_ssm), in_axes=in_axes))
    ys, grads = batched(tuple(stacked), cotangents)
    for i, inputs in enumerate(members):
        y, member_grads = output_and_grads(numba_selective_ssm, inputs, cotangents[i])
        np.testing.assert_allclose(ys[i], y, rtol=1e-6, atol=1e-7)
        for got, want in zip(grads, member_grads):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_selective_ssm_dispatches_numba():
    inputs = ssm_inputs(1, 6, 3, 4, seed=1)
    np.testing.assert_array_equal(selective_ssm(*inputs, impl="numba"), numba_selective_ssm(*inputs))


def test_the_encoder_with_the_numba_scan_equals_the_associative_one():
    from flax import nnx

    from ouroboros_jax.model.mamba import MambaEncoder

    enc = MambaEncoder(2, 2, d_state=4, d_conv=4, expand_factor=3, rngs=nnx.Rngs(0))
    u = jax.random.normal(jax.random.key(1), (3, 200, 2))
    np.testing.assert_allclose(run_encoder(enc, u, "associative"), run_encoder(enc, u, "numba"), rtol=2e-5, atol=2e-6)
