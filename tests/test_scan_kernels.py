"""The selective-scan kernels (the Numba CPU kernel and the Pallas kernel, in interpret mode on the
CPU) held to the same checks: the naive float64 loop, the fused XLA scan's gradients, finite
differences in float64, vmap over seeds, and `selective_ssm`'s dispatch. What only one kernel has
is tested beside it (test_numba_scan.py, test_pallas_scan.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from ouroboros_jax.model.numba_scan import numba_selective_ssm
from ouroboros_jax.model.pallas_scan import pallas_selective_ssm
from ouroboros_jax.model.selective_scan import fused_selective_ssm, selective_ssm
from tests.helpers import naive_ssm, output_and_grads, ssm_inputs

KERNELS = {"numba": numba_selective_ssm, "pallas": pallas_selective_ssm}


# T 1 and prime; D below and above the padding (8 lanes for Numba, powers of two for Pallas) and
# two of Pallas' channel blocks (40); N 2 to 4.
@pytest.mark.parametrize("impl", KERNELS)
@pytest.mark.parametrize("length, d_inner, d_state", [(1, 5, 4), (37, 3, 2), (37, 20, 4), (11, 40, 3)])
def test_output_matches_naive_loop_and_gradients_match_fused_scan(impl, length, d_inner, d_state):
    """float32: y within 1e-5 relative (atol 1e-6) of the float64 loop; every gradient within 1e-5 of
    its largest entry of `fused_selective_ssm`'s (both accumulate in float32, in different orders)."""
    inputs = ssm_inputs(2, length, d_inner, d_state, seed=length * d_inner)
    cotangent = jax.random.normal(jax.random.key(length), inputs[0].shape)
    y, grads = output_and_grads(KERNELS[impl], inputs, cotangent)
    assert y.shape == inputs[0].shape and y.dtype == jnp.float32
    np.testing.assert_allclose(y, naive_ssm(*inputs), rtol=1e-5, atol=1e-6)
    _, grads_ref = output_and_grads(fused_selective_ssm, inputs, cotangent)
    for got, want, primal in zip(grads, grads_ref, inputs):
        assert got.shape == primal.shape and got.dtype == primal.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("impl", KERNELS)
def test_gradients_match_finite_differences_in_float64(impl):
    """In float64 (Numba's kernels use math.exp, Pallas' interpret mode runs in float64) the output
    is the loop's to 1e-12 and the hand-written VJP is checked to 1e-7."""
    with jax.enable_x64(True):
        inputs = ssm_inputs(2, 9, 5, 2, seed=3, dtype=np.float64)
        ssm = jax.jit(KERNELS[impl])
        np.testing.assert_allclose(ssm(*inputs), naive_ssm(*inputs), rtol=1e-12, atol=1e-12)
        test_util.check_grads(ssm, inputs, order=1, modes=("rev",), atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("impl", KERNELS)
@pytest.mark.parametrize("batched_A", [True, False])
def test_jit_of_vmap_over_seeds_equals_one_call_per_seed(impl, batched_A):
    """The training step jits a vmap over seeds (the seeds' A batched, or a shared A broadcast): the
    kernels' batching must not mix members."""
    members = [ssm_inputs(2, 13, 5, 3, seed=s) for s in range(3)]
    stacked = [jnp.stack(parts) for parts in zip(*members)]
    if not batched_A:
        members = [(*m[:2], members[0][2], *m[3:]) for m in members]
        stacked[2] = members[0][2]
    cotangents = jax.random.normal(jax.random.key(0), (3,) + members[0][0].shape)
    in_axes = ((0, 0, 0 if batched_A else None, 0, 0), 0)
    batched = jax.jit(jax.vmap(functools.partial(output_and_grads, KERNELS[impl]), in_axes=in_axes))
    ys, grads = batched(tuple(stacked), cotangents)
    for i, inputs in enumerate(members):
        y, member_grads = output_and_grads(KERNELS[impl], inputs, cotangents[i])
        np.testing.assert_allclose(ys[i], y, rtol=1e-6, atol=1e-7)
        for got, want in zip(grads, member_grads):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", KERNELS)
def test_selective_ssm_dispatches_the_kernel(impl):
    inputs = ssm_inputs(1, 6, 3, 4, seed=1)
    np.testing.assert_array_equal(selective_ssm(*inputs, impl=impl), KERNELS[impl](*inputs))
