"""The Pallas selective scan against a naive loop and the fused XLA scan.

On the CPU the kernels run in Pallas' interpret mode (the same kernel bodies, executed by XLA);
the Triton compilation for a GPU is checked only as far as lowering to the Triton kernel call.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from ouroboros_jax.model.pallas_scan import pallas_selective_ssm
from ouroboros_jax.model.selective_scan import fused_selective_ssm, selective_ssm
from tests.helpers import naive_ssm, ssm_inputs


@functools.partial(jax.jit, static_argnums=0)
def output_and_grads(ssm, inputs, cotangent):
    """y and the gradients of <y, cotangent> w.r.t. all five inputs, in one compilation."""
    y, vjp = jax.vjp(ssm, *inputs)
    return y, vjp(cotangent)


# T 1 and prime; D and N below and at powers of two (padded); D 40: two channel blocks.
@pytest.mark.parametrize("length, d_inner, d_state", [(1, 5, 4), (37, 3, 2), (37, 5, 4), (11, 40, 3)])
def test_output_matches_naive_loop_and_gradients_match_fused_scan(length, d_inner, d_state):
    """float32: y within 1e-5 relative (atol 1e-6) of the float64 loop; every gradient within 1e-5 of
    its largest entry of `fused_selective_ssm`'s (both accumulate in float32, in different orders)."""
    inputs = ssm_inputs(2, length, d_inner, d_state, seed=length * d_inner)
    cotangent = jax.random.normal(jax.random.key(length), inputs[0].shape)
    y, grads = output_and_grads(pallas_selective_ssm, inputs, cotangent)
    assert y.shape == inputs[0].shape and y.dtype == jnp.float32
    np.testing.assert_allclose(y, naive_ssm(*inputs), rtol=1e-5, atol=1e-6)
    _, grads_ref = output_and_grads(fused_selective_ssm, inputs, cotangent)
    for got, want, primal in zip(grads, grads_ref, inputs):
        assert got.shape == primal.shape and got.dtype == primal.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_gradients_match_finite_differences_in_float64():
    """Interpret mode runs the kernels in float64, so the hand-written VJP is checked to 1e-7."""
    with jax.enable_x64(True):
        inputs = ssm_inputs(2, 9, 5, 2, seed=3, dtype=np.float64)
        ssm = jax.jit(pallas_selective_ssm)
        np.testing.assert_allclose(ssm(*inputs), naive_ssm(*inputs), rtol=1e-12, atol=1e-12)
        test_util.check_grads(ssm, inputs, order=1, modes=("rev",), atol=1e-7, rtol=1e-7)


def test_jit_of_vmap_over_seeds_equals_one_call_per_seed():
    """The training step jits a vmap over seeds: the kernels' batching must not mix members."""
    members = [ssm_inputs(2, 13, 5, 3, seed=s) for s in range(3)]
    stacked = tuple(jnp.stack(parts) for parts in zip(*members))
    cotangents = jax.random.normal(jax.random.key(0), (3,) + members[0][0].shape)
    batched = jax.jit(jax.vmap(functools.partial(output_and_grads, pallas_selective_ssm)))
    ys, grads = batched(stacked, cotangents)
    for i, inputs in enumerate(members):
        y, member_grads = output_and_grads(pallas_selective_ssm, inputs, cotangents[i])
        np.testing.assert_allclose(ys[i], y, rtol=1e-6, atol=1e-7)
        for got, want in zip(grads, member_grads):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_selective_ssm_dispatches_pallas():
    inputs = ssm_inputs(1, 6, 3, 4, seed=1)
    np.testing.assert_array_equal(selective_ssm(*inputs, impl="pallas"), pallas_selective_ssm(*inputs))


def test_forward_and_backward_lower_to_triton_kernels_for_a_gpu():
    """At the project's default layer shape (B 8, T 4410, D 20, N 4): the Pallas Triton lowering accepts
    both kernels (power-of-two block sizes, the loops, loads and stores); PTX compilation is not run."""
    shapes = [(8, 4410, 20), (8, 4410, 20), (20, 4), (8, 4410, 4), (8, 4410, 4)]
    inputs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]
    cotangent = jax.ShapeDtypeStruct(shapes[0], jnp.float32)
    ssm = functools.partial(pallas_selective_ssm, interpret=False)
    grads = output_and_grads.trace(ssm, inputs, cotangent)
    hlo = grads.lower(lowering_platforms=("cuda",)).as_text()
    assert hlo.count("__gpu$xla.gpu.triton") == 2  # the forward saving the states, and the backward
