"""The main job: seed cross-validation, culling, selection and outputs (SPEC h, i).

`train_and_evaluate(config)` locks the run directory, reads and checks the data, trains every
seed in one compiled program per epoch, scores them on the held-out cold-start vocalisations
after every epoch, culls, selects the best seed, scores it on the test vocalisations and writes
the outputs. Re-running the same config resumes from the newest checkpoint; a finished run is
not retrained; training stops early once every seed has stopped (diverged).
"""

import dataclasses
import pathlib
import time

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx

from ouroboros_jax.curriculum import warmup_weights
from ouroboros_jax.data import Category, TrainingData, load_training_data
from ouroboros_jax.derivatives import first_derivative
from ouroboros_jax.dynamics import RolloutConfig, resolve_rollout_kernel
from ouroboros_jax.errors import NoSeedSurvived, WriteError
from ouroboros_jax.evaluation import autonomy_score, correct, generate, rank_seeds
from ouroboros_jax.figures import DPI, specgram_figure
from ouroboros_jax.losses import teacher_acceleration_variance
from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.model.selective_scan import persistently_cacheable
from ouroboros_jax.training.checkpoints import Checkpoints, completed_epochs
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.library_log import libraries_logged_to
from ouroboros_jax.training.lock import RunLock
from ouroboros_jax.training.logbook import Logbook, console
from ouroboros_jax.training.outputs import make_output_dir, write_json, write_png, write_seed_cv, write_wav
from ouroboros_jax.training.preflight import check_run_fits_data, describe_data
from ouroboros_jax.training.programs import EpochPrograms
from ouroboros_jax.training.records import (
    check_resumable,
    checkpoint_meta,
    manifest_fields,
    read_checkpoint_meta,
    run_info,
    seed_row,
)
from ouroboros_jax.training.runtime import (
    Runtime,
    inactive_padding,
    matmul_precision,
    pad_ids,
    pad_members,
    unpadded,
)
from ouroboros_jax.training.seeds import (
    MemberSettings,
    SeedData,
    SeedProgram,
    SeedProgress,
    init_seeds,
    n_batches,
    seed_keys,
    select_seeds,
)
from ouroboros_jax.training.sweep import member_loss_weights, member_name, member_seed, member_settings, member_values
from ouroboros_jax.training.step import TrainState, make_optimizer, model_graphdef

