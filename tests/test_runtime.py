"""The runtime boundary (training/runtime.py): padding the seed axis, host fetches, the writer,
the matmul precision. The multi-process behaviour is tests/test_multiprocess.py."""

import contextlib
import csv
import dataclasses
import functools
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from ouroboros_jax.errors import InputError
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.training.config import ObjectiveConfig, RunConfig
from ouroboros_jax.training.programs import EpochPrograms
from ouroboros_jax.training.runtime import (
    Runtime,
    inactive_padding,
    matmul_precision,
    pad_members,
    unpadded,
)
from ouroboros_jax.training.seeds import SeedProgress, init_seeds, seed_keys
from ouroboros_jax.training.step import Batch, model_graphdef, train_step
from tests.test_seeds import OPTIMIZER, STEP, TINY, program, run_epoch, synthetic_data


def test_members_pad_to_the_devices_or_the_seed_chunk(monkeypatch):
    monkeypatch.setattr(Runtime, "n_devices", property(lambda self: 4))
    assert [Runtime().n_stacked(n) for n in (1, 3, 4, 5, 8)] == [4, 4, 4, 8, 8]
    assert [Runtime(seed_chunk=8).n_stacked(n) for n in (1, 8, 9)] == [8, 8, 16]
    assert Runtime(seed_chunk=8).chunks(16) == 2 and Runtime().chunks(16) == 1
    assert Runtime().members_line(3) == "3 seeds sharded over 4 devices, padded with 1 inactive members to 4"
    assert Runtime(seed_chunk=4).members_line(8) == "8 seeds sharded over 4 devices, 2 chunks of 4 one after another"
    with pytest.raises(InputError, match=r"--seed_chunk=6: must be a multiple of the 4 devices"):
        Runtime(seed_chunk=6)


def test_padding_copies_a_real_member_marks_it_inactive_and_unpads_exactly():
    states, progress = init_seeds(TINY, OPTIMIZER, seed_keys(1234, [0, 1, 2]))
    host = Runtime.fetch((states, progress))
    padded_states, padded_progress = pad_members(host, 5)
    active = inactive_padding(padded_progress.active, 3)
    np.testing.assert_array_equal(active, [True, True, True, False, False])
    for a, b in zip(jax.tree_util.tree_leaves(unpadded(padded_states, 3)), jax.tree_util.tree_leaves(host[0])):
        np.testing.assert_array_equal(np.asarray(jax.random.key_data(a) if a.dtype == states.key.dtype else a),
                                      np.asarray(jax.random.key_data(b) if b.dtype == states.key.dtype else b))
    keys = jax.random.key_data(padded_states.key)
    np.testing.assert_array_equal(keys[3], keys[0])  # a copy of member 0, typed keys kept
    assert padded_states.key.dtype == states.key.dtype


def test_inactive_padding_members_never_change():
    """An inactive member of the stack is frozen by the epoch program: it costs compute, changes nothing."""
    prog = program()
    states, progress = init_seeds(TINY, OPTIMIZER, seed_keys(1234, [0, 1]))
    progress = SeedProgress(np.array([True, False]), np.asarray(progress.skip_run))
    trained, after, _, ran = run_epoch(prog, states, progress, synthetic_data())
    assert not np.asarray(ran)[1].any() and not bool(np.asarray(after.active)[1])
    for a, b in zip(jax.tree_util.tree_leaves(trained.params), jax.tree_util.tree_leaves(states.params)):
        np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b)[1])
        assert not np.array_equal(np.asarray(a)[0], np.asarray(b)[0])


def test_only_process_0_writes(monkeypatch):
    calls = []
    assert Runtime().write(calls.append, "written") is None and calls == ["written"]
    with Runtime().writer_only(lambda name: (calls.append(name), contextlib.nullcontext("held"))[1], "lock") as held:
        assert held == "held"
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not Runtime().writes
    Runtime().write(calls.append, "by process 1")
    with Runtime().writer_only(calls.append, "lock by process 1") as held:
        assert held is None
    assert calls == ["written", "lock"]


@pytest.mark.parametrize("precision, highest", [("highest", True), ("default", False)])
def test_the_matmul_precision_reaches_every_product_of_the_training_step(precision, highest):
    """The encoders' matmuls and the kernel contraction of every RK4 stage are dot_generals (of
    the XLA kernels: the numba kernels' products are theirs, and float32 always)."""
    model = dataclasses.replace(TINY, scan_impl="fused")
    states, _ = init_seeds(model, OPTIMIZER, seed_keys(1234, [0]))
    state = jax.tree_util.tree_map(lambda a: a[0], states)
    batch = Batch(*(a[:4] for a in synthetic_data()))
    config = dataclasses.replace(STEP, rollout=RolloutConfig(kernel="xla"))
    step = jax.jit(functools.partial(train_step, graphdef=model_graphdef(model), optimizer=OPTIMIZER, config=config))
    with matmul_precision(precision):
        text = step.lower(state, batch, ObjectiveConfig().weights, 1e-3, None, 1e-3).as_text()
    products = re.findall(r"dot_general[^\n]*", text)
    assert len(products) > 10
    assert sum("HIGHEST" in p for p in products) == (len(products) if highest else 0)


