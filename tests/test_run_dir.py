"""A run directory that is damaged or not ours (issue 27): a damaged checkpoint never loses a run,
another tool's folder is never written, and every command that reads a run says in one line what
is damaged (ouroboros_jax/training/run_dir.py, checkpoints.py)."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from ouroboros_jax.errors import InputError, WriteError
from ouroboros_jax.training import lock as lock_module
from ouroboros_jax.training import run as run_module
from ouroboros_jax.training.checkpoints import completed_epochs
from ouroboros_jax.training.monitoring import read_run_info
from ouroboros_jax.training.run import train_and_evaluate
from ouroboros_jax.training.run_dir import MANIFEST, RUN_INFO, SEED_CV, WAV
from ouroboros_jax.training.trained import load_run
from tests.test_run import REPO, tiny_run_config


def _truncate_arrays(checkpoint: pathlib.Path) -> None:
    for path in (checkpoint / "state" / "d").iterdir():
        os.truncate(path, 100)


DAMAGES = {  # how a checkpoint is found damaged: a disk that filled, a copy cut short, a file lost
    "truncated arrays": _truncate_arrays,
    "cut-short array metadata": lambda checkpoint: os.truncate(checkpoint / "state" / "_METADATA", 50),
    "lost bookkeeping": lambda checkpoint: (checkpoint / "meta" / "metadata").unlink(),
}


def copy_of(tiny_run, tmp_path) -> pathlib.Path:
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run[0], run_dir)
    return run_dir


def hashes(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# pytest swaps sys.unraisablehook for its own in each test, around the filter that drops the
# abandoned reads of a failed restore (checkpoints._silence_abandoned_reads), so here they surface
# as pytest warnings; the CLI test below checks that a user sees none.
ABANDONED_READS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@ABANDONED_READS
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_named_in_one_line_and_the_one_before_still_reads(tiny_run, tmp_path, damage):
    run_dir = copy_of(tiny_run, tmp_path)
    DAMAGES[damage](run_dir / "checkpoints" / "2")
    with pytest.raises(InputError, match=rf"^the checkpoint {run_dir}/checkpoints/2 is damaged \(.+\); pass "
                                         r"--epoch=E with E one of \[1\] to read another$"):
        load_run(run_dir)
    assert load_run(run_dir, epoch=1).epoch == 1


@ABANDONED_READS
def test_a_run_whose_newest_checkpoint_is_truncated_resumes_from_the_one_before_and_ends_alike(tiny_run, tmp_path,
                                                                                             caplog):
    run_dir = copy_of(tiny_run, tmp_path)
    _truncate_arrays(run_dir / "checkpoints" / "2")
    for name in (SEED_CV, MANIFEST, WAV):  # so that the outputs compared below are this run's
        (run_dir / name).unlink()
    manifest = train_and_evaluate(tiny_run_config(run_dir, batch_size=6))
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(damaged) == 1 and damaged[0].startswith(f"the checkpoint {run_dir}/checkpoints/2 is damaged (")
    assert f"set aside as {run_dir}/checkpoints/2.damaged" in damaged[0]
    assert completed_epochs(run_dir / "checkpoints") == [1, 2] and (run_dir / "checkpoints" / "2.damaged").is_dir()
    original = tiny_run[0]
    for name in (SEED_CV, WAV):
        assert (run_dir / name).read_bytes() == (original / name).read_bytes(), name
    scores = {k: v for k, v in tiny_run[1].items() if "autonomy" in k or "breakdown" in k or k == "selected_seed"}
    assert scores and {k: manifest[k] for k in scores} == scores


@ABANDONED_READS
def test_when_every_checkpoint_is_damaged_the_run_starts_again_from_epoch_0(tiny_run, tmp_path, monkeypatch,
                                                                           caplog):
    run_dir = copy_of(tiny_run, tmp_path)
    for epoch in (1, 2):
        _truncate_arrays(run_dir / "checkpoints" / str(epoch))

    class FreshStart(Exception):
        pass

    def init_run(*args):
        raise FreshStart

    monkeypatch.setattr(run_module, "init_run", init_run)
    with pytest.raises(FreshStart):
        train_and_evaluate(tiny_run_config(run_dir, batch_size=6))
    assert completed_epochs(run_dir / "checkpoints") == []
    assert sum("is damaged" in r.getMessage() for r in caplog.records) == 2


def test_plot_on_a_damaged_run_is_one_line_without_a_background_traceback(tiny_run, tmp_path):
    run_dir = copy_of(tiny_run, tmp_path)
    _truncate_arrays(run_dir / "checkpoints" / "2")
    before = hashes(run_dir)
    result = subprocess.run([sys.executable, "-m", "ouroboros_jax.plot", "specgram", f"--run_dir={run_dir}",
                             f"--out={tmp_path / 'specgram.png'}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Event loop" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: the checkpoint {run_dir}/checkpoints/2 is "
                                                              "damaged (")
    assert not (tmp_path / "specgram.png").exists() and hashes(run_dir) == before


def test_a_run_without_its_checkpoints_folder_is_one_line_and_none_is_made(tiny_run, tmp_path):
    run_dir = copy_of(tiny_run, tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    with pytest.raises(InputError, match=rf"^--run_dir={run_dir}: no checkpoint yet"):
        load_run(run_dir)
    assert not (run_dir / "checkpoints").exists()  # Orbax's manager (and its threads) never started


@pytest.mark.parametrize("layout,named", [
    ({"seed_cv.csv": "seed,val_autonomy\n0,0.2\n", "selected_model.json": "{}", "seed0/model.pt": "torch"},
     "seed0, seed_cv.csv, selected_model.json"),  # the PyTorch reference's output
    ({"checkpoints/5/model.pt": "torch"}, "checkpoints/5"),
    ({"notes.txt": "mine"}, "notes.txt"),
])
def test_a_folder_holding_another_tool_s_files_is_refused_and_left_as_it_was(tmp_path, layout, named):
    out_dir = tmp_path / "theirs"
    for name, text in layout.items():
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_text(text)
    before = hashes(out_dir)
    with pytest.raises(InputError, match=rf"^--out_dir={out_dir}: holds files that are not a run of ours \({named}\) "
                                         r"and no run.json; choose a new or empty directory \(nothing was changed\)$"):
        train_and_evaluate(tiny_run_config(out_dir))
    assert hashes(out_dir) == before and sorted(p.name for p in out_dir.iterdir()) == sorted(
        {name.split("/")[0] for name in layout})


def test_a_damaged_run_json_is_the_same_line_for_every_reader(tiny_run, tmp_path):
    run_dir = copy_of(tiny_run, tmp_path)
    (run_dir / RUN_INFO).write_text('{"config": ')
    line = f"={run_dir}: {run_dir / RUN_INFO} is damaged (not the run.json a run writes); it cannot be read as a run"
    for read, flag in ((load_run, "--run_dir"), (read_run_info, "--run_dir"),
                       (lambda d: train_and_evaluate(tiny_run_config(d, batch_size=6)), "--out_dir")):
        with pytest.raises(InputError) as error:
            read(run_dir)
        assert str(error.value) == flag + line
    (run_dir / RUN_INFO).write_text(json.dumps([1, 2]))
    with pytest.raises(InputError, match="is damaged"):
        load_run(run_dir)


def test_a_refused_input_creates_no_out_dir(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="^--data_dir="):
        train_and_evaluate(tiny_run_config(tmp_path / "new" / "run", data_dir=str(tmp_path / "no_recordings")))
    assert not (tmp_path / "new").exists()

    def refused(config, out_dir, *args):  # a refusal found once the folder is made
        (out_dir / "checkpoints").mkdir()
        raise InputError("--some_flag=1: refused")

    monkeypatch.setattr(run_module, "_train_and_finish", refused)
    with pytest.raises(InputError, match="^--some_flag=1: refused$"):
        train_and_evaluate(tiny_run_config(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    (tmp_path / "run").mkdir()  # a folder the user made is theirs: kept
    with pytest.raises(InputError):
        train_and_evaluate(tiny_run_config(tmp_path / "run"))
    assert (tmp_path / "run").is_dir()


def test_a_read_only_file_system_is_a_write_failure_that_names_the_last_checkpoint(tiny_run, tmp_path, monkeypatch):
    run_dir = copy_of(tiny_run, tmp_path)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")  # errno.EROFS

    monkeypatch.setattr(lock_module.os, "open", read_only)
    with pytest.raises(WriteError) as error:
        train_and_evaluate(tiny_run_config(run_dir, batch_size=6))
    assert str(error.value).startswith(f"cannot write {run_dir}/run.lock: Read-only file system (")
    assert str(error.value).endswith(f"the last complete checkpoint is {run_dir}/checkpoints/2: re-run the same "
                                     "command to resume from it")
    assert error.value.exit_status == 4
