"""`monitor`: the status line (docs/cli.md) from a run's own logs, checkpoints and metadata."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboardX import SummaryWriter

from ouroboros_jax.errors import InputError
from ouroboros_jax.training.events import read_scalars
from ouroboros_jax.training.monitoring import Limits, Observations, initial_state, poll, status
from ouroboros_jax.training.outputs import write_json


def observations(**overrides) -> Observations:
    """A healthy seed at step 999 of a run with 10 batches per epoch and flat losses."""
    fields = dict(now=1e9, events_age_s=5.0, finished=False, batches_per_epoch=10, n_epochs=200, last_step=999,
                  spec=np.ones(1000), tf=np.ones(1000), horizon=512.0, nan_skips=0, checkpoints=(), val={})
    return Observations(**{**fields, **overrides})


def polls(sequence, state=None):
    """Status names of successive polls over `sequence` of Observations, and the last state."""
    state, names = initial_state() if state is None else state, []
    for obs in sequence:
        line, state = status(state, obs)
        names.append(None if line is None else line.split()[0].removeprefix("status="))
    return names, state


def fields(line):
    return dict(item.split("=", 1) for item in line.split())


def val(autonomy):
    return {"autonomy": autonomy, "spec_corr": 0.5, "amp_pen": 0.1, "pitch_pen": 0.2, "bounded_frac": 1.0}


def test_heartbeat_every_fourth_quiet_poll():
    names, state = polls([observations()] * 8)
    assert names == [None, None, None, "HEARTBEAT"] * 2
    assert len(state["history"]) == 8 and state["history"][3]["status"] == "HEARTBEAT"


def test_loss_spike_when_the_recent_spec_mean_doubles():
    spiked = np.concatenate([np.ones(500), np.full(500, 2.5)])  # the last 5 windows of 100 over the 5 before
    line, _ = status(initial_state(), observations(spec=spiked))
    assert fields(line)["status"] == "LOSS_SPIKE" and fields(line)["spec_ratio"] == "2.5"
    line, _ = status(initial_state(), observations(spec=np.concatenate([np.ones(500), np.full(500, 1.9)])))
    assert line is None


def test_plateau_after_two_checkpoints_without_a_0_02_autonomy_gain():
    scores = {1: -1.0, 2: -0.99, 3: -0.985, 4: -0.5}
    sequence = [observations(checkpoints=tuple(range(1, e + 1)), val={k: val(scores[k]) for k in range(1, e + 1)})
                for e in scores]
    names, state = polls(sequence)
    assert names == ["NEW_CKPT", "NEW_CKPT", "PLATEAU", "NEW_CKPT"]
    assert state["best_val_autonomy"] == -0.5 and state["ckpts_since_best"] == 0
    line, _ = status(initial_state(), sequence[-1])  # four new at once: the newest is reported
    assert fields(line)["ckpt_epoch"] == "4" and fields(line)["new_ckpts"] == "4"
    assert fields(line)["val_autonomy"] == "-0.5" and fields(line)["val_spec_corr"] == "0.5"


def test_plateau_loss_after_eight_polls_without_a_new_best_then_every_eight():
    names, _ = polls([observations()] * 17)
    assert [i + 1 for i, n in enumerate(names) if n == "PLATEAU_LOSS"] == [9, 17]
    assert [i + 1 for i, n in enumerate(names) if n == "HEARTBEAT"] == [4, 8, 12, 16]
    # Improving by more than 2 % every poll is never a plateau.
    names, _ = polls([observations(spec=np.full(1000, 0.97**k)) for k in range(17)])
    assert "PLATEAU_LOSS" not in names
    # Without 500 steps there is no recent mean, hence no plateau to report.
    names, _ = polls([observations(spec=np.ones(300))] * 17)
    assert "PLATEAU_LOSS" not in names


def test_priority_dead_then_nan_then_loss_spike_then_checkpoint():
    everything = dict(nan_skips=80, spec=np.concatenate([np.ones(500), np.full(500, 3.0)]), checkpoints=(5,),
                      val={5: val(-1.0)})
    names, state = polls([observations(events_age_s=4000.0, **everything),  # stale: nothing else counts
                          observations(**everything),  # 80 new skips
                          observations(**everything),  # no new skip, still spiked
                          observations(**{**everything, "spec": np.ones(1000)})])  # the checkpoint waited
    assert names == ["DEAD", "NAN_SPIKE", "LOSS_SPIKE", "NEW_CKPT"]
    assert state["last_ckpt_epoch"] == 5
    # A finished run that went quiet is DONE, not DEAD; a run without events is DEAD at once.
    assert polls([observations(events_age_s=4000.0, finished=True)])[0] == ["DONE"]
    line, _ = status(initial_state(), observations(events_age_s=None))
    assert line == "status=DEAD reason=no_events_file poll=1"


def test_status_is_pure_and_its_state_is_json():
    before = initial_state()
    _, after = status(before, observations(nan_skips=3))
    assert before == initial_state() and after["nan_skips"] == 3
    assert json.loads(json.dumps(after)) == after
    _, state = polls([observations()] * 205)
    assert len(state["history"]) == 200 and state["history"][-1]["poll"] == 205


def write_run_info(run_dir, batches_per_epoch=10, seeds=(0,)):
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "run.json", {"config": {}, "n_epochs": 5, "batches_per_epoch": batches_per_epoch,
                                      "n_segments": 80, "sample_rate": 32000, "seeds": list(seeds),
                                      "cull_epoch": None})


def seed_events(run_dir, steps: int) -> SummaryWriter:
    """A run with seed 0's TensorBoard events: a spectral loss of 1 at each of `steps` steps."""
    write_run_info(run_dir)
    writer = SummaryWriter(str(run_dir / "seed0"))
    for step in range(steps):
        writer.add_scalar("Loss/spec", 1.0, step)
    writer.flush()
    return writer


