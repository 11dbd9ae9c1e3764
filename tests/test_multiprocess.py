"""A run over two processes equals a run in one, and only process 0 writes (training/runtime.py).

Two local processes of 2 CPU devices each (`jax.distributed.initialize` on localhost, JAX's gloo
CPU collectives) train the tiny recipe with 4 seeds; one process with 4 devices trains it too.
Each device holds one seed in both, so the programs are the same: the trained parameters are
bit-equal. The validation outputs differ at float32 round-off (measured: 2.5e-7 at most on
fresh parameters, with identical compiled HLO in both layouts; not explained), so the scores
are compared to 1e-4 and their breakdowns to 1e-2 (a diverged seed's output is chaotic); a seed
mix-up would move them by the spread between seeds (~0.1 and more). A third run of 3 seeds on
the 4 devices pads the stack with one inactive member. All runs use the numba kernels, as the
default model does (tests/multiprocess_worker.py): several devices once deadlocked with them
(ouroboros_jax/model/host_call.py).
"""

import csv
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from ouroboros_jax.scoring.evaluation import rank_seeds
from ouroboros_jax.training.trained import load_run
from tests.test_run import SCORES

# Four processes train for about a minute and a half: left to `pytest -m slow` (CI's budget); the
# several-device layout in one process is in the default run (tests/test_runtime.py).
pytestmark = pytest.mark.slow

WORKER = pathlib.Path(__file__).parent / "multiprocess_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(out_dir, n_seeds, devices, *distributed):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, str(WORKER), str(out_dir), str(n_seeds), *map(str, distributed)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process) -> tuple[list, str]:
    """(the files the process wrote outside checkpoints/, its stdout)."""
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1]), out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{name: (out_dir, [files written by each process], stdout of process 0)}."""
    port = _free_port()
    out_dirs = {name: tmp_path_factory.mktemp(name) for name in ("two", "one", "padded")}
    # All four processes at once: their compiles, mostly on one core each, overlap (CI's budget).
    started = {"two": [_start(out_dirs["two"], 4, 2, port, 2, i) for i in range(2)],
               "one": [_start(out_dirs["one"], 4, 4)], "padded": [_start(out_dirs["padded"], 3, 4)]}
    return {name: (out_dirs[name], *zip(*[_finish(p) for p in processes])) for name, processes in started.items()}


def _rows(out_dir) -> list[dict]:
    with open(out_dir / "seed_cv.csv") as f:
        return list(csv.DictReader(f))


def _params(out_dir) -> list[np.ndarray]:
    import jax

    run = load_run(out_dir)
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(run.states.params)]


def test_two_processes_train_what_one_process_trains(runs):
    (two, _, _), (one, _, _) = runs["two"], runs["one"]
    for a, b in zip(_params(two), _params(one), strict=True):
        np.testing.assert_array_equal(a, b)
    rows, rows_of_one = _rows(two), _rows(one)
    assert len(rows) == len(rows_of_one) == 4
    breakdown = ("val_spec_corr", "val_amp_pen", "val_pitch_pen", "val_bounded_frac", "val_lead_in_db")
    for row, row_of_one in zip(rows, rows_of_one):
        numbers = ("val_autonomy", "val_onset_delay_ms", *breakdown)
        assert {k: v for k, v in row.items() if k not in numbers} == {k: v for k, v in row_of_one.items()
                                                                      if k not in numbers}
        assert float(row["val_autonomy"]) == pytest.approx(float(row_of_one["val_autonomy"]), rel=1e-4)
        # A diverged seed's output is chaotic: its breakdown moves by 1e-3 relative (measured 9.6e-4).
        np.testing.assert_allclose([float(row[k]) for k in breakdown], [float(row_of_one[k]) for k in breakdown],
                                   rtol=1e-2)
        # Equal in the runs measured; round-off could move the envelope's threshold crossing where it is flat.
        assert abs(float(row["val_onset_delay_ms"]) - float(row_of_one["val_onset_delay_ms"])) <= 5.0
    manifests = [json.loads((d / "selected_model.json").read_text()) for d in (two, one)]
    assert manifests[0]["selected_seed"] == manifests[1]["selected_seed"]
    for key in SCORES[1:]:
        assert manifests[0][key] == pytest.approx(manifests[1][key], rel=1e-4), key
    assert manifests[0]["device"] == {**manifests[1]["device"], "processes": 2}


def test_only_process_0_writes(runs):
    two, written, outs = runs["two"]
    one_written = runs["one"][1][0]
    assert written[1] == []  # process 1 wrote nothing outside Orbax's checkpoints
    assert written[0] == one_written  # process 0 wrote what a one-process run writes
    assert {"run.json", "seed_cv.csv", "selected_model.json", "selected_specgram.png", "seed0/events"} <= set(
        written[0])
    assert all(len(list((two / f"seed{k}").glob("events.out.tfevents.*"))) == 1 for k in range(4))
    assert "sharded over 4 devices of 2 processes" in outs[0]
    assert "selected seed" not in outs[1]  # the console lines are process 0's too


def test_padding_members_are_inactive_and_never_reported(runs):
    (padded, _, outs), (one, _, _) = runs["padded"], runs["one"]
    assert "3 seeds sharded over 4 devices, padded with 1 inactive members to 4" in outs[0]
    # Each device trains one member either way, so seeds 0-2 train bit for bit as in the 4-seed run.
    rows, rows_of_4 = _rows(padded), _rows(one)
    assert [r["seed"] for r in rows] == ["0", "1", "2"] and rows == rows_of_4[:3]
    manifest = json.loads((padded / "selected_model.json").read_text())
    assert manifest["n_stacked"] == 4 and manifest["n_seeds"] == 3
    order = rank_seeds(np.array([float(r["val_autonomy"]) for r in rows]),
                       np.array([float(r["val_bounded_frac"]) for r in rows]))
    assert manifest["selected_seed"] == int(rows[order[0]]["seed"])
    assert sorted(p.name for p in padded.glob("seed*") if p.is_dir()) == ["seed0", "seed1", "seed2"]
    for a, b in zip(_params(padded), _params(one), strict=True):
        assert a.shape[0] == 3
        np.testing.assert_array_equal(a, b[:3])
