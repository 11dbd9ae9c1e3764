"""What a run records about itself (docs/cli.md, "Outputs in `--out_dir`").

run.json (what tools need to read the run), the bookkeeping saved with every checkpoint, the
rows of seed_cv.csv, the fields of selected_model.json, and the check that a resumed run is the
run its checkpoints hold. The functions build JSON-able values; `run.py` writes them.
"""

import pathlib
import platform
import sys

import flax
import jax
import numpy as np
import optax

from ouroboros_jax import settings
from ouroboros_jax.errors import InputError
from ouroboros_jax.model.selective_scan import resolve_scan_impl
from ouroboros_jax.ode.dynamics import resolve_rollout_kernel
from ouroboros_jax.scoring.evaluation import autonomy_summary, correct
from ouroboros_jax.scoring.listening import lead_in_level_db
from ouroboros_jax.training.sweep import member_name, member_seed, member_settings


def run_info(config, kernels: dict, sample_rate, batches_per_epoch, n_segments, **extra) -> dict:
    """The content of run.json: what tools need to read the run (`trained.load_run`, `monitor`, `plot`);
    `kernels` are the ones it runs (`resolved_kernels`, as `setup.Setup.kernels`)."""
    return {"config": config.fingerprint(), "n_epochs": config.n_epochs, "batches_per_epoch": batches_per_epoch,
            "n_segments": n_segments, "sample_rate": sample_rate, "seeds": list(range(config.n_members)),
            "member_names": [member_name(config, k) for k in range(config.n_members)],
            "cull_epoch": config.cull_epoch if config.culling else None, "kernels": kernels, **extra}


def resolved_kernels(config) -> dict:
    """The kernels the run's encoder scan and rollout kernel settings stand for here ("auto" resolved,
    the rollout's beside the encoders', `dynamics.resolve_rollout_kernel`); resolved once, when the
    run is set up (`setup.Setup.build`), which records them."""
    encoder_scan = resolve_scan_impl(config.model.scan_impl, config.model.d_inner)
    return {"encoder_scan": encoder_scan,
            "rollout_kernel": resolve_rollout_kernel(config.rollout, encoder_scan=encoder_scan)}


def checkpoint_meta(config, seed_ids, rows: list, stopped: dict, skips: dict, n_stacked: int) -> dict:
    """The bookkeeping saved with each checkpoint.

    Args:
      config: the run's `RunConfig`.
      seed_ids: the seed ids of the checkpoint's stack, in stack order.
      rows: seed_cv.csv rows of the seeds removed from the stack so far (culled ones).
      stopped: seed id -> the epoch after which it was stopped as diverged.
      skips: seed id -> skipped (non-finite) steps so far.
      n_stacked: the length of the saved stack: the seeds, then inactive padding members
        (`runtime.Runtime.n_stacked`).
    """
    return {"seed_ids": list(seed_ids), "rows": rows, "stopped": stopped, "skips": skips,
            "config": config.fingerprint(), "n_epochs": config.n_epochs, "n_stacked": n_stacked}


def read_checkpoint_meta(meta: dict) -> tuple[list, list, dict, dict, int]:
    """(seed_ids, rows, stopped, skips, n_stacked) of `checkpoint_meta`; JSON keeps dict keys as strings."""
    stopped = {int(k): v for k, v in meta["stopped"].items()}
    skips = {int(k): v for k, v in meta.get("skips", {}).items()}  # absent before skip counts were kept
    # A checkpoint from before the padding holds exactly its seeds.
    return meta["seed_ids"], meta["rows"], stopped, skips, meta.get("n_stacked", len(meta["seed_ids"]))


def check_resumable(out_dir: pathlib.Path, config, meta: dict, completed: int) -> None:
    """Refuses to resume a run with other settings, or with fewer epochs than it was run for.

    Args:
      out_dir: the run directory.
      config: the settings of this invocation.
      meta: the newest checkpoint's `checkpoint_meta`.
      completed: the epochs that checkpoint has completed.

    Raises:
      InputError: a setting differs (the first is named), or --n_epochs is below the run's.
    """
    # Read back as a config first, so that a record of an older layout compares by its values.
    saved = type(config).from_record(meta["config"], config.out_dir, config.n_epochs).fingerprint()
    changed = _first_difference(saved, config.fingerprint())
    if changed:
        raise InputError(f"{out_dir} holds a run made with different settings ({changed}); re-run with the same "
                         "flags to resume, or choose a new --out_dir")
    planned = max(meta.get("n_epochs", completed), completed)  # n_epochs is absent from older checkpoints
    if config.n_epochs < planned:
        raise InputError(f"--n_epochs={config.n_epochs}: {out_dir} holds a run of {planned} epochs ({completed} "
                         f"done); a run only continues upward: pass --n_epochs={planned} or more, or choose a new "
                         "--out_dir")


