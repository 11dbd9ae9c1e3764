"""The main job: seed cross-validation, culling, selection and outputs (docs/training.md, "What a run does").

`train_and_evaluate(config)` locks the run directory, reads and checks the data, and then only
sequences the transitions of `run_state` and does their I/O: the run starts fresh or from its
newest checkpoint, trains every member in one compiled program per epoch, scores them on the
held-out cold-start vocalisations after every epoch, culls, selects the best member, scores it on
the test vocalisations and writes the outputs. A finished run is not retrained; training stops
early once every member has stopped (diverged).
"""

import dataclasses
import pathlib
import time

import jax
import numpy as np
from absl import logging
from flax import nnx

from ouroboros_jax.data import TrainingData, load_training_data
from ouroboros_jax.errors import InputError, NoSeedSurvived, WriteError
from ouroboros_jax.objective.derivatives import first_derivative
from ouroboros_jax.objective.losses import teacher_acceleration_variance
from ouroboros_jax.scoring.evaluation import autonomy_summary, correct, generate
from ouroboros_jax.training.checkpoints import Checkpoints, DamagedCheckpoint, completed_epochs
from ouroboros_jax.training.compilation import Compiled
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.figures import DPI, specgram_figure
from ouroboros_jax.training.kernel_cache import load_kernels
from ouroboros_jax.training.library_log import libraries_logged_to
from ouroboros_jax.training.lock import RunLock
from ouroboros_jax.training.logbook import Logbook, console
from ouroboros_jax.training.outputs import (
    check_output_dir,
    make_output_dir,
    write_json,
    write_png,
    write_seed_cv,
    write_table,
    write_wav,
)
from ouroboros_jax.training.preflight import check_run_fits_data, describe_data
from ouroboros_jax.training.programs import ProgramLedger
from ouroboros_jax.training.records import (
    VOCALISATION_COLUMNS,
    check_resumable,
    manifest_fields,
    run_info,
    selection_fields,
    vocalisation_rows,
)
from ouroboros_jax.training.run_dir import (
    MANIFEST,
    RUN_INFO,
    SEED_CV,
    SPECGRAM,
    TEST_SCORES,
    VAL_SCORES,
    WAV,
    check_ours,
    checkpoints_dir,
    remove_if_unused,
)
from ouroboros_jax.training.run_report import write_run_report
from ouroboros_jax.training.run_state import (
    RunState,
    cull,
    epoch_arguments,
    final_rows,
    init_run,
    restore_run,
    save_run,
    score_members,
    select,
    train_epoch,
    why_none_selected,
)
from ouroboros_jax.training.runtime import Runtime, matmul_precision, pad_members
from ouroboros_jax.training.seeds import n_batches, select_seeds
from ouroboros_jax.training.setup import Setup, training_set
from ouroboros_jax.training.step import scored_params
from ouroboros_jax.training.sweep import member_label


@dataclasses.dataclass(frozen=True)
class Job:
    """What every stage of a run reads: its settings, directory, data and setup (none changes)."""

    config: RunConfig
    out_dir: pathlib.Path
    data: TrainingData
    setup: Setup

    @property
    def sample_rate(self) -> float:
        return self.data.sample_rate

    def validation(self, state: RunState):
        """The members' raw autonomous outputs on the validation vocalisations (S, V, n), on the
        host, and their scores."""
        vocalisations = self.data.val_vocalisations
        outputs = vocalisations.integrate(lambda audio: state.fetched(self.setup, self.setup.program.autonomous_outputs(
            state.states, audio, first_derivative(audio))))
        return outputs, score_members(vocalisations, outputs, self.sample_rate)


def resume_advice(out_dir: pathlib.Path) -> str:
    """Where a run that stopped now would resume from, as advice for its last line."""
    done = completed_epochs(checkpoints_dir(out_dir))
    if not done:
        return "no checkpoint is complete yet: re-run the same command to start again"
    return (f"the last complete checkpoint is {checkpoints_dir(out_dir) / str(done[-1])}: re-run the same command to "
            "resume from it")


