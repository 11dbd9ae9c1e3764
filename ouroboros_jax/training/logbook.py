"""What a run reports while it trains: TensorBoard scalars per seed and a line per epoch.

TensorBoard (`<out_dir>/seed<k>/`; a sweep's members under their names, `sweep.member_name`, with
their settings in the HPARAMS tab), at global step epoch * batches_per_epoch + batch:
Loss/spec, Loss/tf, Loss/env (if --lam_env > 0), Loss/env_log (if --lam_env_log > 0),
Loss/total, Train/H, Train/lam_spec_t, Train/lam_env_t, Train/lam_env_log_t, Train/grad_norm,
Health/rms_ratio (rollout RMS / target RMS: near 0 means the rollout collapsed to silence) and
Health/pinned_frac (fraction of rollout samples pinned at the soft-tanh bound), not with
--loss_mode=mse_accel, which has no rollout; for a skipped (non-finite) step only
Loss/nan_skip = 1.0, so that one NaN does not blind a mean over the steps around it; at the end
of each epoch Val/autonomy, Val/spec_corr, Val/amp_pen, Val/pitch_pen, Val/bounded_frac,
Val/lead_in_db, Val/onset_delay_ms (the listening metrics, means over the vocalisations) and
Seed/active; at each checkpoint, for the first validation vocalisation, Media/target and
Media/autonomous (audio, peak-normalised) and Media/specgram (the `figures.specgram_figure` image),
for the --media_seeds best active seeds by validation autonomy.

The per-step scalars of an epoch are written once, after it, from the epoch's metric arrays:
one event per seed and step holding every tag (a figure or a clip costs far more, so media are
for a few seeds only). Only the writing process (`runtime.writes`) has event files.
"""

import contextlib
import pathlib
import time

import numpy as np
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.utils import figure_to_image

from ouroboros_jax.errors import WriteError
from ouroboros_jax.scoring.evaluation import correct, ranking
from ouroboros_jax.training.figures import specgram_figure
from ouroboros_jax.training.runtime import writes
from ouroboros_jax.training.sweep import member_label, member_name, member_seed, member_settings, values_of

STEP_SCALARS = {
    "Loss/spec": "spec", "Loss/tf": "tf", "Loss/env": "env", "Loss/env_log": "env_log", "Loss/total": "total",
    "Train/H": "horizon", "Train/lam_spec_t": "lam_spec_t", "Train/lam_env_t": "lam_env_t",
    "Train/lam_env_log_t": "lam_env_log_t", "Train/grad_norm": "grad_norm", "Health/rms_ratio": "rms_ratio",
    "Health/pinned_frac": "pinned_frac", "Train/deer_iterations": "deer_iterations",
    "Train/deer_fallbacks": "deer_fallbacks",
}
HEALTH_SCALARS = ("Health/rms_ratio", "Health/pinned_frac")
VAL_SCALARS = ("spec_corr", "amp_pen", "pitch_pen", "bounded_frac", "lead_in_db", "onset_delay_ms")
_BAR = 24


def console(message: str, *args) -> None:
    """A progress line on the terminal of the writing process (absl's INFO level is left to the libraries)."""
    if writes():
        print(message % args if args else message, flush=True)


