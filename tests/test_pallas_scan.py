"""What only the Pallas selective scan has: its lowering to Triton kernels for a GPU (PTX
compilation is not run). Its checks against the loop, the fused scan, finite differences and
vmap are those of every kernel (test_scan_kernels.py, in Pallas' interpret mode on the CPU)."""

import functools

import jax
import jax.numpy as jnp

from ouroboros_jax.model.pallas_scan import pallas_selective_ssm
from tests.helpers import output_and_grads


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