def train_and_evaluate(config: RunConfig) -> dict:
    """Runs (or resumes) the whole seed cross-validation and writes the outputs.

    Returns:
      The manifest (the content of `selected_model.json`).

    Raises:
      InputError: a bad setting or file, an --out_dir holding another tool's files, or the
        directory is in use by another run; nothing is created or changed.
      NoSeedSurvived: every seed diverged, in training or in all its validation rollouts (seed_cv.csv
        and the manifest are written).
      WriteError: a file could not be written; the message says where to resume.
      KeyboardInterrupt: Ctrl-C; the checkpoints written so far are complete.
    """
    out_dir = pathlib.Path(config.out_dir).absolute()
    check_output_dir(out_dir, "--out_dir")
    if out_dir.is_dir():
        check_ours(out_dir)
    runtime = Runtime(config.seed_chunk)
    # The data are read and checked before anything is written: a refused input leaves no folder behind.
    data = load_training_data(config.data, config.sampler, config.seed)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, sample_rate=float(data.sample_rate)))
    check_run_fits_data(config, data)
    made = not out_dir.exists()
    make_output_dir(out_dir, "--out_dir")
    try:
        # One writer holds the directory: process 0 (the others of a multi-host run are the same run).
        with (runtime.writer_only(RunLock, out_dir), runtime.writer_only(libraries_logged_to, out_dir),
              matmul_precision(config.matmul_precision)):
            for line in describe_data(data):
                console(line)
            return _train_and_finish(config, out_dir, data, runtime)
    except WriteError as e:
        raise WriteError(f"{e}; {resume_advice(out_dir)}") from None
    except InputError:
        if made and runtime.writes:
            remove_if_unused(out_dir)  # refused before it trained: leave nothing behind
        raise


def _train_and_finish(config: RunConfig, out_dir: pathlib.Path, data: TrainingData, runtime: Runtime) -> dict:
    steps_per_epoch = n_batches(len(data.x), config.batch_size)
    job = Job(config, out_dir, data, Setup.build(config, data.sample_rate, steps_per_epoch, runtime))
    console(runtime.members_line(config.n_members))
    kernels = job.setup.kernels
    loaded = load_kernels(kernels["encoder_scan"] == "numba", kernels["rollout_kernel"] == "numba")
    if loaded:
        console(loaded)
    info = run_info(config, kernels, data.sample_rate, steps_per_epoch, len(data.x))
    programs = ProgramLedger(job.setup.programs)
    with Checkpoints(checkpoints_dir(out_dir), config.max_saved) as checkpoints:
        state = _start(job, checkpoints)
        runtime.write(write_json, out_dir / RUN_INFO, info)
        with Logbook(out_dir, config, steps_per_epoch, writes=runtime.writes) as logbook:
            state = _train(job, programs, state, checkpoints, logbook)
        runtime.write(write_json, out_dir / RUN_INFO, {**info, **programs.summary()})
    return _finish(job, programs, state)


def _start(job: Job, checkpoints: Checkpoints) -> RunState:
    """The run's state: fresh, or restored from the newest intact checkpoint (a damaged newer one
    is set aside with a warning, and its epochs are trained again)."""
    config, out_dir = job.config, job.out_dir
    for start in reversed(checkpoints.epochs()):
        try:
            meta = checkpoints.meta(start)
            check_resumable(out_dir, config, meta, start)
            state = restore_run(job.setup, config, checkpoints, start)
        except DamagedCheckpoint as e:
            aside = checkpoints.set_aside(start) if job.setup.runtime.writes else e.path
            logging.warning("%s; set aside as %s, and the epochs after the checkpoint before it are trained "
                            "again", e, aside)
            continue
        console("resuming %s after epoch %d of %d", out_dir, start, config.n_epochs)
        return state
    if (out_dir / RUN_INFO).exists():
        console("no complete checkpoint in %s (the run before ended before its first, after --save_freq "
                "epochs): training starts again from epoch 0", out_dir)
    return init_run(job.setup, config)