def _first_difference(saved, now, prefix=""):
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            diff = _first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return ""
    return "" if saved == now else f"{prefix.rstrip('.')}: {saved!r} then, {now!r} now"


def seed_row(config, seed_id, score, breakdown, ckpt, status, stopped_epoch, skipped_steps) -> dict:
    """One row of seed_cv.csv (`outputs.SEED_CV_COLUMNS`); in a sweep led by the member's index and
    swept settings, its "seed" then being the member's seed."""
    sweep = {"member": int(seed_id), **member_settings(config, seed_id)} if config.sweep else {}
    return {**sweep, "seed": member_seed(seed_id, config.n_seeds), "val_autonomy": score, "ckpt": ckpt,
            **{f"val_{k}": breakdown[k] for k in ("spec_corr", "amp_pen", "pitch_pen", "bounded_frac",
                                                   "cold_start", "rescale", "lead_in_db", "onset_delay_ms")},
            "status": status, "stopped_epoch": stopped_epoch, "skipped_steps": int(skipped_steps)}


VOCALISATION_COLUMNS = ("file", "onset_s", "offset_s", "lead_in_ms", "score", "bounded", "spec_corr", "amp_pen",
                        "pitch_pen", "lead_in_db", "onset_delay_ms", "target_lead_in_db")


def vocalisation_rows(vocalisations, score, sample_rate: float) -> list[tuple]:
    """val_scores.csv / test_scores.csv: one row per vocalisation (`VOCALISATION_COLUMNS`) of a
    member's `Autonomy` `score` on the `Vocalisations`; target_lead_in_db is the vocalisation's
    own lead-in level, as the model's is measured (`listening.lead_in_level_db`)."""
    rows = []
    for i, segment in enumerate(score.segments):
        lead_in = int(vocalisations.lead_ins[i])
        target = lead_in_level_db(correct(vocalisations.window(i)), lead_in)
        rows.append((vocalisations.files[i].name, round(float(vocalisations.onsets[i]), 6),
                     round(float(vocalisations.offsets[i]), 6), 1000.0 * lead_in / sample_rate, segment.score,
                     segment.bounded, segment.spec_corr, segment.amp_pen, segment.pitch_pen, segment.lead_in_db,
                     segment.onset_delay_ms, target))
    return rows


def versions() -> dict:
    """The versions of ours and the libraries that decide the numbers (for the manifest and reports)."""
    import ouroboros_jax

    return {"ouroboros_jax": ouroboros_jax.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "python": platform.python_version()}


def manifest_fields(config, kernels: dict, data, skips: dict, device: dict) -> dict:
    """The manifest's fields that do not depend on the selection: every setting by its flag's name,
    the data, versions, device.

    Args:
      config: the run's `RunConfig`.
      kernels: the kernels it runs (`resolved_kernels`).
      data: its `TrainingData`.
      skips: seed id -> skipped (non-finite) steps over the run, every seed.
      device: the devices it ran on (`runtime.Runtime.describe`).
    """
    values = settings.flat(config)
    return {
        **values, "data_dir": str(values["data_dir"]), **kernels,
        # The reference's names of these.
        "context_len_s": values["context_len"], "H_min": config.h_min, "H_max": config.h_max,
        "H_schedule": config.h_schedule, "sr": data.sample_rate,
        "n_train_files": len(data.files.train), "n_val_files": len(data.files.val),
        "n_test_files": len(data.files.test),
        "n_train_segments": len(data.x), "n_members": config.n_members,
        "skipped_steps": {str(k): int(v) for k, v in sorted(skips.items())}, "versions": versions(),
        "device": device, "command": sys.argv,
    }


def selection_fields(config, member: int, stack_index: int, score, epoch: int, stopped: dict) -> dict:
    """The manifest's fields of the selected member: who it is, its validation `Autonomy` `score`
    (with its `autonomy_summary`), its checkpoint (the run's last, after `epoch` epochs);
    `stopped`: the diverged members."""
    return {"selected_seed": member, "selected_lambda": config.objective.lam, "selected_val_autonomy": score.score,
            "selected_val_breakdown": score.breakdown, "selected_val_summary": autonomy_summary(score),
            "diverged_seeds": sorted(stopped),
            "selected_checkpoint": f"checkpoints/{epoch}", "selected_stack_index": stack_index,
            "selected_member": {"name": member_name(config, member), "seed": member_seed(member, config.n_seeds),
                                **member_settings(config, member)}}
