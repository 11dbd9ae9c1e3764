"""`host_call`: a NumPy function called from a compiled JAX program, for the Numba kernels.

`jax.pure_callback` places its operands on the first CPU device (`device_put`) before calling
the function. With several CPU devices (a run over several devices or processes) that deadlocked:
every device's callback waited for that transfer, which never completed while the devices'
programs waited in their callbacks (tests/test_multiprocess.py; docs/performance.md, "Several
devices"). `host_call` emits the same XLA host callback but hands the function the operands as
the NumPy arrays XLA passes, with no transfer. Under `jax.vmap` it batches like
`pure_callback(vmap_method="expand_dims")`: mapped operands get the mapped axis first, the others
a leading axis of 1, and the function returns results with the mapped axis first.

It uses JAX's internal `emit_python_callback`, the lowering of `pure_callback` itself.
"""

import jax
import numpy as np
from jax._src import core, dispatch
from jax._src.callback import _callback_op_sharding, emit_python_callback
from jax._src.interpreters import batching, mlir

host_call_p = core.Primitive("host_call")
host_call_p.multiple_results = True


def host_call(fn, results, *args):
    """fn(*numpy operands) -> tuple of numpy results shaped as `results` (ShapeDtypeStructs)."""
    return host_call_p.bind(*args, fn=fn, results=tuple(jax.ShapeDtypeStruct(r.shape, r.dtype) for r in results))


@host_call_p.def_abstract_eval
def _abstract_eval(*avals, fn, results):
    return [core.ShapedArray(r.shape, r.dtype) for r in results]


host_call_p.def_impl(lambda *args, **params: dispatch.apply_primitive(host_call_p, *args, **params))


def _lowering(ctx, *args, fn, results):
    def call(*operands):
        return tuple(np.asarray(r) for r in fn(*operands))

    sharding = _callback_op_sharding(ctx.module_context.axis_context, None, ctx.avals_out)
    outputs, _, _ = emit_python_callback(ctx, call, None, list(args), ctx.avals_in, ctx.avals_out,
                                         has_side_effect=False, returns_token=False, sharding=sharding)
    return outputs


mlir.register_lowering(host_call_p, _lowering, cacheable=False)


def _batch(args, dims, *, fn, results):
    size = next(a.shape[d] for a, d in zip(args, dims) if isinstance(d, int))
    args = [jax.numpy.moveaxis(a, d, 0) if isinstance(d, int) else jax.numpy.expand_dims(a, 0)
            for a, d in zip(args, dims)]
    results = tuple(jax.ShapeDtypeStruct((size, *r.shape), r.dtype) for r in results)
    return host_call_p.bind(*args, fn=fn, results=results), [0] * len(results)


batching.primitive_batchers[host_call_p] = _batch
