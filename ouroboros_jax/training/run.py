"""The main job: seed cross-validation, culling, selection and outputs (SPEC h, i).

`train_and_evaluate(config)` reads the data, trains every seed in one compiled program per
epoch, scores them on the held-out cold-start vocalisations after every epoch, culls, selects
the best seed, scores it on the test vocalisations and writes the outputs. Re-running the same
config resumes from the newest checkpoint; a finished run is not retrained.
"""

import dataclasses
import json
import pathlib
import platform
import sys
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx

from ouroboros_jax.curriculum import horizon_for_epoch, warmup_weights
from ouroboros_jax.data import Category, DataConfig, TrainingData, load_training_data
from ouroboros_jax.derivatives import first_derivative
from ouroboros_jax.dynamics import RolloutConfig
from ouroboros_jax.errors import InputError
from ouroboros_jax.evaluation import autonomy_score, correct, generate, rank_seeds
from ouroboros_jax.figures import DPI, specgram_figure
from ouroboros_jax.losses import DEFAULT_STFT_CONFIGS, LossWeights, teacher_acceleration_variance
from ouroboros_jax.model.selective_scan import resolve_scan_impl
from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.training.checkpoints import Checkpoints
from ouroboros_jax.training.logbook import Logbook, console
from ouroboros_jax.training.outputs import write_json, write_png, write_seed_cv, write_wav
from ouroboros_jax.training.seeds import SeedData, SeedProgram, SeedProgress, init_seeds, n_batches, seed_keys, select_seeds
from ouroboros_jax.training.step import LOSS_MODES, ROLLOUT_BACKENDS, StepConfig, TrainState, make_optimizer, model_graphdef