def test_dead_without_events_and_ctrl_c_ends_watch_cleanly(tmp_path):
    write_run_info(tmp_path / "run")
    # `python -m ouroboros_jax.monitor` with Ctrl-C handled as in a terminal, also when pytest runs
    # as a background job (which inherits SIGINT ignored).
    ctrl_c_as_in_a_terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                               "runpy.run_module('ouroboros_jax.monitor', run_name='__main__')")
    process = subprocess.Popen(
        [sys.executable, "-c", ctrl_c_as_in_a_terminal, f"--run_dir={tmp_path / 'run'}", "--watch=0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = [process.stdout.readline().strip() for _ in range(2)]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert lines == ["status=DEAD reason=no_events_file poll=1", "status=DEAD reason=no_events_file poll=2"]
    assert process.returncode == 0 and "Traceback" not in stderr
    assert json.loads((tmp_path / "run" / "monitor_state.json").read_text())["seed"] == 0


def test_dead_when_the_events_went_stale(tmp_path):
    seed_events(tmp_path, 20).close()
    assert poll(tmp_path, state_path=tmp_path / "state.json") is None  # fresh: nothing to report
    two_hours_ago = time.time() - 7200
    for path in (tmp_path / "seed0").iterdir():
        os.utime(path, (two_hours_ago, two_hours_ago))
    line = fields(poll(tmp_path, state_path=tmp_path / "state.json"))
    assert line["status"] == "DEAD" and line["reason"] == "no_new_events" and int(line["idle_s"]) >= 7200
    assert line["epoch"] == "2"  # 20 steps at 10 batches per epoch, from run.json


def test_nan_spike_from_the_events_file(tmp_path):
    writer = seed_events(tmp_path, 30)
    assert poll(tmp_path) is None
    for step in range(30, 90):
        writer.add_scalar("Loss/spec", float("nan"), step)
        writer.add_scalar("Loss/nan_skip", 1.0, step)
    writer.close()
    line = fields(poll(tmp_path))
    assert line["status"] == "NAN_SPIKE" and line["new_nan_skips"] == "60" and line["nan_skips"] == "60"
    assert line["epoch"] == "9"


def test_bad_run_dir_seed_or_state_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no run.json"):
        poll(tmp_path)
    write_run_info(tmp_path, seeds=(0, 1))
    with pytest.raises(InputError, match=r"--seed=3: the run has seeds \[0, 1\]"):
        poll(tmp_path, seed=3)
    poll(tmp_path, seed=1)
    with pytest.raises(InputError, match="watches seed 1, not --seed=0"):
        poll(tmp_path, seed=0)
    write_run_info(tmp_path, batches_per_epoch=None)
    with pytest.raises(InputError, match="no batches_per_epoch"):
        poll(tmp_path, seed=1)


def test_new_checkpoints_of_a_real_run_with_their_val_scores(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    held_back = tmp_path / "2"
    shutil.move(run_dir / "checkpoints" / "2", held_back)  # as if epoch 2 were still training
    info = json.loads((run_dir / "run.json").read_text())
    scalars = read_scalars(run_dir / "seed0")
    steps, autonomy = scalars["Val/autonomy"]
    assert list(steps) == [info["batches_per_epoch"] - 1, 2 * info["batches_per_epoch"] - 1]
    now = max(p.stat().st_mtime for p in (run_dir / "seed0").iterdir())

    line = fields(poll(run_dir, now=now))
    assert line["status"] == "NEW_CKPT" and line["ckpt_epoch"] == "1" and line["new_ckpts"] == "1"
    assert float(line["val_autonomy"]) == pytest.approx(autonomy[0], rel=1e-3)
    assert line["epoch"] == "2" and line["n_epochs"] == "2"

    shutil.move(held_back, run_dir / "checkpoints" / "2")
    line = fields(poll(run_dir, now=now))
    assert line["status"] == "NEW_CKPT" and line["ckpt_epoch"] == "2"
    rows = {int(r["seed"]): r for r in csv.DictReader((run_dir / "seed_cv.csv").open())}
    assert float(line["val_autonomy"]) == pytest.approx(float(rows[0]["val_autonomy"]), rel=1e-3)
    assert float(line["val_bounded_frac"]) == pytest.approx(float(rows[0]["val_bounded_frac"]))

    assert poll(run_dir, now=now) is None  # nothing new
    assert fields(poll(run_dir, now=now + Limits().dead_after_s + 60))["status"] == "DONE"
