"""What a run records about itself (SPEC h, i; docs/cli.md "Outputs").

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

from ouroboros_jax.dynamics import RolloutConfig, resolve_rollout_kernel
from ouroboros_jax.errors import InputError
from ouroboros_jax.model.selective_scan import resolve_scan_impl
from ouroboros_jax.training.sweep import member_name, member_seed, member_settings


def run_info(config, sample_rate, batches_per_epoch, n_segments, **extra) -> dict:
    """The content of run.json: what tools need to read the run (`trained.load_run`, `monitor`, `plot`)."""
    return {"config": config.fingerprint(), "n_epochs": config.n_epochs, "batches_per_epoch": batches_per_epoch,
            "n_segments": n_segments, "sample_rate": sample_rate, "seeds": list(range(config.n_members)),
            "member_names": [member_name(config, k) for k in range(config.n_members)],
            "cull_epoch": config.cull_epoch if config.culling else None, **extra}


def member_folder(info: dict, seed_id: int) -> str:
    """The TensorBoard folder of seed (member) `seed_id` of the run whose run.json is `info`."""
    names = info.get("member_names")  # absent from runs made before sweeps
    return names[info["seeds"].index(seed_id)] if names else f"seed{seed_id}"


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
    # A run made before --rollout_kernel existed resumes with its default (the kernels agree to rounding).
    changed = _first_difference({"rollout_kernel": "auto", **meta["config"]}, config.fingerprint())
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
                                                   "cold_start", "rescale")},
            "status": status, "stopped_epoch": stopped_epoch, "skipped_steps": int(skipped_steps)}


def _versions() -> dict:
    import ouroboros_jax

    return {"ouroboros_jax": ouroboros_jax.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "python": platform.python_version()}


def manifest_fields(config, data, skips: dict, device: dict) -> dict:
    """The manifest's fields that do not depend on the selection: the data, every setting, versions, device.

    Args:
      config: the run's `RunConfig`.
      data: its `TrainingData`.
      skips: seed id -> skipped (non-finite) steps over the run, every seed.
      device: the devices it ran on (`runtime.Runtime.describe`).
    """
    d, m = config.data, config.model
    return {
        "data_dir": str(d.data_dir), "syllables": list(d.syllables), "annotation_format": d.annotation_format,
        "annotation_dir": d.annotation_dir, "n_train_files": len(data.files.train), "n_val_files": len(data.files.val),
        "n_test_files": len(data.files.test), "context_len_s": d.context_len, "silence_prefix_ms": d.silence_prefix_ms,
        "silence_suffix_ms": d.silence_suffix_ms, "ratio": list(d.ratio), "max_segs": d.max_segs,
        "n_train_segments": len(data.x), "drive_lowpass_ms": m.drive_lowpass_ms, "keep_const": m.keep_const,
        "osc_init": m.osc_init, "lam_spec": config.loss.lam_spec, "lam_tf": config.loss.lam_tf,
        "lam_env": config.loss.lam_env, "lam_env_log": config.loss.lam_env_log, "env_log_eps": config.env_log_eps,
        "env_ms": config.env_ms, "spec_configs": [list(c) for c in config.spec_configs], "H_min": config.h_min,
        "H_max": config.h_max, "H_schedule": config.h_schedule, "rollout_backend": config.rollout_backend,
        "deer_max_iter": config.deer_max_iter, "deer_tol": config.deer_tol,
        "spec_warmup_epochs": config.spec_warmup_epochs, "env_warmup_epochs": config.env_warmup_epochs,
        "ic_noise_rms": config.ic_noise_rms, "sr": data.sample_rate, "lr": config.lr,
        "lr_schedule": config.lr_schedule, "n_epochs": config.n_epochs, "n_seeds": config.n_seeds,
        "cull_frac": config.cull_frac, "cull_keep": config.cull_keep, "n_kernels": m.n_kernels,
        "n_layers": m.n_layers, "d_state": m.d_state, "d_conv": m.d_conv, "expand_factor": m.expand_factor,
        "grad_clip": config.grad_clip, "batch_size": config.batch_size, "seed": d.seed, "bound_x": config.bound_x,
        "bound_v": config.bound_v, "clamp_stages": config.clamp_stages, "loss_mode": config.loss_mode,
        "encoder_scan": resolve_scan_impl(m.scan_impl), "unroll": config.unroll,
        "rollout_kernel": resolve_rollout_kernel(RolloutConfig(kernel=config.rollout_kernel)),
        "max_consecutive_skips": config.max_consecutive_skips, "sweep": [[k, list(v)] for k, v in config.sweep],
        "n_members": config.n_members,
        "matmul_precision": config.matmul_precision, "seed_chunk": config.seed_chunk, "media_seeds": config.media_seeds,
        "skipped_steps": {str(k): int(v) for k, v in sorted(skips.items())}, "versions": _versions(),
        "device": device, "command": sys.argv,
    }
