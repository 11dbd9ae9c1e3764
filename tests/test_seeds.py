"""The compiled seed program: vmapped seeds equal separate seeds, divergence is isolated, sharding."""

import functools
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.objective.derivatives import first_derivative, second_derivative
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.training.config import ObjectiveConfig
from ouroboros_jax.training.seeds import (
    MemberSettings,
    SeedProgram,
    epoch_batches,
    init_seeds,
    n_batches,
    seed_keys,
    select_seeds,
)
from ouroboros_jax.training.step import (
    Batch,
    make_optimizer,
    model_graphdef,
)
from tests.helpers import step_config

TINY = ModelConfig(n_kernels=3, n_layers=1, d_state=2, d_conv=4, expand_factor=2)
# A short horizon and quiet audio keep the rollout well-conditioned. With long horizons near
# the soft-tanh bound the rollout is chaotic in its drives, and the round-off differences
# between batched and unbatched kernels (1e-7 after one step) grow to the learning-rate scale
# within a few Adam steps (measured: 7e-3 at H = 96 and amplitude 0.3 after 6 steps, 3e-8 here).
STEP = step_config(32, stft_configs=((16, 4), (32, 8)))
OPTIMIZER = make_optimizer(1e-3, 5.0)
SETTINGS = MemberSettings(ObjectiveConfig().weights, 1e-3)


def synthetic_data(n=12, length=128, seed=0) -> Batch:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 44100
    x = np.stack([0.06 * np.sin(2 * np.pi * rng.uniform(1000, 3000) * t + rng.uniform(0, 6)) for _ in range(n)])
    x *= np.sin(np.pi * np.arange(length) / length)
    return Batch(jnp.asarray(x, jnp.float32), jnp.asarray(first_derivative(x), jnp.float32),
                 jnp.asarray(second_derivative(x), jnp.float32), jnp.asarray(np.arange(n) % 3 == 0))


@functools.cache  # one object per setting, so that the tests share its compiled epoch programs (run_epoch)
def program(max_consecutive_skips=50, seed_chunk=0) -> SeedProgram:
    return SeedProgram(model_graphdef(TINY), OPTIMIZER, batch_size=4, max_consecutive_skips=max_consecutive_skips,
                       rollout=RolloutConfig(), seed_chunk=seed_chunk)


_COMPILED = {}  # the tests' ledger, as a run's: (program, stack, data, sharding) -> its compiled epoch program


def run_epoch(prog: SeedProgram, states, progress, data):
    """One epoch of `prog` with STEP and SETTINGS, its program compiled on first use."""
    key = (prog, states.step.shape[0], data.x.shape, getattr(states.step, "sharding", None))
    if key not in _COMPILED:
        _COMPILED[key] = prog.compile_epoch(STEP, states, progress, data, SETTINGS, 1e-3)
    return prog.run_epoch(_COMPILED[key], states, progress, data, SETTINGS, 1e-3)


def train(seed_ids, epochs=2, poison=None, max_consecutive_skips=50, seed_chunk=0):
    prog = program(max_consecutive_skips, seed_chunk)
    states, progress = init_seeds(TINY, OPTIMIZER, seed_keys(1234, seed_ids))
    if poison is not None:  # a poisoned init: one seed's constant forcing is NaN, every step fails
        bias = states.params["kernel_head"]["bias"]
        bias[...] = bias[...].at[poison, 0].set(jnp.nan)
    data, all_metrics = synthetic_data(), []
    for _ in range(epochs):
        states, progress, metrics, ran = run_epoch(prog, states, progress, data)
        all_metrics.append((metrics, ran))
    return states, progress, all_metrics


def leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def test_seed_keys_do_not_depend_on_how_many_seeds_run():
    np.testing.assert_array_equal(jax.random.key_data(seed_keys(7, [0, 1, 2])[2]),
                                  jax.random.key_data(seed_keys(7, [2])[0]))
    assert not np.array_equal(jax.random.key_data(seed_keys(7, [0])[0]), jax.random.key_data(seed_keys(8, [0])[0]))


def test_every_segment_is_used_once_per_epoch_in_an_order_of_each_seed_and_epoch():
    prog = program()
    states, progress = init_seeds(TINY, OPTIMIZER, seed_keys(1234, [0, 1]))
    data = synthetic_data(n=13)  # batches of 4: 4 per epoch, the last wrapping around by 3 segments
    assert n_batches(13, 4) == 4 and n_batches(12, 4) == 3 and n_batches(3, 8) == 1
    orders = []
    for _ in range(2):
        for k in range(2):  # the batches the program draws from each seed's key this epoch
            _, batches = epoch_batches(states.key[k], 13, 4)
            flat = np.asarray(batches).ravel()
            assert batches.shape == (4, 4)
            np.testing.assert_array_equal(np.sort(flat[:13]), np.arange(13))  # every segment once
            np.testing.assert_array_equal(flat[13:], flat[:3])  # the last batch is filled from the start
            orders.append(tuple(flat[:13]))
        states, progress, _, _ = run_epoch(prog, states, progress, data)
    assert len(set(orders)) == 4  # each seed draws its own order, and a new one every epoch


