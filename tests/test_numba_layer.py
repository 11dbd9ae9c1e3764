"""The whole residual Mamba block as a Numba kernel against the JAX block."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import test_util

from ouroboros_jax.model.mamba import ResidualBlock
from ouroboros_jax.model.numba_layer import numba_block, residual_block, vector_log1p


def block_state(d_inner, seed=0):
    """A block of the model's shape (d_model 2, N 4, d_conv 4) with every weight moved off its
    initial value (D = 1, A_log = ln(n + 1), ... would hide a wrong gradient)."""
    graphdef, state = nnx.split(ResidualBlock(2, d_inner, 4, 4, rngs=nnx.Rngs(seed)))
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [w + 0.2 * jax.random.normal(k, w.shape, w.dtype) for w, k in zip(leaves, keys)]
    return graphdef, jax.tree_util.tree_unflatten(treedef, leaves)


@functools.partial(jax.jit, static_argnums=(0, 1))
def output_and_grads(graphdef, impl, state, x, cotangent):
    """The block's output and the gradients of <output, cotangent> w.r.t. the weights and x."""

    def f(state, x):
        block = nnx.merge(graphdef, state)
        return residual_block(block, x) if impl == "numba" else block(x, impl)

    out, vjp = jax.vjp(f, state, x)
    return out, vjp(cotangent)


def test_log1p_polynomial_is_within_two_ulp():
    import numba

    log1p32 = numba.njit(fastmath=True)(lambda v: [vector_log1p(e) for e in v])
    x = np.concatenate([np.linspace(0.0, 1.0, 100_001), np.logspace(-30, 0, 1001)]).astype(np.float32)
    got = np.array(log1p32(x), np.float64)
    want = np.log1p(x.astype(np.float64))
    assert np.max(np.abs(got - want) / np.maximum(want, 1e-45)) < 2.4e-7


# T 1 and prime; d_inner below and above the 8-lane padding (6, 20) and at it (8).
@pytest.mark.parametrize("length, d_inner", [(1, 6), (37, 20), (40, 8)])
def test_output_and_every_gradient_match_the_jax_block(length, d_inner):
    """float32: the output within 1e-5 relative, each gradient within 1e-5 of its largest entry."""
    graphdef, state = block_state(d_inner, seed=length)
    x = jax.random.normal(jax.random.key(length), (3, length, 2))
    cotangent = jax.random.normal(jax.random.key(length + 1), x.shape)
    out, grads = output_and_grads(graphdef, "numba", state, x, cotangent)
    want_out, want_grads = output_and_grads(graphdef, "fused", state, x, cotangent)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(want_grads)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(want))),
                                   err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow  # compiles the kernels once more, for float64 (~2 minutes)
def test_float64_output_and_gradients_by_finite_differences():
    """In float64 the kernels use math.exp and math.log1p: the output to 1e-12 of the JAX block's,
    the hand-written backward to finite differences (1e-7), w.r.t. x and every weight."""
    with jax.enable_x64(True):
        graphdef, state = block_state(5, seed=3)
        state = jax.tree_util.tree_map(lambda w: w.astype(jnp.float64), state)
        x = jax.random.normal(jax.random.key(3), (2, 7, 2), jnp.float64)
        block = nnx.merge(graphdef, state)
        np.testing.assert_allclose(residual_block(block, x), block(x, "fused"), rtol=1e-12, atol=1e-12)
        mixer = block.mixer
        kernel = mixer.in_proj.kernel[...]
        weights = (block.norm.weight[...], kernel[:, :5], kernel[:, 5:], mixer.conv_weight[...], mixer.conv_bias[...],
                   mixer.x_proj.kernel[...], mixer.dt_proj.kernel[...], mixer.dt_proj.bias[...],
                   -jnp.exp(mixer.A_log[...]).T, mixer.D[...], mixer.out_proj.kernel[...])
        test_util.check_grads(jax.jit(numba_block), (x, *weights), order=1, modes=("rev",), atol=1e-7, rtol=1e-7)


def test_jit_of_vmap_over_seeds_equals_one_call_per_seed():
    """The training step jits a vmap over seeds, weights and data batched: the members must not mix."""
    graphdef, _ = block_state(6)
    states = [block_state(6, seed=s)[1] for s in range(3)]
    xs = jax.random.normal(jax.random.key(0), (3, 2, 11, 2))
    cotangents = jax.random.normal(jax.random.key(1), xs.shape)
    stacked = jax.tree_util.tree_map(lambda *w: jnp.stack(w), *states)
    outs, grads = jax.jit(jax.vmap(functools.partial(output_and_grads, graphdef, "numba")))(stacked, xs, cotangents)
    for i, state in enumerate(states):
        out, member_grads = output_and_grads(graphdef, "numba", state, xs[i], cotangents[i])
        np.testing.assert_allclose(outs[i], out, rtol=1e-6, atol=1e-7)
        for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(member_grads)):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_the_block_dispatches_the_kernel_for_numba():
    graphdef, state = block_state(6)
    block = nnx.merge(graphdef, state)
    x = jax.random.normal(jax.random.key(0), (1, 9, 2))
    np.testing.assert_array_equal(block(x, "numba"), residual_block(block, x))