def _train(job: Job, programs: ProgramLedger, state: RunState, checkpoints: Checkpoints,
           logbook: Logbook) -> RunState:
    """Trains from the state's epoch to --n_epochs, or until every member has stopped, compiling
    each epoch program when it is first needed (into `programs`)."""
    config, setup = job.config, job.setup
    train_set = setup.runtime.replicate(training_set(job.data, setup.model.time_scale))
    tf_var = teacher_acceleration_variance(job.data.d2x.astype(np.float64) * setup.model.time_scale**2)
    epoch_seconds, scores = [], None
    while state.epoch < config.n_epochs:
        if not state.active(setup).any():
            console("every seed has stopped (diverged) by epoch %d: training ends early", state.epoch)
            break
        # Culling comes first, so the checkpoint of the cull epoch holds every member (culled ones
        # too) and a run resumed from it culls the same way.
        if config.culling and state.epoch == config.cull_epoch and len(state.members) > config.cull_keep:
            state = cull(setup, config, state, scores or job.validation(state)[1])
            console("culling after epoch %d: keeping seeds %s", state.epoch, list(state.members))
            console(setup.runtime.members_line(len(state.members)))
        program = _compiled(job, programs, state, train_set, tf_var)
        t0 = time.perf_counter()
        state, outcome = train_epoch(setup, config, state, train_set, tf_var, program)
        outputs, scores = job.validation(state)
        epoch_seconds.append(time.perf_counter() - t0)
        active, epoch = outcome.active, state.epoch - 1
        logbook.epoch(epoch, state.members, outcome.metrics, outcome.ran, scores, active, epoch_seconds,
                      programs.compile_seconds_ahead(state.epoch, len(state.members)))
        if (state.epoch == config.n_epochs or (config.save_freq > 0 and state.epoch % config.save_freq == 0)
                or (config.culling and state.epoch == config.cull_epoch) or not active.any()):
            first = job.data.val_vocalisations.window(0)
            logbook.media(epoch, state.members, active, scores, first, outputs[:, 0, : len(first)], job.sample_rate)
            save_run(checkpoints, config, state)
    return state


def _compiled(job: Job, programs: ProgramLedger, state: RunState, train_set, tf_var) -> Compiled:
    """The epoch program of the state's next epoch: from `programs`, or compiled now, saying why and
    what it cost."""
    plan = job.setup.programs
    key = plan.key(state.epoch, len(state.members))
    if key in programs.compiled:
        return programs.compiled[key]
    (program_horizon, _), known = key, programs.compiled
    reason = ("first epoch" if not known else "culling changed the number of seeds"
              if program_horizon in {h for h, _ in known} else "new STFT configs" if plan.horizon_is_data
              else "new horizon")
    low, high = plan.serves(program_horizon)
    console("compiling the epoch program: H=%s, seeds=%d (%s)", str(high) if low == high else f"{low}-{high}",
            len(state.members), reason)
    compiled = job.setup.program.compile_epoch(plan.step_config(state.epoch),
                                               *epoch_arguments(job.setup, job.config, state, train_set, tf_var))
    programs.record(key, compiled)
    uncacheable = _uncacheable(job.setup.kernels)
    console("  ready in %.1f s (%s)", compiled.seconds,
            "from the compilation cache" if compiled.cached else "compiled; cached for later runs" if not uncacheable
            else f"compiled; programs with the {uncacheable} cannot be cached")
    return compiled


def _uncacheable(kernels: dict) -> str:
    """What keeps the run's programs out of JAX's persistent compilation cache ("" if nothing): the
    numba kernels' host callbacks, which JAX does not serialise."""
    return " and ".join(name for name, numba in (("numba encoder scan", kernels["encoder_scan"] == "numba"),
                                                 ("numba rollout", kernels["rollout_kernel"] == "numba")) if numba)