def test_vmapped_seeds_equal_each_seed_alone():
    together, _, _ = train([0, 1])
    for k in (0, 1):
        alone, _, _ = train([k])
        for a, b in zip(leaves(select_seeds(together.params, [k])), leaves(alone.params)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    first, second = leaves(select_seeds(together.params, [0])), leaves(select_seeds(together.params, [1]))
    assert any(not np.allclose(a, b) for a, b in zip(first, second))  # the seeds really differ


def test_a_diverging_seed_stops_and_leaves_the_others_unchanged():
    states, progress, metrics = train([0, 1], poison=1, max_consecutive_skips=4)
    clean, _, _ = train([0])
    for a, b in zip(leaves(select_seeds(states.params, [0])), leaves(clean.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    assert list(np.asarray(progress.active)) == [True, False]
    skipped = np.concatenate([np.asarray(m.skipped) for m, _ in metrics], axis=1)  # (S, steps of both epochs)
    ran = np.concatenate([np.asarray(r) for _, r in metrics], axis=1)
    assert skipped[0].sum() == 0 and ran[0].all()
    # Every step of seed 1 is skipped and counted until 4 in a row; then it stops (3 steps per epoch).
    np.testing.assert_array_equal(ran[1], [True] * 4 + [False] * 2)
    np.testing.assert_array_equal(skipped[1][ran[1]], 1)


def test_seeds_in_chunks_train_as_all_at_once():
    """--seed_chunk 2 of 4 seeds: two vmapped chunks one after another, each seed as in one vmap."""
    whole, whole_progress, whole_metrics = train([0, 1, 2, 3], poison=2, max_consecutive_skips=4)
    chunked, progress, metrics = train([0, 1, 2, 3], poison=2, max_consecutive_skips=4, seed_chunk=2)
    # vmaps of 2 and of 4 seeds round differently and Adam amplifies it (measured 3.9e-6 after 6
    # steps); a seed mix-up would differ by the spread between seeds' inits (~0.1).
    for a, b in zip(leaves(chunked.params), leaves(whole.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    # A mix-up of the seeds' order in the chunks would move the poisoned seed 2's stop.
    assert list(np.asarray(progress.active)) == list(np.asarray(whole_progress.active)) == [True, True, False, True]
    np.testing.assert_array_equal(np.asarray(metrics[1][1]), np.asarray(whole_metrics[1][1]))
    np.testing.assert_allclose(np.asarray(metrics[0][0].total), np.asarray(whole_metrics[0][0].total), rtol=1e-5)


@pytest.mark.slow
def test_sharded_seeds_equal_unsharded(tmp_path):
    """With 4 host devices the seed axis is sharded 4 ways, each device running its shard
    (`shard_map`, as the run does), and the result is the same."""
    script = tmp_path / "sharded.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent.parent)!r})
        import jax, numpy as np
        from jax.sharding import PartitionSpec
        import dataclasses
        from tests.test_seeds import OPTIMIZER, TINY, program, run_epoch, synthetic_data
        from ouroboros_jax.training.runtime import Runtime
        from ouroboros_jax.training.seeds import init_seeds, seed_keys
        assert jax.device_count() == 4
        runtime = Runtime()
        results = []
        for sharded in (True, False):
            # Unsharded: the whole stack on one device (the run never leaves several devices to
            # XLA's partitioner, where the numba kernels' callbacks stall in a collective).
            prog = dataclasses.replace(program(), mesh=runtime.mesh if sharded else None)
            one = lambda tree: jax.device_put(tree, jax.devices()[0])
            place = runtime.shard if sharded else one
            states, progress = place(runtime.fetch(init_seeds(TINY, OPTIMIZER, seed_keys(1234, [0, 1, 2, 3]))))
            data = (runtime.replicate if sharded else one)(runtime.fetch(synthetic_data()))
            states, progress, _, _ = run_epoch(prog, states, progress, data)
            leaf = states.params["kernel_head"]["kernel"][...]
            assert (leaf.sharding.spec == PartitionSpec("seed")) if sharded else len(leaf.devices()) == 1, leaf.sharding
            results.append([np.asarray(a) for a in jax.tree_util.tree_leaves(states.params)])
        # Per-device and replicated kernels round differently and Adam amplifies it (measured 4e-5
        # after 3 steps); a seed mix-up would differ by the spread between seeds' inits (~0.1).
        for a, b in zip(*results):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
        print("SHARDED OK")
    """))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert "SHARDED OK" in result.stdout, result.stderr[-3000:]