MANIFEST, SEED_CV, WAV, RUN_INFO = "selected_model.json", "seed_cv.csv", "selected_autonomous_recon.wav", "run.json"
SPECGRAM = "selected_specgram.png"


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a run builds from its config and data: model config, optimiser, integrator, program."""

    model: ModelConfig
    optimizer: optax.GradientTransformation
    rollout: RolloutConfig
    program: SeedProgram
    programs: EpochPrograms
    runtime: Runtime

    @classmethod
    def build(cls, config: RunConfig, sample_rate: float, steps_per_epoch: int,
              runtime: Runtime | None = None) -> "Setup":
        runtime = runtime or Runtime(config.seed_chunk)
        model = dataclasses.replace(config.model, sample_rate=float(sample_rate))
        decay_steps = config.n_epochs * steps_per_epoch if config.lr_schedule == "cosine" else None
        optimizer = make_optimizer(config.lr, config.grad_clip, decay_steps)
        rollout = RolloutConfig(step_size=1.0 / model.time_scale, bound_x=config.bound_x, bound_v=config.bound_v,
                                clamp_stages=config.clamp_stages, unroll=config.unroll, kernel=config.rollout_kernel)
        program = SeedProgram(model_graphdef(model), optimizer, config.batch_size, config.max_consecutive_skips,
                              rollout, runtime.seed_chunk, runtime.mesh)
        return cls(model, optimizer, rollout, program, EpochPrograms(config, float(sample_rate), rollout), runtime)

    def init(self, config: RunConfig, seed_ids) -> tuple[TrainState, SeedProgress]:
        """Fresh stacked states of the members `seed_ids`: each with its seed's key and its own
        learning rate and clip (`sweep`)."""
        keys = seed_keys(config.data.seed, [member_seed(k, config.n_seeds) for k in seed_ids])
        return init_seeds(self.model, self.optimizer, keys, learning_rate=member_values(config, seed_ids, "lr"),
                          grad_clip=member_values(config, seed_ids, "grad_clip"))

    def restore(self, checkpoints: Checkpoints, epoch: int, config: RunConfig, seed_ids,
                n_stacked: int | None = None) -> tuple[TrainState, SeedProgress]:
        """The stacked states of `seed_ids` saved at `epoch` in a stack of `n_stacked` (with its
        padding, whatever the device count was; None: no padding), on the host without the padding
        (`place` them)."""
        like = jax.eval_shape(lambda: self.init(config, pad_ids(seed_ids, n_stacked or len(seed_ids))))
        restored = checkpoints.restore(epoch, self.runtime.replicated_like(like))
        return unpadded(self.runtime.fetch(restored), len(seed_ids))

    def place(self, states: TrainState, progress: SeedProgress) -> tuple[TrainState, SeedProgress]:
        """The (host) stack of the real members, padded with inactive ones and sharded over the devices."""
        n_real, n_stacked = progress.active.shape[0], self.runtime.n_stacked(progress.active.shape[0])
        states, progress = pad_members(self.runtime.fetch((states, progress)), n_stacked)
        progress = progress._replace(active=inactive_padding(progress.active, n_real))
        return self.runtime.shard((states, progress))


def training_set(data: TrainingData, time_scale: float) -> SeedData:
    """The training segments as the program trains on them: the teacher acceleration in rescaled
    time (d2x * time_scale^2, SPEC a.1) and the cold start on ONSET segments (SPEC e.2)."""
    return SeedData(np.asarray(data.x, np.float32), np.asarray(data.dxdt, np.float32),
                    np.asarray(data.d2x * time_scale**2, np.float32), np.asarray(data.categories == Category.ONSET))


def _score_seeds(vocalisations, outputs, sample_rate, rescale=False):
    """Autonomy of every seed: a (score, breakdown) per seed.

    Args:
      vocalisations: (V, n) raw vocalisations.
      outputs: (S, V, n) the seeds' raw autonomous outputs on them (`SeedProgram.autonomous_outputs`).
      sample_rate: Hz.
      rescale: score the outputs rescaled to the vocalisations' level.
    """
    return [autonomy_score(vocalisations, out, sample_rate, rescale=rescale, cold_start=True)[::2] for out in outputs]


@dataclasses.dataclass
class Seeds:
    """The seeds of a run as training leaves them (what `_finish` selects from).

    Attributes:
      states, progress: the stacked states of the seeds still in the stack.
      seed_ids: their ids, in stack order.
      rows: seed_cv.csv rows of the seeds culled from the stack.
      stopped: seed id -> the epoch after which it was stopped as diverged.
      skips: seed id -> its skipped (non-finite) steps, every seed.
      epoch: the completed epochs of the newest checkpoint, which holds `states`.
    """

    states: TrainState
    progress: SeedProgress
    seed_ids: list
    rows: list
    stopped: dict
    skips: dict
    epoch: int

    def meta(self, config: RunConfig) -> dict:
        return checkpoint_meta(config, self.seed_ids, self.rows, self.stopped, self.skips,
                               self.progress.active.shape[0])

    def fetched(self, runtime: Runtime, tree):
        """A device tree of the stack (outputs, metrics) on the host, without the padding members."""
        return unpadded(runtime.fetch(tree), len(self.seed_ids))


def _cull(config: RunConfig, epoch: int, seeds: Seeds, scores, active: np.ndarray) -> list[int]:
    """Ranks the seeds by validation autonomy, records the culled ones in `seeds.rows`, returns the kept indices.

    `active`: (S,) of the real seeds (no padding), as `scores`."""
    order = rank_seeds(np.array([s for s, _ in scores]), np.array([b["bounded_frac"] for _, b in scores]), ~active)
    keep = sorted(order[: config.cull_keep].tolist())
    for k in sorted(set(range(len(seeds.seed_ids))) - set(keep)):
        seed_id = seeds.seed_ids[k]
        status = "diverged" if seed_id in seeds.stopped else "culled"
        seeds.rows.append(seed_row(config, seed_id, *scores[k], f"checkpoints/{epoch}", status,
                                   seeds.stopped.get(seed_id, epoch), seeds.skips.get(seed_id, 0)))
    console("culling after epoch %d: keeping seeds %s", epoch, [seeds.seed_ids[k] for k in keep])
    return keep


def resume_advice(out_dir: pathlib.Path) -> str:
    """Where a run that stopped now would resume from, as advice for its last line."""
    done = completed_epochs(out_dir / "checkpoints")
    if not done:
        return "no checkpoint is complete yet: re-run the same command to start again"
    return (f"the last complete checkpoint is {out_dir / 'checkpoints' / str(done[-1])}: re-run the same command to "
            "resume from it")


def train_and_evaluate(config: RunConfig) -> dict:
    """Runs (or resumes) the whole seed cross-validation and writes the outputs.

    Returns:
      The manifest (the content of `selected_model.json`).

    Raises:
      InputError: a bad setting or file, or the directory is in use by another run.
      NoSeedSurvived: every seed diverged (seed_cv.csv and the manifest are written).
      WriteError: a file could not be written; the message says where to resume.
      KeyboardInterrupt: Ctrl-C; the checkpoints written so far are complete.
    """
    out_dir = pathlib.Path(config.out_dir).absolute()
    make_output_dir(out_dir, "--out_dir")
    runtime = Runtime(config.seed_chunk)
    # One writer holds the directory: process 0 (the others of a multi-host run are the same run).
    with (runtime.writer_only(RunLock, out_dir), runtime.writer_only(libraries_logged_to, out_dir),
          matmul_precision(config.matmul_precision)):
        data = load_training_data(config.data)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                       sample_rate=float(data.sample_rate)))
        check_run_fits_data(config, data)
        for line in describe_data(data):
            console(line)
        try:
            return _train_and_finish(config, out_dir, data, runtime)
        except WriteError as e:
            raise WriteError(f"{e}; {resume_advice(out_dir)}") from None


def _train_and_finish(config: RunConfig, out_dir: pathlib.Path, data: TrainingData, runtime: Runtime) -> dict:
    sample_rate = data.sample_rate
    steps_per_epoch = n_batches(len(data.x), config.batch_size)
    setup = Setup.build(config, sample_rate, steps_per_epoch, runtime)
    console(runtime.members_line(config.n_members))
    train_set = runtime.replicate(training_set(data, setup.model.time_scale))
    tf_var = teacher_acceleration_variance(data.d2x.astype(np.float64) * setup.model.time_scale**2)
    val_dxdt = first_derivative(data.val_vocalisations)
    with Checkpoints(out_dir / "checkpoints", config.max_saved) as checkpoints:
        seeds = _start(config, out_dir, setup, checkpoints)
        runtime.write(write_json, out_dir / RUN_INFO, run_info(config, sample_rate, steps_per_epoch, len(data.x)))
        with Logbook(out_dir, config, steps_per_epoch, writes=runtime.writes) as logbook:
            _train(config, setup, seeds, train_set, tf_var, data, val_dxdt, checkpoints, logbook)
        runtime.write(write_json, out_dir / RUN_INFO, run_info(config, sample_rate, steps_per_epoch, len(data.x),
                                                               **setup.programs.summary()))
    return _finish(config, out_dir, setup, seeds, data, val_dxdt)


def _start(config: RunConfig, out_dir: pathlib.Path, setup: Setup, checkpoints: Checkpoints) -> Seeds:
    """The seeds to train: fresh, or restored from the newest checkpoint."""
    start = checkpoints.latest_epoch()
    if start is None:
        if (out_dir / RUN_INFO).exists():
            console("no complete checkpoint in %s (the run before ended before its first, after --save_freq "
                    "epochs): training starts again from epoch 0", out_dir)
        seed_ids = list(range(config.n_members))
        states, progress = setup.place(*setup.init(config, seed_ids))
        return Seeds(states, progress, seed_ids, [], {}, {}, 0)
    meta = checkpoints.meta(start)
    check_resumable(out_dir, config, meta, start)
    seed_ids, rows, stopped, skips, n_stacked = read_checkpoint_meta(meta)
    states, progress = setup.place(*setup.restore(checkpoints, start, config, seed_ids, n_stacked))
    console("resuming %s after epoch %d of %d", out_dir, start, config.n_epochs)
    return Seeds(states, progress, seed_ids, rows, stopped, skips, start)


def _train(config: RunConfig, setup: Setup, seeds: Seeds, train_set: SeedData, tf_var, data: TrainingData, val_dxdt,
           checkpoints: Checkpoints, logbook: Logbook) -> None:
    """Trains `seeds` (in place) from their epoch to --n_epochs, or until every seed has stopped."""
    program, sample_rate, programs, runtime = setup.program, data.sample_rate, setup.programs, setup.runtime
    epoch_seconds, scores = [], None
    for epoch in range(seeds.epoch, config.n_epochs):
        if not seeds.fetched(runtime, seeds.progress.active).any():
            console("every seed has stopped (diverged) by epoch %d: training ends early", epoch)
            break
        # Culling comes first, so the checkpoint of the cull epoch holds every seed (culled ones
        # too) and a run resumed from it culls the same way.
        if config.culling and epoch == config.cull_epoch and len(seeds.seed_ids) > config.cull_keep:
            if scores is None:  # resumed from the cull epoch's checkpoint
                outputs = seeds.fetched(runtime, program.autonomous_outputs(seeds.states, data.val_vocalisations,
                                                                            val_dxdt))
                scores = _score_seeds(data.val_vocalisations, outputs, sample_rate)
            keep = _cull(config, epoch, seeds, scores, seeds.fetched(runtime, seeds.progress.active))
            seeds.states, seeds.progress = setup.place(*select_seeds(seeds.fetched(runtime, (seeds.states,
                                                                                            seeds.progress)), keep))
            seeds.seed_ids = [seeds.seed_ids[k] for k in keep]
            console(runtime.members_line(len(keep)))
        stacked = pad_ids(seeds.seed_ids, seeds.progress.active.shape[0])  # the padding's settings are its copy's
        settings = MemberSettings(
            warmup_weights(epoch, member_loss_weights(config, stacked), config.spec_warmup_epochs,
                           config.env_warmup_epochs), member_values(config, stacked, "ic_noise_rms"))
        step_config, horizon = programs.step_config(epoch), programs.traced_horizon(epoch)
        epoch_args = (seeds.states, seeds.progress, train_set, settings, tf_var, step_config, horizon)
        key = programs.key(epoch, len(seeds.seed_ids))
        if key not in programs.compiled:
            _compile(programs, key, program, epoch_args, _uncacheable(config, setup.rollout))
        t0 = time.perf_counter()
        seeds.states, seeds.progress, metrics, ran = program.run_epoch(*epoch_args)
        outputs = program.autonomous_outputs(seeds.states, data.val_vocalisations, val_dxdt)
        outputs, metrics, ran, active = seeds.fetched(runtime, (outputs, metrics, ran, seeds.progress.active))
        scores = _score_seeds(data.val_vocalisations, outputs, sample_rate)
        skipped = (metrics.skipped * ran).sum(axis=1)
        for k, seed_id in enumerate(seeds.seed_ids):
            seeds.skips[seed_id] = seeds.skips.get(seed_id, 0) + int(skipped[k])
            if not active[k] and seed_id not in seeds.stopped:
                seeds.stopped[seed_id] = epoch + 1
                logging.warning("seed %d diverged: %d non-finite steps in a row; it is stopped", seed_id,
                                config.max_consecutive_skips)
        epoch_seconds.append(time.perf_counter() - t0)
        logbook.epoch(epoch, seeds.seed_ids, metrics, ran, scores, active, epoch_seconds,
                      programs.compile_seconds_ahead(epoch + 1, len(seeds.seed_ids)))
        done = epoch + 1
        save = (done == config.n_epochs or (config.save_freq > 0 and done % config.save_freq == 0)
                or (config.culling and done == config.cull_epoch) or not active.any())
        if save:
            logbook.media(epoch, seeds.seed_ids, active, scores, data.val_vocalisations[0], outputs[:, 0],
                          sample_rate)
            checkpoints.save(done, (seeds.states, seeds.progress), seeds.meta(config))
            seeds.epoch = done


def _compile(programs: EpochPrograms, key, program: SeedProgram, epoch_args, uncacheable: str) -> None:
    """Compiles the epoch program of `key` ahead of its first epoch, saying why and what it cost."""
    (program_horizon, n_seeds), known = key, programs.compiled
    reason = ("first epoch" if not known else "culling changed the number of seeds"
              if program_horizon in {h for h, _ in known} else "new STFT configs" if programs.horizon_is_data
              else "new horizon")
    low, high = programs.serves(program_horizon)
    console("compiling the epoch program: H=%s, seeds=%d (%s)", str(high) if low == high else f"{low}-{high}",
            n_seeds, reason)
    compiled = program.compile_epoch(*epoch_args)
    programs.record(key, compiled)
    console("  ready in %.1f s (%s)", compiled.seconds,
            "from the compilation cache" if compiled.cached else "compiled; cached for later runs" if not uncacheable
            else f"compiled; programs with the {uncacheable} cannot be cached")


def _uncacheable(config: RunConfig, rollout: RolloutConfig) -> str:
    """What keeps the run's programs out of JAX's persistent compilation cache ("" if nothing): the
    numba kernels' host callbacks, which JAX does not serialise."""
    kernels = [name for name, numba in (("numba encoder scan", not persistently_cacheable(config.model.scan_impl)),
                                        ("numba rollout", resolve_rollout_kernel(rollout) == "numba")) if numba]
    return " and ".join(kernels)