LR_SCHEDULES = ("constant", "cosine")
MANIFEST, SEED_CV, WAV, RUN_INFO = "selected_model.json", "seed_cv.csv", "selected_autonomous_recon.wav", "run.json"
SPECGRAM = "selected_specgram.png"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; built from the flags in one place (`ouroboros_jax.train`).

    `model.sample_rate` is replaced by the data's sample rate at run time.
    """

    data: DataConfig
    model: ModelConfig = ModelConfig()
    out_dir: str = "poly_spectral"
    n_epochs: int = 50
    lr: float = 1e-3
    lr_schedule: str = "constant"
    n_seeds: int = 4
    cull_frac: float = 0.0
    cull_keep: int = 2
    save_freq: int = 5
    max_saved: int = 60
    batch_size: int = 8
    loss: LossWeights = LossWeights()
    env_ms: float = 2.0
    env_log_eps: float = 1e-4
    spec_configs: tuple = DEFAULT_STFT_CONFIGS
    h_min: int = 512
    h_max: int = 2048
    h_schedule: str = "geom"
    spec_warmup_epochs: int = 5
    env_warmup_epochs: int = 0
    ic_noise_rms: float = 1e-3
    grad_clip: float = 5.0
    bound_x: float = 0.5
    bound_v: float = 1.0
    clamp_stages: bool = True
    unroll: int = 1
    rollout_backend: str = "scan"
    deer_max_iter: int = 30
    deer_tol: float = 1e-6
    loss_mode: str = "spectral_rollout"
    lam: float = 1.068
    max_consecutive_skips: int = 50

    def __post_init__(self):
        def check(ok, flag, value, why):
            if not ok:
                raise InputError(f"--{flag}={value}: {why}")

        check(self.n_epochs >= 1, "n_epochs", self.n_epochs, "must be at least 1")
        check(self.n_seeds >= 1, "n_seeds", self.n_seeds, "must be at least 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        check(self.lr > 0, "lr", self.lr, "must be positive")
        check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", self.lr_schedule, f"must be one of {LR_SCHEDULES}")
        check(self.loss_mode in LOSS_MODES, "loss_mode", self.loss_mode, f"must be one of {LOSS_MODES}")
        check(self.rollout_backend in ROLLOUT_BACKENDS, "rollout_backend", self.rollout_backend,
              f"must be one of {ROLLOUT_BACKENDS}")
        check(0 <= self.cull_frac < 1, "cull_frac", self.cull_frac, "must be in [0, 1); 0 disables culling")
        check(self.cull_frac == 0 or 1 <= self.cull_keep < self.n_seeds, "cull_keep", self.cull_keep,
              f"culling (--cull_frac={self.cull_frac}) must keep between 1 and --n_seeds-1={self.n_seeds - 1} seeds")
        check(1 <= self.h_min <= self.h_max, "h_min", self.h_min, f"must be in [1, --h_max={self.h_max}]")
        check(self.save_freq >= 0, "save_freq", self.save_freq, "must be >= 0 (0: only at the end)")
        check(self.max_saved >= 1, "max_saved", self.max_saved, "must be at least 1")
        check(self.grad_clip > 0, "grad_clip", self.grad_clip, "must be positive")
        check(self.bound_x > 0 and self.bound_v > 0, "bound_x", self.bound_x, "bounds must be positive")
        check(self.unroll >= 1, "unroll", self.unroll, "must be at least 1")
        check(self.deer_max_iter >= 1, "deer_max_iter", self.deer_max_iter, "must be at least 1")
        check(self.deer_tol > 0, "deer_tol", self.deer_tol, "must be positive")
        check(self.max_consecutive_skips >= 1, "max_consecutive_skips", self.max_consecutive_skips, "must be >= 1")
        check(all(n >= 1 and h >= 1 for n, h in self.spec_configs), "spec_configs", self.spec_configs,
              "needs positive n_fft,hop pairs")

    @property
    def culling(self) -> bool:
        return 0 < self.cull_frac < 1 and self.cull_keep < self.n_seeds

    @property
    def cull_epoch(self) -> int:
        return max(1, round(self.cull_frac * self.n_epochs))

    @classmethod
    def from_record(cls, fields: dict, out_dir: str, n_epochs: int) -> "RunConfig":
        """The config whose `fingerprint()` is `fields` (as stored in run.json and checkpoints)."""
        f = dict(fields)
        f["data"] = DataConfig(**{**f["data"], "ratio": tuple(f["data"]["ratio"])})
        f["model"] = ModelConfig(**f["model"])
        f["loss"] = LossWeights(*f["loss"])
        f["spec_configs"] = tuple(map(tuple, f["spec_configs"]))
        return cls(**f, out_dir=out_dir, n_epochs=n_epochs)

    def fingerprint(self) -> dict:
        """What must not change when a run is resumed (everything but the output dir and the epochs)."""
        fields = dataclasses.asdict(self)
        fields.pop("out_dir")
        fields.pop("n_epochs")
        return json.loads(json.dumps(fields, default=str))


def run_info(config: RunConfig, sample_rate, batches_per_epoch, n_segments, **extra) -> dict:
    """The content of run.json: what tools need to read the run (`trained.load_run`, `monitor`, `plot`)."""
    return {"config": config.fingerprint(), "n_epochs": config.n_epochs, "batches_per_epoch": batches_per_epoch,
            "n_segments": n_segments, "sample_rate": sample_rate, "seeds": list(range(config.n_seeds)),
            "cull_epoch": config.cull_epoch if config.culling else None, **extra}


def checkpoint_meta(config: RunConfig, seed_ids, rows: list, stopped: dict) -> dict:
    """The bookkeeping saved with each checkpoint: its stack's seed ids, removed seeds' rows, stop epochs."""
    return {"seed_ids": list(seed_ids), "rows": rows, "stopped": stopped, "config": config.fingerprint()}


def _learning_rate(config: RunConfig, steps_per_epoch: int):
    if config.lr_schedule == "cosine":
        return optax.cosine_decay_schedule(config.lr, config.n_epochs * steps_per_epoch)
    return config.lr


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a run builds from its config and data: model config, optimiser, integrator, program."""

    model: ModelConfig
    optimizer: optax.GradientTransformation
    rollout: RolloutConfig
    program: SeedProgram

    @classmethod
    def build(cls, config: RunConfig, sample_rate: float, steps_per_epoch: int) -> "Setup":
        model = dataclasses.replace(config.model, sample_rate=float(sample_rate))
        optimizer = make_optimizer(_learning_rate(config, steps_per_epoch), config.grad_clip)
        rollout = RolloutConfig(step_size=1.0 / model.time_scale, bound_x=config.bound_x, bound_v=config.bound_v,
                                clamp_stages=config.clamp_stages, unroll=config.unroll)
        program = SeedProgram(model_graphdef(model), optimizer, config.batch_size, config.max_consecutive_skips,
                              rollout)
        return cls(model, optimizer, rollout, program)

    def restore(self, checkpoints: Checkpoints, epoch: int, seed: int, seed_ids) -> tuple[TrainState, SeedProgress]:
        """The stacked states of `seed_ids` saved at `epoch`."""
        like = jax.eval_shape(lambda: init_seeds(self.model, self.optimizer, seed_keys(seed, seed_ids)))
        return checkpoints.restore(epoch, like)


