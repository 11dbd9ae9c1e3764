"""How a run fails (issue 14): one `error:` line with its exit status, nothing already written
damaged, no hang; one run per directory; settings that cannot work refused before anything runs;
a run whose seeds all diverge stops early and says so."""

import csv
import errno
import json
import logging
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from ouroboros_jax.errors import InputError, NoSeedSurvived, WriteError
from ouroboros_jax.objective.curriculum import horizon_for_epoch
from ouroboros_jax.scoring.evaluation import Autonomy, SegmentScore
from ouroboros_jax.training import lock as lock_module
from ouroboros_jax.training import setup as run_setup
from ouroboros_jax.training.checkpoints import completed_epochs
from ouroboros_jax.training.events import read_scalars
from ouroboros_jax.training.lock import LOCK_FILE, RunLock
from ouroboros_jax.training.outputs import make_output_dir, write_json
from ouroboros_jax.training.preflight import check_run_fits_data
from ouroboros_jax.training.run import train_and_evaluate
from ouroboros_jax.training.run_state import Records, RunState, select, why_none_selected
from ouroboros_jax.training.seeds import SeedProgram
from ouroboros_jax.training.trained import load_run
from tests.test_run import REPO, run_cli, tiny_config, tiny_run_config

# The `tiny_run` recipe on the command line: 2 seeds, one horizon, a checkpoint after every epoch.
TINY_CLI = ("--flagfile=experiments/demo.flags", "--max_segs=24", "--context_len=0.01", "--silence_prefix_ms=4",
            "--silence_suffix_ms=4", "--h_schedule=const", "--h_max=64", "--spec_configs=32,8;64,16", "--n_kernels=2",
            "--n_layers=1", "--expand_factor=1", "--n_val_vocs=2", "--n_test_vocs=2", "--min_eval_vocs=2", "--cull_frac=0",
            "--save_freq=1", "--n_epochs=2")
# On a full disk JAX's cache writes fail too (each a warning, and a truncated entry that a later
# run warns about and rewrites): the disk-full tests leave the cache out to see only our line.
NO_CACHE = "--compilation_cache_dir="


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_one_error_line(result, status, message):
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr, result.stderr[-3000:]
    lines = error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == lines[0]  # the last line says it


# --- settings refused before anything runs ------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    (dict(lr=math.inf), "--lr=inf: must be a positive number"),
    (dict(lr=math.nan), "--lr=nan: must be a positive number"),
    (dict(bound_v=0.0), "--bound_v=0.0: must be a positive number"),
    (dict(bound_x=-1.0), "--bound_x=-1.0: must be a positive number"),
    (dict(n_val_vocs=0, min_eval_vocs=0), "--n_val_vocs=0: seeds are culled and selected by"),
    (dict(n_test_vocs=0, min_eval_vocs=0), "--n_test_vocs=0: the selected model is judged by its score on the test"),
    (dict(n_test_vocs=1), "--n_test_vocs=1: below --min_eval_vocs=2, so fewer would be scored"),
    (dict(n_epochs=2, cull_frac=0.9, cull_keep=1), "--cull_frac=0.9: culls after epoch 2 of --n_epochs=2, which "
                                                   "leaves no epoch to train the kept seeds"),
    (dict(h_min=600, h_max=300), "--h_min=600: must be in [1, --h_max=300]"),
], ids=["lr_inf", "lr_nan", "bound_v", "bound_x", "no_val_vocs", "no_test_vocs", "fewer_test_vocs_than_held_out", "cull_at_the_last_epoch", "h_min_above_h_max"])
def test_settings_that_cannot_work_are_refused_naming_their_flag(tmp_path, overrides, message):
    with pytest.raises(InputError) as error:
        tiny_config(tmp_path, **overrides)
    assert str(error.value).startswith(message), str(error.value)


def test_a_constant_horizon_ignores_h_min_as_the_reference_s_smoke_recipe_needs():
    config = tiny_config("unused", h_schedule="const", h_min=512, h_max=64, n_epochs=2)  # h_min left at 512
    assert [horizon_for_epoch(e, 2, config.h_min, config.h_max, config.h_schedule) for e in range(2)] == [64, 64]


