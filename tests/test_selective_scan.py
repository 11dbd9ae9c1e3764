"""The selective recurrence of a Mamba layer, every implementation against one naive loop."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from ouroboros_jax.model.selective_scan import (
    NUMBA_MIN_D_INNER,
    fused_selective_ssm,
    linear_recurrence,
    resolve_scan_impl,
    selective_ssm,
)
from tests.helpers import naive_ssm, ssm_inputs

IMPLS = ("sequential", "associative", "chunked", "fused")


def naive_recurrence(decay, inputs):
    h = np.zeros_like(inputs[:, 0])
    out = []
    for t in range(inputs.shape[1]):
        h = decay[:, t] * h + inputs[:, t]
        out.append(h)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("impl", ["associative", "sequential", "chunked"])
@pytest.mark.parametrize("length", [1, 2, 7, 64, 100, 257])
def test_linear_recurrence_matches_naive_loop(impl, length):
    rng = np.random.default_rng(length)
    decay = rng.uniform(0.5, 1.0, (2, length, 3, 4)).astype(np.float32)
    inputs = rng.standard_normal((2, length, 3, 4)).astype(np.float32)
    h = linear_recurrence(jnp.asarray(decay), jnp.asarray(inputs), impl)
    np.testing.assert_allclose(h, naive_recurrence(decay, inputs), rtol=1e-5, atol=1e-5)


def test_unknown_scan_impl_is_an_error():
    with pytest.raises(ValueError, match="associative"):
        linear_recurrence(jnp.ones((1, 2, 1, 1)), jnp.ones((1, 2, 1, 1)), "blelloch")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("length", [1, 5, 130])
def test_every_implementation_matches_the_naive_loop_in_float64(impl, length):
    with jax.enable_x64(True):
        inputs = ssm_inputs(2, length, 3, 4, seed=length, dtype=np.float64)
        y = selective_ssm(*inputs, impl=impl)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(y, naive_ssm(*inputs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_every_gradient_matches_finite_differences_in_float64(impl):
    with jax.enable_x64(True):
        inputs = ssm_inputs(2, 9, 3, 2, seed=3, dtype=np.float64)
        test_util.check_grads(lambda *a: selective_ssm(*a, impl=impl), inputs, order=1, modes=("rev",),
                              atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("impl", ["associative", "chunked", "fused"])
def test_float32_outputs_and_gradients_agree_with_sequential(impl):
    """At layer-like sizes (T 300, D 20, N 4) float32 rounding differs by < 1e-5 relative."""
    inputs = ssm_inputs(3, 300, 20, 4, seed=7)
    cotangent = jax.random.normal(jax.random.key(0), inputs[0].shape)

    def value_and_grads(which):
        f = lambda *a: jnp.vdot(selective_ssm(*a, impl=which), cotangent)  # noqa: E731
        return jax.jit(jax.value_and_grad(f, argnums=tuple(range(5))))(*inputs)

    (v_ref, g_ref), (v, g) = value_and_grads("sequential"), value_and_grads(impl)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5)
    for got, want in zip(g, g_ref):
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)


def test_fused_scan_under_vmap_equals_one_call_per_member():
    """The training step vmaps over seeds: the custom VJP's batching must not mix members."""
    members = [ssm_inputs(2, 40, 4, 3, seed=s) for s in range(3)]
    stacked = [jnp.stack(parts) for parts in zip(*members)]
    loss = lambda *a: jnp.sum(jnp.sin(fused_selective_ssm(*a)))  # noqa: E731
    batched = jax.vmap(jax.grad(loss, argnums=(0, 2)))(*stacked)
    for i, parts in enumerate(members):
        for got, want in zip(batched, jax.grad(loss, argnums=(0, 2))(*parts)):
            np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-7)


def test_auto_picks_the_measured_fastest_per_backend_and_width():
    # docs/performance.md: the numba block kernels from d_inner 10 on (the default model's 20), the
    # fused scan below (the small model's 4).
    assert resolve_scan_impl("auto", 20, "cpu") == "numba"
    assert resolve_scan_impl("auto", 4, "cpu") == "fused"
    assert [resolve_scan_impl("auto", d, "cpu") for d in (NUMBA_MIN_D_INNER - 1, NUMBA_MIN_D_INNER)] == ["fused",
                                                                                                       "numba"]
    assert resolve_scan_impl("auto", 20, "gpu") == "associative"
    for impl in IMPLS:
        assert resolve_scan_impl(impl, 20) == impl