def _peak_normalised(audio: np.ndarray) -> np.ndarray:
    peak = np.abs(audio).max()
    return audio / peak if peak > 0 else audio


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class EventFile:
    """One seed's TensorBoard event file, written in the caller's thread.

    tensorboardX's `SummaryWriter` writes from a background thread through a bounded queue: when
    a write fails (a full disk) that thread dies, the queue fills, and the next write, or the
    flush at exit, blocks forever. Here a failed write raises `WriteError` where it happens.
    The file is `<directory>/events.out.tfevents.<time>.<host>`, as SummaryWriter names it.
    """

    def __init__(self, directory: pathlib.Path):
        self._directory = directory
        self._write(lambda: directory.mkdir(parents=True, exist_ok=True))
        self._events = self._write(lambda: EventsWriter(str(directory / "events")))

    def _write(self, action):
        try:
            return action()
        except OSError as e:
            raise WriteError.at(self._directory, e.strerror or str(e)) from None

    def _add(self, value: summary.Summary, step: int) -> None:
        event = event_pb2.Event(summary=value, step=int(step), wall_time=time.time())
        self._write(lambda: self._events.write_event(event))

    def scalars(self, tags, values, steps) -> None:
        """One event per step holding every tag. values: (steps, tags) floats; steps: global steps."""
        now = time.time()
        for step, row in zip(steps, values):
            value = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v)
                                               for t, v in zip(tags, row)])
            event = event_pb2.Event(summary=value, step=int(step), wall_time=now)
            self._write(lambda event=event: self._events.write_event(event))

    def audio(self, tag: str, samples: np.ndarray, step: int, sample_rate: int) -> None:
        """samples: (n,) in [-1, 1]."""
        self._add(summary.audio(tag, samples, sample_rate=sample_rate), step)

    def figure(self, tag: str, figure, step: int) -> None:
        """A matplotlib figure as a PNG image (the figure is closed)."""
        self._add(summary.image(tag, figure_to_image(figure, close=True), dataformats="CHW"), step)

    def hparams(self, settings: dict, metrics) -> None:
        """Records hyperparameters and the tags of the scalars they are judged by (tensorboardX hparams)."""
        for value in summary.hparams(settings, dict.fromkeys(metrics, 0.0)):
            self._add(value, 0)

    def flush(self) -> None:
        self._write(self._events.flush)

    def close(self) -> None:
        self._write(self._events.close)