def test_a_batch_larger_than_the_training_set_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(SeedProgram, "run_epoch", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(InputError, match=r"^--batch_size=25: above the 24 training segments; lower it to 24 or less"):
        train_and_evaluate(tiny_config(tmp_path, batch_size=25))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("where,message", [
    ("file", "is a file, not a directory; choose another --out_dir"),
    ("file/run", "file is a file, so no directory can be made under it"),
])
def test_an_out_dir_that_cannot_be_a_directory_is_one_line(tmp_path, where, message):
    (tmp_path / "file").write_text("not a run\n")
    assert_one_error_line(run_cli(*TINY_CLI, f"--out_dir={tmp_path / where}"), 2, message)
    assert (tmp_path / "file").read_text() == "not a run\n"


@pytest.mark.parametrize("code,reason", [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")])
def test_an_out_dir_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, code, reason):
    # As root every directory is writable, so the operating system's refusal is simulated.
    def refuse(*args, **kwargs):
        raise OSError(code, reason)

    with monkeypatch.context() as patch:
        patch.setattr(pathlib.Path, "mkdir", refuse)
        with pytest.raises(InputError, match=rf"^--out_dir={tmp_path / 'new'}: cannot be made \({reason}\)"):
            make_output_dir(tmp_path / "new", "--out_dir")
    # A read-only file system is a failed write (exit status 4, like a full disk): the run resumes
    # once it is writable; a folder the user may not write is theirs to change (status 2).
    failure = ((WriteError, rf"^cannot write {tmp_path}/run.lock: {reason} \(") if code == errno.EROFS else
               (InputError, rf"^--out_dir={tmp_path}: cannot write there \({reason}\); choose a writable --out_dir"))
    with monkeypatch.context() as patch:
        patch.setattr(lock_module.os, "open", refuse)
        with pytest.raises(failure[0], match=failure[1]):
            RunLock(tmp_path).__enter__()


# --- one run per directory (item 1) --------------------------------------------------------


def test_a_second_run_into_a_directory_in_use_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(SeedProgram, "run_epoch", lambda *a, **k: pytest.fail("trained"))
    with RunLock(tmp_path):
        with pytest.raises(InputError, match=rf"^--out_dir={tmp_path}: another run is using it \(process "
                                             rf"{os.getpid()} on host {socket.gethostname()}, started .*\); wait"):
            train_and_evaluate(tiny_run_config(tmp_path))
    assert list(tmp_path.iterdir()) == []  # not even a run.json; the lock went with its holder


def test_the_lock_of_a_killed_run_refuses_while_it_lives_and_is_taken_over_after(tmp_path, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ouroboros_jax.training.lock import RunLock; "
                               "RunLock(sys.argv[1]).__enter__(); print('locked', flush=True); time.sleep(600)",
         str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=rf"another run is using it \(process {holder.pid} on host "):
            RunLock(tmp_path).__enter__()
        result = run_cli(*TINY_CLI, f"--out_dir={tmp_path}")  # the command line says the same in one line
        assert_one_error_line(result, 2, f"another run is using it (process {holder.pid} on host")
    finally:
        holder.kill()  # kill -9: the lock file stays behind, the kernel's lock goes
        holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    with caplog.at_level(logging.WARNING):
        with RunLock(tmp_path) as lock:
            assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    (warning,) = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
    assert f"no longer running (process {holder.pid} on host {socket.gethostname()}" in warning
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.parametrize("content", [b"1", b"[]", b'{"pid": 7, "started": "yesterday"}', b"\xff\xfe", b'{"pid"'])
def test_a_lock_file_that_is_not_ours_or_cut_short_is_taken_over(tmp_path, content):
    (tmp_path / LOCK_FILE).write_bytes(content)  # no process holds it
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_held_lock_with_odd_contents_is_still_described_in_one_line(tmp_path, monkeypatch):
    (tmp_path / LOCK_FILE).write_bytes(b'{"pid": 7, "started": "yesterday"}')
    monkeypatch.setattr(lock_module.fcntl, "flock", lambda fd, op: (_ for _ in ()).throw(BlockingIOError()))
    with pytest.raises(InputError, match=r"another run is using it \(process 7 on host \?, started \?\); wait"):
        RunLock(tmp_path).__enter__()


# --- a write that fails ends the run in one line, without hanging (item 2) -------------------


# `python -m ouroboros_jax.train` where every write past `limit` bytes of a file fails (EFBIG), in
# every thread, as writes fail on a full disk (ENOSPC).
ON_A_FULL_DISK = """
import resource, runpy, signal, sys
limit = int(sys.argv.pop(1))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
runpy.run_module("ouroboros_jax.train", run_name="__main__")
"""


@pytest.mark.slow  # CI's budget; a failed write's one line: test_a_checkpoint_that_cannot_be_written_...
def test_a_full_disk_ends_the_run_with_one_line_instead_of_hanging(tmp_path):
    """tensorboardX's writer threads died on the failed write and the run then blocked forever."""
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", ON_A_FULL_DISK, "60000", *TINY_CLI, NO_CACHE, f"--out_dir={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert_one_error_line(result, 4, f"error: cannot write {out}/seed")
    assert "File too large (" in error_lines(result)[0] and " free on that disk); no checkpoint is complete yet: " \
        "re-run the same command" in error_lines(result)[0]
    assert not (out / LOCK_FILE).exists()


FAIL_THE_SECOND_CHECKPOINT = """
import resource, runpy, signal, sys
from ouroboros_jax.training import checkpoints
save = checkpoints.Checkpoints.save
def save_on_a_disk_that_fills_up(self, epoch, state, meta):
    if epoch == 2:  # from here on every write past 1000 bytes of a file fails
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
    return save(self, epoch, state, meta)
checkpoints.Checkpoints.save = save_on_a_disk_that_fills_up
runpy.run_module("ouroboros_jax.train", run_name="__main__")
"""


def test_a_checkpoint_that_cannot_be_written_leaves_the_last_complete_one_intact(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", FAIL_THE_SECOND_CHECKPOINT, *TINY_CLI, NO_CACHE, f"--out_dir={out}"],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert_one_error_line(result, 4, f"error: cannot write {out}/checkpoints/2: File too large (")
    assert error_lines(result)[0].endswith(f"the last complete checkpoint is {out}/checkpoints/1: re-run the same "
                                           "command to resume from it")
    assert completed_epochs(out / "checkpoints") == [1]
    run = load_run(out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["1"]  # opening it removed the partial save
    assert run.epoch == 1 and run.seed_ids == (0, 1)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax_leaves(run.states.params))


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_a_failed_output_write_leaves_no_partial_file(tmp_path):
    from ouroboros_jax.errors import WriteError

    with pytest.raises(WriteError, match=rf"^cannot write {tmp_path}/missing/run.json: No such file or directory"):
        write_json(tmp_path / "missing" / "run.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


# --- Ctrl-C (item 6) -------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_is_one_line_that_says_where_to_resume(tmp_path):
    out = tmp_path / "run"
    ctrl_c_as_in_a_terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                               "runpy.run_module('ouroboros_jax.train', run_name='__main__')")
    process = subprocess.Popen([sys.executable, "-c", ctrl_c_as_in_a_terminal, *TINY_CLI, "--n_epochs=50",
                                f"--out_dir={out}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    for line in process.stdout:
        if "epoch 2/50" in line:  # the checkpoint of epoch 1 is complete
            break
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert_one_error_line(result, 130, "error: interrupted; the last complete checkpoint is "
                                       f"{out}/checkpoints/")
    assert error_lines(result)[0].endswith(": re-run the same command to resume from it")
    assert completed_epochs(out / "checkpoints")[0] == 1 and not (out / LOCK_FILE).exists()


# --- seeds that diverge (items 5 and 10) -----------------------------------------------------


def poisoned_init(seeds):
    """`init_seeds` whose given stack indices start with a NaN constant forcing: all their steps are non-finite."""
    original = run_setup.init_seeds

    def init_seeds(*args, **kwargs):
        states, progress = original(*args, **kwargs)
        bias = states.params["kernel_head"]["bias"]
        bias[...] = bias[...].at[jnp.asarray(seeds), 0].set(jnp.nan)
        return states, progress

    return init_seeds


def seed_cv(out_dir):
    return {int(r["seed"]): r for r in csv.DictReader((out_dir / "seed_cv.csv").open())}


def test_skipped_steps_are_counted_and_log_only_nan_skip(tmp_path, monkeypatch):
    monkeypatch.setattr(run_setup, "init_seeds", poisoned_init([1]))
    manifest = train_and_evaluate(tiny_run_config(tmp_path, max_consecutive_skips=2))
    rows = seed_cv(tmp_path)
    assert (rows[0]["status"], rows[0]["skipped_steps"]) == ("finished", "0")
    assert (rows[1]["status"], rows[1]["stopped_epoch"], rows[1]["skipped_steps"]) == ("diverged", "1", "2")
    assert manifest["skipped_steps"] == {"0": 0, "1": 2} and manifest["selected_seed"] == 0
    steps_per_epoch = json.loads((tmp_path / "run.json").read_text())["batches_per_epoch"]
    healthy, diverged = read_scalars(tmp_path / "seed0"), read_scalars(tmp_path / "seed1")
    # Seed 1 skipped its first two steps and then stopped: Loss/nan_skip there, no NaN in Loss/*.
    np.testing.assert_array_equal(diverged["Loss/nan_skip"][0], [0, 1])
    assert not any(tag.startswith(("Loss/spec", "Loss/tf", "Loss/total", "Train/", "Health/")) for tag in diverged)
    for tag in ("Loss/spec", "Loss/tf", "Loss/total"):
        steps, values = healthy[tag]
        np.testing.assert_array_equal(steps, np.arange(2 * steps_per_epoch))
        assert np.isfinite(values).all()
    assert "Loss/nan_skip" not in healthy


@pytest.mark.slow
def test_a_run_whose_seeds_all_diverge_stops_early_and_fails_with_status_3(tmp_path, monkeypatch):
    original, epochs_trained = SeedProgram.run_epoch, []

    def counted(self, *args, **kwargs):
        epochs_trained.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SeedProgram, "run_epoch", counted)
    monkeypatch.setattr(run_setup, "init_seeds", poisoned_init([0, 1]))
    config = tiny_run_config(tmp_path, n_epochs=4, save_freq=3, max_consecutive_skips=2)
    with pytest.raises(NoSeedSurvived, match=r"^every seed diverged \(seed 0 in training after epoch 1; seed 1 in "
                                             r"training after epoch 1\); "
                                             rf"nothing is selected, {tmp_path}/seed_cv.csv has their scores"):
        train_and_evaluate(config)
    assert len(epochs_trained) == 1 and completed_epochs(tmp_path / "checkpoints") == [1]  # saved where it stopped
    rows = seed_cv(tmp_path)
    assert [(r["status"], r["stopped_epoch"], r["skipped_steps"], r["ckpt"]) for r in rows.values()] == \
        [("diverged", "1", "2", "checkpoints/1")] * 2
    manifest = json.loads((tmp_path / "selected_model.json").read_text())
    assert manifest["selected_seed"] is None and manifest["diverged_seeds"] == [0, 1]
    # Run again: it resumes with every seed stopped, trains nothing and says the same.
    monkeypatch.setattr(SeedProgram, "run_epoch", lambda *a, **k: pytest.fail("trained again"))
    with pytest.raises(NoSeedSurvived):
        train_and_evaluate(config)


def autonomy(*segments):
    """A hand-made validation `Autonomy`: a score per vocalisation, None for a diverged rollout."""
    scores = tuple(SegmentScore(-5.0, False, np.nan, np.nan, np.nan) if s is None
                   else SegmentScore(s, True, s, 0.0, 0.0) for s in segments)
    return Autonomy(float(np.mean([s.score for s in scores])), scores,
                    {"bounded_frac": float(np.mean([s.bounded for s in scores]))})


def final_state(n_members, stopped=()):
    """The `RunState` fields that selection reads: the members and those stopped in training (after epoch 1)."""
    return RunState(None, None, tuple(range(n_members)), Records(stopped={m: 1 for m in stopped}), 2)


DIVERGED = autonomy(None, None)


@pytest.mark.parametrize("stopped,why", [
    ((), "every seed diverged (seed 0, seed 1: the autonomous rollouts of all 2 validation vocalisations)"),
    ((0,), "every seed diverged (seed 0 in training after epoch 1; seed 1: the autonomous rollouts of all 2 "
           "validation vocalisations)"),
], ids=["in_validation", "in_training_and_validation"])
def test_seeds_whose_validation_rollouts_all_diverged_are_never_selected(stopped, why):
    # Their -5.0 is the divergence sentinel: the run selects none (exit status 3) rather than hand
    # the user a model whose every output diverged.
    config, state = tiny_config("unused"), final_state(2, stopped)
    assert select(config, state, [DIVERGED, DIVERGED]) is None
    assert why_none_selected(config, state, [DIVERGED, DIVERGED]) == why


@pytest.mark.parametrize("select_by", ["mean", "median"])
@pytest.mark.parametrize("bounded", [autonomy(None, -5.0), autonomy(None, np.nan), autonomy(-4.0, 0.3)],
                         ids=["at_the_floor", "nan_score", "scored"])
def test_a_seed_bounded_on_one_validation_vocalisation_is_selected_over_diverged_ones(select_by, bounded):
    # A bounded output floored at -5.0, or with an undefined (NaN) score, still outranks the sentinel.
    config = tiny_config("unused", select_by=select_by)
    assert select(config, final_state(3), [DIVERGED, DIVERGED, bounded]) == 2
    # One stopped in training is never selected, bounded or not.
    assert select(config, final_state(3, stopped=[2]), [DIVERGED, autonomy(0.5, 0.5), bounded]) == 1


@pytest.mark.slow
def test_a_run_whose_validation_rollouts_all_diverge_fails_with_status_3(tmp_path):
    """Issue 27, item 4: --lr=10 trains every seed to parameters whose rollouts all diverge (no
    step stops them: some are finite); culling keeps one of them, and nothing is selected."""
    out = tmp_path / "run"
    result = run_cli("--flagfile=experiments/demo.flags", "--n_epochs=2", "--max_segs=64", "--n_seeds=2",
                     "--cull_frac=0.5", "--cull_keep=1", "--lr=10", f"--out_dir={out}")
    assert_one_error_line(result, 3, "error: every seed diverged (seed 0: the autonomous rollouts of all 8 validation "
                                     f"vocalisations); nothing is selected, {out}/seed_cv.csv has their scores; try a "
                                     "lower --lr or other seeds (--seed)")
    rows = seed_cv(out)
    assert [(r["status"], r["val_autonomy"], r["val_bounded_frac"]) for r in rows.values()] == \
        [("finished", "-5.0", "0.0"), ("culled", "-5.0", "0.0")]
    manifest = json.loads((out / "selected_model.json").read_text())
    assert manifest["selected_seed"] is None and "selected_test_autonomy" not in manifest
    assert not (out / "selected_autonomous_recon.wav").exists() and not (out / "test_scores.csv").exists()


@pytest.mark.slow
def test_a_run_without_a_complete_checkpoint_says_that_it_starts_again(tmp_path, monkeypatch, capsys):
    def killed_in_its_first_epoch(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SeedProgram, "run_epoch", killed_in_its_first_epoch)
    config = tiny_run_config(tmp_path)
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(config)
    out = capsys.readouterr().out
    # The first run had nothing before it; the second finds the first's records but no checkpoint.
    assert out.count(f"no complete checkpoint in {tmp_path}") == 1
    assert "training starts again from epoch 0" in out and "resuming" not in out


def tiny_data():
    """What `check_run_fits_data` reads of `TrainingData`: 24 training segments of 320 samples."""
    return SimpleNamespace(x=np.zeros((24, 320)), sample_rate=32000)


def test_spec_configs_that_do_not_fit_the_horizons_are_warnings_naming_them(tmp_path, caplog):
    # pow2 16 -> 64 over 4 epochs: H = 16, 16, 32, 64.
    config = tiny_config(tmp_path, h_min=16, h_max=64, spec_configs=((32, 8), (64, 16), (128, 32)))
    with caplog.at_level(logging.WARNING):
        check_run_fits_data(config, tiny_data())
    messages = [r.getMessage() for r in caplog.records]
    assert "--spec_configs: 128,32 never used: its n_fft is above the longest rollout horizon of the run, 64 " \
           "samples" in messages
    assert "--spec_configs: no entry has an n_fft within the rollout horizons 16, so those epochs use 16,4 at H=16 " \
           "instead (docs/method.md, \"Objective\"); add a shorter entry to choose their STFT" in messages
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        check_run_fits_data(tiny_config(tmp_path), tiny_data())
    assert not caplog.records
