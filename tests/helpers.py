"""Shared test fixtures that need the package: golden-configured models and drives."""

import jax.numpy as jnp
from flax import nnx

from ouroboros_jax.model.ouroboros import Drives, ModelConfig, Ouroboros
from ouroboros_jax.model.reference_params import load_reference_params

# Jitted calls: compiled once per model structure and input shape, shared across tests.
compute_drives = nnx.jit(lambda model, x, dxdt: model(x, dxdt))
run_encoder = nnx.jit(lambda encoder, u, impl: encoder(u, impl), static_argnums=2)

GOLDEN_CONFIG_KEYS = ("n_kernels", "n_layers", "d_state", "d_conv", "expand_factor", "drive_lowpass_ms",
                      "keep_const", "osc_init")


def golden_model(golden, golden_json, name: str) -> Ouroboros:
    """The reference model `name` ("small", "default", "osc_init_small") with its golden parameters."""
    spec = golden_json[f"{name}_model"]
    config = ModelConfig(**{k: spec[k] for k in GOLDEN_CONFIG_KEYS})
    model = Ouroboros(config, rngs=nnx.Rngs(0))
    prefix = f"{name}/param/"
    load_reference_params(model, {k[len(prefix):]: v for k, v in golden.items() if k.startswith(prefix)})
    return model


def golden_drives(golden, name: str) -> Drives:
    return Drives(*(jnp.asarray(golden[f"{name}/drives/{k}"]) for k in Drives._fields))