def _finish(config: RunConfig, out_dir: pathlib.Path, setup: Setup, seeds: Seeds, data: TrainingData,
            val_dxdt) -> dict:
    """Selection, test score, seed_cv.csv, manifest, WAV and figure."""
    program, sample_rate, seed_ids, runtime = setup.program, data.sample_rate, seeds.seed_ids, setup.runtime
    val_outputs = seeds.fetched(runtime, program.autonomous_outputs(seeds.states, data.val_vocalisations, val_dxdt))
    scores = _score_seeds(data.val_vocalisations, val_outputs, sample_rate)
    diverged = np.array([seed_id in seeds.stopped for seed_id in seed_ids])
    final_rows = seeds.rows + [
        seed_row(config, seed_id, *scores[k], f"checkpoints/{seeds.epoch}", "diverged" if diverged[k] else "finished",
                 seeds.stopped.get(seed_id, seeds.epoch), seeds.skips.get(seed_id, 0))
        for k, seed_id in enumerate(seed_ids)
    ]
    runtime.write(write_seed_cv, out_dir / SEED_CV, final_rows)
    order = rank_seeds(np.array([s for s, _ in scores]), np.array([b["bounded_frac"] for _, b in scores]), diverged)
    best = int(order[0])
    manifest = {**manifest_fields(config, data, seeds.skips, runtime.describe()), **setup.programs.summary(),
                "n_stacked": seeds.progress.active.shape[0]}
    if diverged[best]:
        manifest.update(selected_seed=None, diverged_seeds=sorted(seeds.stopped))
        runtime.write(write_json, out_dir / MANIFEST, manifest)
        stops = ", ".join(f"seed {k} after epoch {e}" for k, e in sorted(seeds.stopped.items()))
        raise NoSeedSurvived(f"every seed diverged ({stops}); nothing is selected, {out_dir / SEED_CV} has their "
                             "scores; try a lower --lr or other seeds (--seed)")
    # The selected model is evaluated by every process on its own default device, from host copies.
    best_state = select_seeds(seeds.fetched(runtime, seeds.states), [best])
    selected = f"member {member_name(config, seed_ids[best])}" if config.sweep else f"seed {seed_ids[best]}"
    manifest.update(selected_seed=seed_ids[best], selected_lambda=config.lam, selected_val_autonomy=scores[best][0],
                    selected_val_breakdown=scores[best][1], diverged_seeds=sorted(seeds.stopped),
                    selected_checkpoint=f"checkpoints/{seeds.epoch}", selected_stack_index=best,
                    selected_member={"name": member_name(config, seed_ids[best]),
                                     "seed": member_seed(seed_ids[best], config.n_seeds),
                                     **member_settings(config, seed_ids[best])})
    if seeds.skips.get(seed_ids[best]):
        logging.warning("the selected seed %d skipped %d non-finite steps (which left it unchanged); see "
                        "skipped_steps in %s", seed_ids[best], seeds.skips[seed_ids[best]], out_dir / SEED_CV)
    tests = data.test_vocalisations
    shown = ("validation", data.val_vocalisations[0], val_outputs[best, 0])
    if len(tests):
        # Padded to a stack for the devices; its first member is the selected seed.
        on_devices = runtime.shard(pad_members(best_state, runtime.n_stacked(1)))
        test_outputs = runtime.fetch(program.autonomous_outputs(on_devices, tests, first_derivative(tests)))[:1]
        (raw,) = _score_seeds(tests, test_outputs, sample_rate)
        (rescaled,) = _score_seeds(tests, test_outputs, sample_rate, rescale=True)
        shown = ("test", tests[0], test_outputs[0, 0])
        manifest.update(selected_test_autonomy=raw[0], selected_test_breakdown=raw[1],
                        rescaled_test_autonomy=rescaled[0], rescaled_test_breakdown=rescaled[1])
        model = nnx.merge(program.graphdef, jax.tree_util.tree_map(lambda a: a[0], best_state.params))
        wav = generate(model, tests[0], setup.rollout, rescale=True)
        manifest["wav_written"] = runtime.write(write_wav, out_dir / WAV, wav, int(round(sample_rate)))
    else:
        logging.warning("no test vocalisations: no test score and no WAV")
        manifest.update(selected_test_autonomy=None, selected_test_breakdown={})
    kind, vocalisation, output = shown
    runtime.write(lambda: write_png(out_dir / SPECGRAM, specgram_figure(
        correct(vocalisation), correct(output), sample_rate,
        title=f"selected {selected}, epoch {seeds.epoch}: first {kind} vocalisation"), DPI))
    runtime.write(write_json, out_dir / MANIFEST, manifest)
    test = manifest["selected_test_autonomy"]
    console("selected %s: val autonomy %.3f, test autonomy %s; outputs in %s", selected, scores[best][0],
            "none" if test is None else f"{test:.3f}", out_dir)
    return manifest
