"""The runtime boundary (training/runtime.py): padding the seed axis, host fetches, the writer,
the matmul precision. The multi-process behaviour is tests/test_multiprocess.py."""

import functools
import json
import re

import jax
import numpy as np
import pytest

from ouroboros_jax.errors import InputError
from ouroboros_jax.losses import LossWeights
from ouroboros_jax.training.runtime import Runtime, inactive_padding, matmul_precision, pad_members, unpadded
from ouroboros_jax.training.seeds import SeedProgress, init_seeds, seed_keys
from ouroboros_jax.training.step import Batch, train_step
from tests.test_seeds import OPTIMIZER, STEP, TINY, program, synthetic_data


def test_members_pad_to_the_devices_or_the_seed_chunk(monkeypatch):
    monkeypatch.setattr(Runtime, "n_devices", property(lambda self: 4))
    assert [Runtime().n_members(n) for n in (1, 3, 4, 5, 8)] == [4, 4, 4, 8, 8]
    assert [Runtime(seed_chunk=8).n_members(n) for n in (1, 8, 9)] == [8, 8, 16]
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
    trained, after, _, ran = prog.run_epoch(states, progress, synthetic_data(), LossWeights(), 1e-3, STEP)
    assert not np.asarray(ran)[1].any() and not bool(np.asarray(after.active)[1])
    for a, b in zip(jax.tree_util.tree_leaves(trained.params), jax.tree_util.tree_leaves(states.params)):
        np.testing.assert_array_equal(np.asarray(a)[1], np.asarray(b)[1])
        assert not np.array_equal(np.asarray(a)[0], np.asarray(b)[0])


def test_only_process_0_writes(monkeypatch, tmp_path):
    calls = []
    assert Runtime().write(calls.append, "written") is None and calls == ["written"]
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not Runtime().writes
    Runtime().write(calls.append, "by process 1")
    with Runtime().writer_only(open(tmp_path / "lock", "w")) as held:
        assert held is None
    assert calls == ["written"]


@pytest.mark.parametrize("precision, highest", [("highest", True), ("default", False)])
def test_the_matmul_precision_reaches_every_product_of_the_training_step(precision, highest):
    """The encoders' matmuls and the kernel contraction of every RK4 stage are dot_generals."""
    states, _ = init_seeds(TINY, OPTIMIZER, seed_keys(1234, [0]))
    state = jax.tree_util.tree_map(lambda a: a[0], states)
    batch = Batch(*(a[:4] for a in synthetic_data()))
    step = jax.jit(functools.partial(train_step, graphdef=program().graphdef, optimizer=OPTIMIZER, config=STEP))
    with matmul_precision(precision):
        text = step.lower(state, batch, LossWeights(), 1e-3, None).as_text()
    products = re.findall(r"dot_general[^\n]*", text)
    assert len(products) > 10
    assert sum("HIGHEST" in p for p in products) == (len(products) if highest else 0)


def test_the_run_records_its_matmul_precision(tiny_run):
    run_dir, manifest = tiny_run
    assert manifest["matmul_precision"] == "highest" and manifest["n_members"] == 2
    assert json.loads((run_dir / "run.json").read_text())["config"]["matmul_precision"] == "highest"
