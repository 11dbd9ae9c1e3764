"""What a run reports while it trains: TensorBoard scalars per seed and a line per epoch.

TensorBoard (`<out_dir>/seed<k>/`), at global step epoch * batches_per_epoch + batch:
Loss/spec, Loss/tf, Loss/env (if --lam_env > 0), Loss/env_log (if --lam_env_log > 0),
Loss/total, Loss/nan_skip (1.0 on skipped steps), Train/H, Train/lam_spec_t, Train/lam_env_t,
Train/lam_env_log_t, Train/grad_norm, Health/rms_ratio (rollout RMS / target RMS: near 0 means
the rollout collapsed to silence), Health/pinned_frac (fraction of rollout samples pinned at the
soft-tanh bound); at the end of each epoch Val/autonomy, Val/spec_corr, Val/amp_pen,
Val/pitch_pen, Val/bounded_frac and Seed/active; at each checkpoint, for the first validation
vocalisation, Media/target and Media/autonomous (audio, peak-normalised) and Media/specgram (the
`figures.specgram_figure` image).
"""

import pathlib

import numpy as np
from tensorboardX import SummaryWriter

from ouroboros_jax.evaluation import correct
from ouroboros_jax.figures import specgram_figure

STEP_SCALARS = {
    "Loss/spec": "spec", "Loss/tf": "tf", "Loss/env": "env", "Loss/env_log": "env_log", "Loss/total": "total",
    "Train/H": "horizon", "Train/lam_spec_t": "lam_spec_t", "Train/lam_env_t": "lam_env_t",
    "Train/lam_env_log_t": "lam_env_log_t", "Train/grad_norm": "grad_norm", "Health/rms_ratio": "rms_ratio",
    "Health/pinned_frac": "pinned_frac", "Train/deer_iterations": "deer_iterations",
    "Train/deer_fallbacks": "deer_fallbacks",
}
VAL_SCALARS = ("spec_corr", "amp_pen", "pitch_pen", "bounded_frac")
_BAR = 24


def console(message: str, *args) -> None:
    """A progress line on the terminal (absl's INFO level is left to the libraries)."""
    print(message % args if args else message, flush=True)


def _peak_normalised(audio: np.ndarray) -> np.ndarray:
    peak = np.abs(audio).max()
    return audio / peak if peak > 0 else audio


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Logbook:
    """TensorBoard writers per seed and the console summary."""

    def __init__(self, out_dir: pathlib.Path, config, batches_per_epoch: int):
        self._out_dir, self._config, self._batches = out_dir, config, batches_per_epoch
        self._writers: dict[int, SummaryWriter] = {}
        deer = config.rollout_backend == "deer"
        skipped_terms = {"Loss/env": config.loss.lam_env <= 0, "Loss/env_log": config.loss.lam_env_log <= 0,
                         "Train/lam_env_log_t": config.loss.lam_env_log <= 0, "Train/deer_iterations": not deer,
                         "Train/deer_fallbacks": not deer}
        self._scalars = {tag: field for tag, field in STEP_SCALARS.items() if not skipped_terms.get(tag, False)}

    def _writer(self, seed_id: int) -> SummaryWriter:
        if seed_id not in self._writers:
            self._writers[seed_id] = SummaryWriter(str(self._out_dir / f"seed{seed_id}"))
        return self._writers[seed_id]

    def epoch(self, epoch: int, seed_ids, metrics, ran: np.ndarray, scores, active: np.ndarray, seconds: list):
        """Logs one epoch. metrics: StepMetrics of (S, n_batches); ran: (S, n_batches); scores: per seed."""
        values = {k: np.asarray(v) for k, v in metrics._asdict().items()}
        first_step = epoch * self._batches
        for k, seed_id in enumerate(seed_ids):
            writer = self._writer(seed_id)
            for i in np.flatnonzero(ran[k]):
                step = first_step + int(i)
                for tag, field in self._scalars.items():
                    writer.add_scalar(tag, float(values[field][k, i]), step)
                if values["skipped"][k, i]:
                    writer.add_scalar("Loss/nan_skip", 1.0, step)
            end = self._last_step(epoch)
            score, breakdown = scores[k]
            writer.add_scalar("Val/autonomy", score, end)
            for name in VAL_SCALARS:
                writer.add_scalar(f"Val/{name}", breakdown[name], end)
            writer.add_scalar("Seed/active", float(active[k]), end)
            writer.flush()
        self._summary(epoch, seed_ids, values, ran, scores, active, seconds)

    def _last_step(self, epoch: int) -> int:
        """The global step of an epoch's last batch, where per-epoch values are logged."""
        return (epoch + 1) * self._batches - 1

    def media(self, epoch: int, seed_ids, active: np.ndarray, vocalisation: np.ndarray, outputs: np.ndarray,
              sample_rate: int):
        """Logs a vocalisation and each active seed's autonomous output on it: audio and the specgram figure.

        Args:
          epoch: the epoch just trained (0-based).
          seed_ids: the seeds of the stack.
          active: (S,) seeds still training; the others are not logged.
          vocalisation: (n,) raw vocalisation.
          outputs: (S, n) raw autonomous outputs of the seeds on it.
          sample_rate: Hz, of the audio.
        """
        step = self._last_step(epoch)
        target = correct(vocalisation)  # detrended as scored, here and in the figure
        for seed_id, output, is_active in zip(seed_ids, outputs, active):
            if not is_active:
                continue
            output = correct(output)
            writer = self._writer(seed_id)
            writer.add_audio("Media/target", _peak_normalised(target), step, sample_rate=int(sample_rate))
            if np.isfinite(output).all():  # a non-finite output has no sound; its figure shows that
                writer.add_audio("Media/autonomous", _peak_normalised(output), step, sample_rate=int(sample_rate))
            figure = specgram_figure(target, output, sample_rate,
                                     title=f"seed {seed_id}, epoch {epoch + 1}: first validation vocalisation")
            writer.add_figure("Media/specgram", figure, step)
            writer.flush()

    def _summary(self, epoch, seed_ids, values, ran, scores, active, seconds):
        n_epochs = self._config.n_epochs
        done = epoch + 1
        filled = round(_BAR * done / n_epochs)
        eta = np.median(seconds[-5:]) * (n_epochs - done)

        def mean(field):
            return float(np.nanmean(np.where(ran, values[field], np.nan))) if ran.any() else float("nan")

        autonomy = np.array([s for s, _ in scores])
        best = int(np.nanargmax(np.where(active, autonomy, np.nan))) if np.any(active & np.isfinite(autonomy)) else 0
        console(
            "[%s%s] epoch %d/%d H=%d | spec %.3f tf %.3f total %.3f | skips %d | val autonomy best %.3f (seed %d) "
            "bounded %.2f | active %d/%d | %.1f s/epoch, ETA %s",
            "#" * filled, "." * (_BAR - filled), done, n_epochs, int(values["horizon"][0, 0]), mean("spec"), mean("tf"),
            mean("total"), int(values["skipped"][ran].sum()), autonomy[best], seed_ids[best],
            scores[best][1]["bounded_frac"], int(active.sum()), len(seed_ids), seconds[-1], _duration(eta),
        )

    def close(self):
        for writer in self._writers.values():
            writer.close()