def test_the_run_records_its_matmul_precision(tiny_run):
    run_dir, manifest = tiny_run
    assert manifest["matmul_precision"] == "highest" and manifest["n_stacked"] == 2
    assert json.loads((run_dir / "run.json").read_text())["config"]["matmul_precision"] == "highest"


def test_on_several_devices_each_trains_its_own_seeds_without_collectives(tmp_path):
    """4 host devices, 8 seeds: the epoch program moves no data between devices (left to itself,
    XLA's partitioner all-gathers the seed axis for the loss's FFTs), and 2 chunks of 4 seeds need
    fewer temporaries than all 8 at once."""
    script = tmp_path / "devices.py"
    script.write_text(textwrap.dedent(f"""
        import dataclasses, json, re, sys
        sys.path.insert(0, {str(pathlib.Path(__file__).parent.parent)!r})
        import jax
        from ouroboros_jax.training.runtime import Runtime
        from ouroboros_jax.training.seeds import init_seeds, seed_keys
        from tests.test_seeds import OPTIMIZER, SETTINGS, STEP, TINY, program, synthetic_data
        assert jax.device_count() == 4
        runtime, report = Runtime(seed_chunk=4), {{}}
        for chunk in (0, 4):
            prog = dataclasses.replace(program(seed_chunk=chunk), mesh=runtime.mesh)
            states, progress = runtime.shard(runtime.fetch(init_seeds(TINY, OPTIMIZER, seed_keys(1, range(8)))))
            compiled = prog.compile_epoch(STEP, states, progress, runtime.replicate(runtime.fetch(synthetic_data())),
                                          SETTINGS, 1e-3)
            text = compiled.executable.as_text()
            report[chunk] = {{"collectives": sorted(set(re.findall(
                r"all-gather|all-to-all|collective-permute|all-reduce|reduce-scatter", text))),
                "temporaries": compiled.memory["temporaries"]}}
        print(json.dumps(report))
    """))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["0"]["collectives"] == report["4"]["collectives"] == []
    assert report["4"]["temporaries"] < 0.75 * report["0"]["temporaries"]  # measured 0.51


def test_culling_into_the_same_padded_stack_reuses_its_program(tmp_path, capsys):
    """4 seeds in chunks of 4, culled to 2 after epoch 1: the stack stays 4 long (2 of them inactive
    padding), so epoch 2 runs the program of epoch 1 (it used to end in an AttributeError)."""
    from ouroboros_jax.training.run import train_and_evaluate
    from tests.test_run import tiny_run_config

    manifest = train_and_evaluate(tiny_run_config(tmp_path, n_seeds=4, seed_chunk=4, cull_frac=0.5, cull_keep=2))
    out = capsys.readouterr().out
    assert out.count("compiling the epoch program") == 1, out
    assert [(p["horizon"], p["n_stacked"]) for p in manifest["epoch_programs"]] == [(64, 4)]
    with (tmp_path / "seed_cv.csv").open() as f:
        fates = sorted((r["status"], r["stopped_epoch"]) for r in csv.DictReader(f))
    assert fates == [("culled", "1")] * 2 + [("finished", "2")] * 2


@pytest.mark.parametrize("unit, kept, same", [(2, 3, True), (2, 2, False), (4, 2, True), (4, 1, True)])
def test_culling_keeps_the_program_when_the_padded_stack_keeps_its_length(unit, kept, same):
    """4 seeds stacked in units of `unit` (the devices, or --seed_chunk: `Runtime.n_stacked` pads
    to either the same way) and culled to `kept`: the epochs after culling run the program of the
    epochs before it exactly when the padded stack is as long (2 devices, 4 -> 3 seeds: yes)."""
    config = RunConfig(n_seeds=4, n_epochs=4, cull_frac=0.5, cull_keep=kept, h_schedule="const")
    plan = EpochPrograms(config, 44100.0, RolloutConfig(), Runtime(seed_chunk=unit).n_stacked)
    before, after = plan.key(1, 4), plan.key(2, plan.seeds_at(2, 4))
    assert before == (config.h_max, 4) and after[1] == Runtime(seed_chunk=unit).n_stacked(kept)
    assert (before == after) is same