class Logbook:
    """TensorBoard event files per seed and the console summary; a context manager that closes them."""

    def __init__(self, out_dir: pathlib.Path, config, batches_per_epoch: int, writes: bool = True):
        self._out_dir, self._config, self._batches, self._writes = out_dir, config, batches_per_epoch, writes
        self._writers: dict[int, EventFile] = {}
        deer, mse = config.rollout.backend == "deer", config.objective.loss_mode == "mse_accel"
        no_env, no_env_log = (max(values_of(config, name)) <= 0 for name in ("lam_env", "lam_env_log"))
        skipped_terms = {"Loss/env": no_env, "Loss/env_log": no_env_log,
                         "Train/lam_env_log_t": no_env_log, "Train/deer_iterations": not deer,
                         "Train/deer_fallbacks": not deer, **dict.fromkeys(HEALTH_SCALARS, mse)}
        self._scalars = {tag: field for tag, field in STEP_SCALARS.items() if not skipped_terms.get(tag, False)}

    def __enter__(self) -> "Logbook":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: closing must not hide why (a full disk fails the final flush too)
            with contextlib.suppress(WriteError):
                self.close()

    def _writer(self, seed_id: int) -> EventFile:
        if seed_id not in self._writers:
            writer = EventFile(self._out_dir / member_name(self._config, seed_id))
            if self._config.sweep:  # TensorBoard's HPARAMS tab: the member's settings against its scores
                hparams = {**member_settings(self._config, seed_id), "seed": member_seed(seed_id, self._config.n_seeds)}
                writer.hparams(hparams, ("Val/autonomy", *(f"Val/{name}" for name in VAL_SCALARS)))
            self._writers[seed_id] = writer
        return self._writers[seed_id]

    def epoch(self, epoch: int, seed_ids, metrics, ran: np.ndarray, scores, active: np.ndarray, seconds: list,
              compile_seconds_ahead: float = 0.0):
        """Logs one epoch. metrics: StepMetrics of (S, n_batches); ran: (S, n_batches); scores:
        `evaluation.Autonomy` per seed.

        `seconds`: the epochs' training times so far (compilation excluded); the ETA adds
        `compile_seconds_ahead` for the programs still to compile."""
        values = {k: np.asarray(v) for k, v in metrics._asdict().items()}
        if self._writes:
            self._log_epoch(epoch, seed_ids, values, ran, scores, active)
        self._summary(epoch, seed_ids, values, ran, scores, active, seconds, compile_seconds_ahead)

    def _log_epoch(self, epoch: int, seed_ids, values: dict, ran: np.ndarray, scores, active: np.ndarray) -> None:
        tags = list(self._scalars)
        table = np.stack([values[field] for field in self._scalars.values()], axis=-1).astype(float)  # (S, n, tags)
        steps = epoch * self._batches + np.arange(ran.shape[1])
        end = self._last_step(epoch)
        for k, seed_id in enumerate(seed_ids):
            writer = self._writer(seed_id)
            finite = ran[k] & (values["skipped"][k] == 0)
            writer.scalars(tags, table[k][finite].tolist(), steps[finite].tolist())
            # A skipped step's losses are not finite: logging them would blind the monitor's means.
            skipped = ran[k] & (values["skipped"][k] != 0)
            writer.scalars(["Loss/nan_skip"], [[1.0]] * int(skipped.sum()), steps[skipped].tolist())
            score = scores[k]
            writer.scalars(["Val/autonomy", *(f"Val/{n}" for n in VAL_SCALARS), "Seed/active"],
                           [[score.score, *(score.breakdown[n] for n in VAL_SCALARS), float(active[k])]], [end])
            writer.flush()

    def _last_step(self, epoch: int) -> int:
        """The global step of an epoch's last batch, where per-epoch values are logged."""
        return (epoch + 1) * self._batches - 1

    def media(self, epoch: int, seed_ids, active: np.ndarray, scores, vocalisation: np.ndarray,
              outputs: np.ndarray, sample_rate: int):
        """Logs a vocalisation and the autonomous outputs on it of the --media_seeds best active seeds
        (ranked as selection ranks them): audio and the specgram figure.

        Args:
          epoch: the epoch just trained (0-based).
          seed_ids: the seeds of the stack.
          active: (S,) seeds still training; the others are not logged.
          scores: `evaluation.Autonomy` per seed, their validation autonomy.
          vocalisation: (n,) raw vocalisation.
          outputs: (S, n) raw autonomous outputs of the seeds on it.
          sample_rate: Hz, of the audio.
        """
        if not self._writes:
            return
        step = self._last_step(epoch)
        target = correct(vocalisation)  # detrended as scored, here and in the figure
        order = ranking(scores, ~np.asarray(active, bool), self._config.select_by)
        shown = [k for k in order if active[k]][: self._config.media_seeds]
        for k in shown:
            seed_id, output = seed_ids[k], correct(outputs[k])
            writer = self._writer(seed_id)
            writer.audio("Media/target", _peak_normalised(target), step, int(sample_rate))
            if np.isfinite(output).all():  # a non-finite output has no sound; its figure shows that
                writer.audio("Media/autonomous", _peak_normalised(output), step, int(sample_rate))
            figure = specgram_figure(target, output, sample_rate,
                                     title=f"{member_label(self._config, seed_id)}, epoch {epoch + 1}: first "
                                           "validation vocalisation")
            writer.figure("Media/specgram", figure, step)
            writer.flush()

    def _summary(self, epoch, seed_ids, values, ran, scores, active, seconds, compile_seconds_ahead):
        n_epochs = self._config.n_epochs
        done = epoch + 1
        filled = round(_BAR * done / n_epochs)
        eta = np.median(seconds[-5:]) * (n_epochs - done) + compile_seconds_ahead

        finite = ran & (values["skipped"] == 0)

        def mean(field):
            return float(np.mean(values[field][finite])) if finite.any() else float("nan")

        autonomy = np.array([s.score for s in scores])
        best = int(np.nanargmax(np.where(active, autonomy, np.nan))) if np.any(active & np.isfinite(autonomy)) else 0
        console(
            "[%s%s] epoch %d/%d H=%d | spec %.3f tf %.3f total %.3f | skips %d | val autonomy best %.3f (%s %d) "
            "bounded %.2f | active %d/%d | %.1f s/epoch, ETA %s",
            "#" * filled, "." * (_BAR - filled), done, n_epochs, int(values["horizon"][0, 0]), mean("spec"), mean("tf"),
            mean("total"), int(values["skipped"][ran].sum()), autonomy[best],
            "member" if self._config.sweep else "seed", seed_ids[best],
            scores[best].breakdown["bounded_frac"], int(active.sum()), len(seed_ids), seconds[-1], _duration(eta),
        )

    def close(self):
        for writer in self._writers.values():
            writer.close()