def _finish(job: Job, programs: ProgramLedger, state: RunState) -> dict:
    """Selection, test score, seed_cv.csv, manifest, WAV, figure and report.html."""
    config, out_dir, runtime = job.config, job.out_dir, job.setup.runtime
    val_outputs, scores = job.validation(state)
    runtime.write(write_seed_cv, out_dir / SEED_CV, final_rows(config, state, scores))
    best = select(config, state, scores)
    manifest = {**manifest_fields(config, job.setup.kernels, job.data, state.records.skips, runtime.describe()),
                **programs.summary(), "n_stacked": state.progress.active.shape[0]}
    stopped = state.records.stopped
    if best is None:
        manifest.update(selected_seed=None, diverged_seeds=sorted(stopped))
        runtime.write(write_json, out_dir / MANIFEST, manifest)
        raise NoSeedSurvived(f"{why_none_selected(config, state, scores)}; nothing is selected, {out_dir / SEED_CV} "
                             "has their scores; try a lower --lr or other seeds (--seed)")
    member = state.members[best]
    manifest.update(selection_fields(config, member, best, scores[best], state.epoch, stopped))
    if state.records.skips.get(member):
        logging.warning("the selected seed %d skipped %d non-finite steps (which left it unchanged); see "
                        "skipped_steps in %s", member, state.records.skips[member], out_dir / SEED_CV)
    runtime.write(write_table, out_dir / VAL_SCORES, VOCALISATION_COLUMNS,
                  vocalisation_rows(job.data.val_vocalisations, scores[best], job.sample_rate))
    fields, test_outputs = _test(job, select_seeds(state.fetched(job.setup, state.states), [best]))
    manifest.update(fields)
    selected = member_label(config, member)
    first = job.data.test_vocalisations.window(0)
    runtime.write(lambda: write_png(out_dir / SPECGRAM, specgram_figure(
        correct(first), correct(test_outputs[0, : len(first)]), job.sample_rate,
        title=f"selected {selected}, epoch {state.epoch}: first test vocalisation"), DPI))
    runtime.write(write_json, out_dir / MANIFEST, manifest)
    runtime.write(_report, job, val_outputs[best], test_outputs)
    test = manifest["selected_test_summary"]
    console("selected %s: val autonomy %.3f; test autonomy mean %.3f, median %.3f, > 0 on %d of %d "
            "vocalisations; outputs in %s", selected, scores[best].score, test["mean"], test["median"],
            round(test["frac_positive"] * test["n_vocalisations"]), test["n_vocalisations"], out_dir)
    return manifest


def _report(job: Job, val_outputs: np.ndarray, test_outputs: np.ndarray) -> None:
    """report.html, from the selected member's raw outputs (V, L) on the validation and test
    vocalisations. The run's results are written by now: a page that fails is a warning (with the
    command that makes it again), never a failed run."""
    t0 = time.perf_counter()
    try:
        path = write_run_report(job.out_dir, job.data, val_outputs, test_outputs)
    except Exception as e:  # noqa: BLE001 - the run's own outputs stand; the report can be remade
        logging.warning("the run report was not written (%s: %s); make it with python -m ouroboros_jax.report "
                        "--run_dir=%s", type(e).__name__, e, job.out_dir)
        return
    logging.info("wrote %s in %.1f s", path, time.perf_counter() - t0)


def _test(job: Job, best_state) -> tuple[dict, np.ndarray]:
    """The selected member's (its host state, a stack of one) test scores, test_scores.csv and WAV:
    the manifest's fields, and its raw outputs (V, L) on the test vocalisations."""
    runtime, program, tests = job.setup.runtime, job.setup.program, job.data.test_vocalisations
    # The selected model is evaluated by every process on its devices, padded to a stack; its first member.
    on_devices = runtime.shard(pad_members(best_state, runtime.n_stacked(1)))
    outputs = tests.integrate(lambda audio: runtime.fetch(program.autonomous_outputs(
        on_devices, audio, first_derivative(audio)))[:1])
    (raw,) = score_members(tests, outputs, job.sample_rate)
    (rescaled,) = score_members(tests, outputs, job.sample_rate, rescale=True)
    runtime.write(write_table, job.out_dir / TEST_SCORES, VOCALISATION_COLUMNS,
                  vocalisation_rows(tests, raw, job.sample_rate))
    model = nnx.merge(program.graphdef, jax.tree_util.tree_map(lambda a: a[0], scored_params(best_state)))
    wav = generate(model, tests.window(0), job.setup.rollout, rescale=True)
    return {"selected_test_autonomy": raw.score, "selected_test_breakdown": raw.breakdown,
            "selected_test_summary": autonomy_summary(raw),
            "rescaled_test_autonomy": rescaled.score, "rescaled_test_breakdown": rescaled.breakdown,
            "wav_written": runtime.write(write_wav, job.out_dir / WAV, wav, int(round(job.sample_rate)))
            }, outputs[0]