def _step_config(config: RunConfig, horizon: int, sample_rate: float, rollout: RolloutConfig) -> StepConfig:
    return StepConfig(
        horizon=horizon, loss_mode=config.loss_mode, stft_configs=tuple(map(tuple, config.spec_configs)),
        env_sigma=config.env_ms / 1000.0 * sample_rate, env_log_eps=config.env_log_eps,
        use_env=config.loss.lam_env > 0, use_env_log=config.loss.lam_env_log > 0, ic_noise_rms=config.ic_noise_rms,
        rollout=rollout, penalty_lam=config.lam if config.loss_mode == "mse_accel" else None,
        rollout_backend=config.rollout_backend, deer_max_iter=config.deer_max_iter, deer_tol=config.deer_tol,
    )


def _score_seeds(vocalisations, outputs, sample_rate, rescale=False):
    """Autonomy of every seed: a (score, breakdown) per seed.

    Args:
      vocalisations: (V, n) raw vocalisations.
      outputs: (S, V, n) the seeds' raw autonomous outputs on them (`SeedProgram.autonomous_outputs`).
      sample_rate: Hz.
      rescale: score the outputs rescaled to the vocalisations' level.
    """
    return [autonomy_score(vocalisations, out, sample_rate, rescale=rescale, cold_start=True)[::2] for out in outputs]


def _seed_row(seed_id, score, breakdown, ckpt, status, stopped_epoch) -> dict:
    return {"seed": int(seed_id), "val_autonomy": score, "ckpt": ckpt,
            **{f"val_{k}": breakdown[k] for k in ("spec_corr", "amp_pen", "pitch_pen", "bounded_frac",
                                                   "cold_start", "rescale")},
            "status": status, "stopped_epoch": stopped_epoch}


def _cull(config: RunConfig, epoch: int, seed_ids, scores, active: np.ndarray, stopped: dict, rows: list) -> list[int]:
    """Ranks the seeds by validation autonomy, records the culled ones in `rows`, returns the kept indices."""
    order = rank_seeds(np.array([s for s, _ in scores]), np.array([b["bounded_frac"] for _, b in scores]), ~active)
    keep = sorted(order[: config.cull_keep].tolist())
    for k in sorted(set(range(len(seed_ids))) - set(keep)):
        status = "diverged" if seed_ids[k] in stopped else "culled"
        rows.append(_seed_row(seed_ids[k], *scores[k], f"checkpoints/{epoch}", status, stopped.get(seed_ids[k], epoch)))
    console("culling after epoch %d: keeping seeds %s", epoch, [seed_ids[k] for k in keep])
    return keep


def _versions() -> dict:
    import ouroboros_jax

    return {"ouroboros_jax": ouroboros_jax.__version__, "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _device() -> dict:
    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices),
            "processes": jax.process_count()}


def _check_resumable(out_dir: pathlib.Path, config: RunConfig, meta: dict) -> None:
    saved, now = meta["config"], config.fingerprint()
    changed = _first_difference(saved, now)
    if changed:
        raise InputError(f"{out_dir} holds a run made with different settings ({changed}); re-run with the same "
                         "flags to resume, or choose a new --out_dir")


def _first_difference(saved, now, prefix=""):
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            diff = _first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if diff:
                return diff
        return ""
    return "" if saved == now else f"{prefix.rstrip('.')}: {saved!r} then, {now!r} now"


