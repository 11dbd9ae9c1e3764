"""Loads parameters named and laid out as the PyTorch reference's `state_dict`.

Names: `{omega,gamma,kernel}_mamba.layers.{i}.norm.weight`, `...mixer.{in_proj,x_proj,out_proj}
.weight`, `...mixer.conv1d.{weight,bias}`, `...mixer.dt_proj.{weight,bias}`, `...mixer.A_log`,
`...mixer.D`, and the heads `omega_net`, `gamma_net`, `kernel.weights` (`.weight`, `.bias`). A
PyTorch linear weight is (out, in) and a depthwise conv weight (d_inner, 1, d_conv); ours are
(in, out) and (d_conv, d_inner).
"""

from collections.abc import Mapping

import numpy as np
from flax import nnx

from ouroboros_jax.errors import InputError
from ouroboros_jax.model.ouroboros import Ouroboros

_ENCODERS = {"omega_mamba": "omega_encoder", "gamma_mamba": "gamma_encoder", "kernel_mamba": "kernel_encoder"}
_HEADS = {"omega_net": "omega_head", "gamma_net": "gamma_head", "kernel.weights": "kernel_head"}


def _transpose(a: np.ndarray) -> np.ndarray:
    return a.T


def _conv(a: np.ndarray) -> np.ndarray:
    return a[:, 0, :].T


def _same(a: np.ndarray) -> np.ndarray:
    return a


# (reference suffix inside a mixer, our path inside a residual block, layout conversion)
_MIXER = (
    ("in_proj.weight", ("mixer", "in_proj", "kernel"), _transpose),
    ("conv1d.weight", ("mixer", "conv_weight"), _conv),
    ("conv1d.bias", ("mixer", "conv_bias"), _same),
    ("x_proj.weight", ("mixer", "x_proj", "kernel"), _transpose),
    ("dt_proj.weight", ("mixer", "dt_proj", "kernel"), _transpose),
    ("dt_proj.bias", ("mixer", "dt_proj", "bias"), _same),
    ("A_log", ("mixer", "A_log"), _same),
    ("D", ("mixer", "D"), _same),
    ("out_proj.weight", ("mixer", "out_proj", "kernel"), _transpose),
)


def _reference_names(n_layers: int):
    """Yields (reference name, our parameter path, layout conversion) for every parameter."""
    for ref_enc, our_enc in _ENCODERS.items():
        for i in range(n_layers):
            prefix = f"{ref_enc}.layers.{i}"
            yield f"{prefix}.norm.weight", (our_enc, "layers", i, "norm", "weight"), _same
            for suffix, path, convert in _MIXER:
                yield f"{prefix}.mixer.{suffix}", (our_enc, "layers", i, *path), convert
    for ref_head, our_head in _HEADS.items():
        yield f"{ref_head}.weight", (our_head, "kernel"), _transpose
        yield f"{ref_head}.bias", (our_head, "bias"), _same


def load_reference_params(model: Ouroboros, arrays: Mapping[str, np.ndarray], source: str = "parameters") -> None:
    """Overwrites `model`'s parameters in place with the reference-named `arrays`.

    Args:
      model: an `Ouroboros` whose config has the reference model's shape.
      arrays: reference `state_dict` name -> array. Extra names (buffers) are ignored.
      source: what the arrays came from, for error messages (e.g. a checkpoint path).

    Raises:
      InputError: a parameter is missing or its shape does not fit the model's config.
    """
    state = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(state))
    for name, path, convert in _reference_names(model.config.n_layers):
        if name not in arrays:
            raise InputError(f"{source}: missing parameter {name!r}; is it a polynomial Ouroboros with "
                             f"{model.config.n_layers} layers?")
        value = convert(np.asarray(arrays[name], dtype=np.float32))
        target = flat[path]
        if value.shape != target[...].shape:
            raise InputError(f"{source}: parameter {name!r} has shape {np.shape(arrays[name])}, which does not "
                             f"fit the model config {model.config}; set the capacity flags to the reference model's")
        target[...] = value
