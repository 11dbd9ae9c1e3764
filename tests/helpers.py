"""Shared test fixtures that need the package: golden-configured models and drives, SSM references."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ouroboros_jax.data import DataConfig, SamplerConfig, load_training_data
from ouroboros_jax.model.ouroboros import Drives, ModelConfig, Ouroboros
from ouroboros_jax.model.reference_params import load_reference_params
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.step import StepConfig

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


def naive_ssm(delta, x, A, Bt, Ct):
    """The recurrence as written in the module docstring, one sample at a time in float64."""
    delta, x, A, Bt, Ct = (np.asarray(a, np.float64) for a in (delta, x, A, Bt, Ct))
    h = np.zeros(delta.shape[:1] + A.shape)
    y = np.zeros_like(delta)
    for t in range(delta.shape[1]):
        h = np.exp(delta[:, t, :, None] * A[None]) * h + (delta[:, t] * x[:, t])[:, :, None] * Bt[:, t, None, :]
        y[:, t] = np.einsum("bdn,bn->bd", h, Ct[:, t])
    return y


def ssm_inputs(batch, length, d_inner, d_state, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    delta = np.log1p(np.exp(rng.standard_normal((batch, length, d_inner)) - 2.0))  # softplus, as the layer
    x = rng.standard_normal((batch, length, d_inner))
    A = -np.exp(rng.uniform(-1.0, 1.5, (d_inner, d_state)))
    Bt, Ct = rng.standard_normal((2, batch, length, d_state))
    return tuple(jnp.asarray(a, dtype) for a in (delta, x, A, Bt, Ct))


def load_data(data_dir, seed: int = 1234, **settings):
    """`load_training_data` of `data_dir` with these data and sampler settings, by their names;
    `min_eval_vocs` 1 unless given, so that small test sets hold out one file per role."""
    settings = {"min_eval_vocs": 1, **settings}
    sampler_fields = {f.name for f in dataclasses.fields(SamplerConfig)}
    sampler = SamplerConfig(**{k: v for k, v in settings.items() if k in sampler_fields})
    data = DataConfig(str(data_dir), **{k: v for k, v in settings.items() if k not in sampler_fields})
    return load_training_data(data, sampler, seed)


@functools.partial(jax.jit, static_argnums=0)
def output_and_grads(ssm, inputs, cotangent):
    """y of the selective scan `ssm` and the gradients of <y, cotangent> w.r.t. its five inputs, in
    one compilation."""
    y, vjp = jax.vjp(ssm, *inputs)
    return y, vjp(cotangent)


# A run's default settings: what the tests' steps train with unless they say otherwise.
RUN = RunConfig()


def step_config(horizon: int, **overrides) -> StepConfig:
    """The step settings of a run with the default objective and rollout at horizon H `horizon`
    (the default 44.1 kHz: the envelope sigma of the golden sets), with `overrides`."""
    return dataclasses.replace(RUN.objective.step_config(horizon, RUN.model.sample_rate, RUN.rollout), **overrides)