def train_and_evaluate(config: RunConfig) -> dict:
    """Runs (or resumes) the whole seed cross-validation and writes the outputs.

    Returns:
      The manifest (the content of `selected_model.json`).
    """
    out_dir = pathlib.Path(config.out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_training_data(config.data)
    if len(data.val_vocalisations) == 0:
        raise InputError(f"--data_dir={config.data.data_dir}: the validation files hold no annotated syllable, so "
                         "seeds cannot be scored; add annotations or raise --val_frac")
    sample_rate = data.sample_rate
    steps_per_epoch = n_batches(len(data.x), config.batch_size)
    setup = Setup.build(config, sample_rate, steps_per_epoch)
    program, rollout, time_scale = setup.program, setup.rollout, setup.model.time_scale
    for horizon in {config.h_min, config.h_max}:
        if horizon > data.x.shape[1]:
            raise InputError(f"--h_max={config.h_max}: the rollout horizon cannot exceed the segment length "
                             f"{data.x.shape[1]} samples (--context_len={config.data.context_len} s at {sample_rate} Hz)")

    train_set = program.place(SeedData(
        jnp.asarray(data.x), jnp.asarray(data.dxdt), jnp.asarray(data.d2x * time_scale**2),
        jnp.asarray(data.categories == Category.ONSET),
    ), sharded=False)
    tf_var = teacher_acceleration_variance(data.d2x.astype(np.float64) * time_scale**2)
    val_dxdt = first_derivative(data.val_vocalisations)

    checkpoints = Checkpoints(out_dir / "checkpoints", config.max_saved)
    start = checkpoints.latest_epoch()
    if start is None:
        seed_ids = list(range(config.n_seeds))
        states, progress = init_seeds(setup.model, setup.optimizer, seed_keys(config.data.seed, seed_ids))
        rows, stopped = [], {}
        start = 0
    else:
        meta = checkpoints.meta(start)
        _check_resumable(out_dir, config, meta)
        seed_ids, rows, stopped = meta["seed_ids"], meta["rows"], {int(k): v for k, v in meta["stopped"].items()}
        states, progress = setup.restore(checkpoints, start, config.data.seed, seed_ids)
        console("resuming %s after epoch %d of %d", out_dir, start, config.n_epochs)
    write_json(out_dir / RUN_INFO, run_info(config, sample_rate, steps_per_epoch, len(data.x)))

    logbook = Logbook(out_dir, config, steps_per_epoch)
    states, progress = program.place((states, progress), sharded=True)
    epoch_seconds, compiled, scores = [], set(), None
    for epoch in range(start, config.n_epochs):
        # Culling comes first, so the checkpoint of the cull epoch holds every seed (culled ones
        # too) and a run resumed from it culls the same way.
        if config.culling and epoch == config.cull_epoch and len(seed_ids) > config.cull_keep:
            if scores is None:  # resumed from the cull epoch's checkpoint
                outputs = program.autonomous_outputs(states, data.val_vocalisations, val_dxdt)
                scores = _score_seeds(data.val_vocalisations, outputs, sample_rate)
            keep = _cull(config, epoch, seed_ids, scores, np.asarray(progress.active), stopped, rows)
            states, progress = program.place(select_seeds((states, progress), keep), sharded=True)
            seed_ids = [seed_ids[k] for k in keep]
        t0 = time.perf_counter()
        horizon = horizon_for_epoch(epoch, config.n_epochs, config.h_min, config.h_max, config.h_schedule)
        weights = warmup_weights(epoch, config.loss, config.spec_warmup_epochs, config.env_warmup_epochs)
        step_config = _step_config(config, horizon, sample_rate, rollout)
        program_key = (horizon, len(seed_ids))
        if program_key not in compiled:
            reason = ("first epoch" if not compiled else "new horizon" if horizon not in {h for h, _ in compiled}
                      else "culling changed the number of seeds")
            console("compiling the epoch program: H=%d, seeds=%d (%s)", horizon, len(seed_ids), reason)
            compiled.add(program_key)
        states, progress, metrics, ran = program.run_epoch(states, progress, train_set, weights, tf_var, step_config)
        outputs = program.autonomous_outputs(states, data.val_vocalisations, val_dxdt)
        scores = _score_seeds(data.val_vocalisations, outputs, sample_rate)
        active = np.asarray(progress.active)
        for k, seed_id in enumerate(seed_ids):
            if not active[k] and seed_id not in stopped:
                stopped[seed_id] = epoch + 1
                logging.warning("seed %d diverged: %d non-finite steps in a row; it is stopped", seed_id,
                                config.max_consecutive_skips)
        epoch_seconds.append(time.perf_counter() - t0)
        logbook.epoch(epoch, seed_ids, metrics, np.asarray(ran), scores, active, epoch_seconds)
        done = epoch + 1
        save = (done == config.n_epochs or (config.save_freq > 0 and done % config.save_freq == 0)
                or (config.culling and done == config.cull_epoch))
        if save:
            logbook.media(epoch, seed_ids, active, data.val_vocalisations[0], outputs[:, 0], sample_rate)
            checkpoints.save(done, (states, progress), checkpoint_meta(config, seed_ids, rows, stopped))
    checkpoints.close()
    logbook.close()
    return _finish(config, out_dir, program, states, seed_ids, rows, stopped, data, val_dxdt, rollout)


def _finish(config, out_dir, program, states, seed_ids, rows, stopped, data: TrainingData, val_dxdt,
            rollout) -> dict:
    """Selection, test score, seed_cv.csv, manifest, WAV and figure."""
    sample_rate = data.sample_rate
    val_outputs = program.autonomous_outputs(states, data.val_vocalisations, val_dxdt)
    scores = _score_seeds(data.val_vocalisations, val_outputs, sample_rate)
    diverged = np.array([seed_id in stopped for seed_id in seed_ids])
    final_rows = rows + [
        _seed_row(seed_id, *scores[k], f"checkpoints/{config.n_epochs}", "diverged" if diverged[k] else "finished",
                  stopped.get(seed_id, config.n_epochs))
        for k, seed_id in enumerate(seed_ids)
    ]
    write_seed_cv(out_dir / SEED_CV, final_rows)
    order = rank_seeds(np.array([s for s, _ in scores]), np.array([b["bounded_frac"] for _, b in scores]), diverged)
    best = int(order[0])
    manifest = _manifest_fields(config, data, sample_rate)
    if diverged[best]:
        logging.error("every seed diverged; nothing is selected (see %s)", out_dir / SEED_CV)
        manifest.update(selected_seed=None, diverged_seeds=sorted(stopped))
        write_json(out_dir / MANIFEST, manifest)
        return manifest
    best_state = select_seeds(states, [best])
    manifest.update(selected_seed=seed_ids[best], selected_lambda=config.lam, selected_val_autonomy=scores[best][0],
                    selected_val_breakdown=scores[best][1], diverged_seeds=sorted(stopped),
                    selected_checkpoint=f"checkpoints/{config.n_epochs}", selected_stack_index=best)
    tests = data.test_vocalisations
    shown = ("validation", data.val_vocalisations[0], val_outputs[best, 0])
    if len(tests):
        test_outputs = program.autonomous_outputs(best_state, tests, first_derivative(tests))
        (raw,) = _score_seeds(tests, test_outputs, sample_rate)
        (rescaled,) = _score_seeds(tests, test_outputs, sample_rate, rescale=True)
        shown = ("test", tests[0], test_outputs[0, 0])
        manifest.update(selected_test_autonomy=raw[0], selected_test_breakdown=raw[1],
                        rescaled_test_autonomy=rescaled[0], rescaled_test_breakdown=rescaled[1])
        model = nnx.merge(program.graphdef, jax.tree_util.tree_map(lambda a: a[0], best_state.params))
        wav = generate(model, tests[0], rollout, rescale=True)
        manifest["wav_written"] = write_wav(out_dir / WAV, wav, int(round(sample_rate)))
    else:
        logging.warning("no test vocalisations: no test score and no WAV")
        manifest.update(selected_test_autonomy=None, selected_test_breakdown={})
    kind, vocalisation, output = shown
    write_png(out_dir / SPECGRAM, specgram_figure(
        correct(vocalisation), correct(output), sample_rate,
        title=f"selected seed {seed_ids[best]}, epoch {config.n_epochs}: first {kind} vocalisation"), DPI)
    write_json(out_dir / MANIFEST, manifest)
    test = manifest["selected_test_autonomy"]
    console("selected seed %d: val autonomy %.3f, test autonomy %s; outputs in %s", seed_ids[best], scores[best][0],
            "none" if test is None else f"{test:.3f}", out_dir)
    return manifest


def _manifest_fields(config: RunConfig, data: TrainingData, sample_rate) -> dict:
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
        "ic_noise_rms": config.ic_noise_rms, "sr": sample_rate, "lr": config.lr, "lr_schedule": config.lr_schedule,
        "n_epochs": config.n_epochs, "n_seeds": config.n_seeds, "cull_frac": config.cull_frac,
        "cull_keep": config.cull_keep, "n_kernels": m.n_kernels, "n_layers": m.n_layers, "d_state": m.d_state,
        "d_conv": m.d_conv, "expand_factor": m.expand_factor, "grad_clip": config.grad_clip,
        "batch_size": config.batch_size, "seed": d.seed, "bound_x": config.bound_x, "bound_v": config.bound_v,
        "clamp_stages": config.clamp_stages, "loss_mode": config.loss_mode,
        "encoder_scan": resolve_scan_impl(m.scan_impl), "unroll": config.unroll,
        "max_consecutive_skips": config.max_consecutive_skips, "versions": _versions(), "device": _device(),
        "command": sys.argv,
    }
