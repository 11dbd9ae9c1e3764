"""A run directory: the names of what a run writes there, and reading its run.json back.

Every command that reads a run (train resuming it, synthesize, plot, monitor, convert) finds its
files through these names and reads run.json through `read_run_info`, so a folder that is not a
run, or a damaged run.json, gets the same one line everywhere. `check_ours` keeps a run from
writing into a folder holding another tool's files (docs/cli.md, "What a run writes").
"""

import json
import pathlib

from ouroboros_jax.errors import InputError

RUN_INFO, MANIFEST, SEED_CV = "run.json", "selected_model.json", "seed_cv.csv"
WAV, SPECGRAM = "selected_autonomous_recon.wav", "selected_specgram.png"
VAL_SCORES, TEST_SCORES = "val_scores.csv", "test_scores.csv"
REPORT = "report.html"
CHECKPOINTS = "checkpoints"
LOCK_FILE, LIBRARIES_LOG = "run.lock", "libraries.log"


def checkpoints_dir(run_dir) -> pathlib.Path:
    return pathlib.Path(run_dir) / CHECKPOINTS


def read_json_object(path: pathlib.Path) -> dict | None:
    """The JSON object in the file `path` (run.json, selected_model.json, ...); None where it cannot
    be read as one (damaged). Raises FileNotFoundError when there is no such file."""
    try:
        value = json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_run_info(run_dir, flag: str = "--run_dir") -> dict:
    """The content of `run_dir`/run.json.

    Raises:
      InputError: no run.json (not a run), or one that is not a JSON object (damaged).
    """
    path = pathlib.Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise InputError(f"{flag}={run_dir}: no {RUN_INFO}; pass the --out_dir of a training run")
    info = read_json_object(path)
    if info is None or not {"config", "seeds", "sample_rate", "n_epochs"} <= info.keys():
        raise InputError(f"{flag}={run_dir}: {path} is damaged (not the run.json a run writes); it cannot be read "
                         "as a run")
    return info


def member_folder(info: dict, seed_id: int) -> str:
    """The TensorBoard folder of seed (member) `seed_id` of the run whose run.json is `info`."""
    names = info.get("member_names")  # absent from runs made before sweeps
    return names[info["seeds"].index(seed_id)] if names else f"seed{seed_id}"


def check_ours(out_dir: pathlib.Path) -> None:
    """Refuses an `out_dir` that holds files a run of ours did not write, before anything is written.

    A run of ours is a folder with our run.json (whatever else its user put there); before its
    run.json a run has written at most its lock, libraries.log and an unfinished checkpoint. An
    empty folder is fine. Another tool's run (the PyTorch reference writes seed_cv.csv and
    selected_model.json too) is refused, so that nothing of it is overwritten.

    Raises:
      InputError: naming a few of the entries that are not ours, or a damaged run.json.
    """
    if (out_dir / RUN_INFO).exists():
        read_run_info(out_dir, "--out_dir")
        return
    checkpoints = checkpoints_dir(out_dir)
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in {LOCK_FILE, LIBRARIES_LOG, CHECKPOINTS})
    if checkpoints.is_dir():  # Orbax's temporary folders only: a save cut short
        foreign += sorted(f"{CHECKPOINTS}/{p.name}" for p in checkpoints.iterdir() if ".orbax-checkpoint-tmp" not in p.name)
    elif checkpoints.exists():
        foreign.append(CHECKPOINTS)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise InputError(f"--out_dir={out_dir}: holds files that are not a run of ours ({', '.join(foreign[:3])}{more}) "
                         "and no run.json; choose a new or empty directory (nothing was changed)")


def remove_if_unused(out_dir: pathlib.Path) -> None:
    """Removes `out_dir` if a run made it and was refused before it wrote anything but its library
    log and an empty checkpoints folder; anything else keeps it."""
    checkpoints = checkpoints_dir(out_dir)
    if checkpoints.is_dir() and not any(checkpoints.iterdir()):
        checkpoints.rmdir()
    if {p.name for p in out_dir.iterdir()} <= {LIBRARIES_LOG}:
        (out_dir / LIBRARIES_LOG).unlink(missing_ok=True)
        out_dir.rmdir()
