"""Evaluation: autonomous integration, the autonomy score, deployed generation, seed ranking.

docs/method.md ("Evaluation") states what each computes. The work is split where the data leave
the device:

- Device (JAX, pure, vmappable over a leading seed axis of stacked model states):
  `autonomous_outputs` computes the drives on whole vocalisations and integrates them from the
  data initial condition with the *training* integrator `dynamics.rollout` (classic RK4, held
  drives, the same soft-tanh bounds), not the reference's spline-driven 3/8-rule RK4 without
  bounds.
- Host (NumPy/SciPy, after the integration): `correct`, `segment_score`, `autonomy_score`,
  `generate`'s detrend and rescale, and `rank_seeds`.

Scoring takes the *raw* vocalisations and the *raw* autonomous outputs and detrends both with
`correct`, as the reference's `autonomy_score` does to its target and its integrator does (with
detrend=True) to its output. A bounded segment's score is floored at the divergence sentinel so
that a bounded seed never ranks below a diverged one.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
import scipy.signal
from flax import nnx

from ouroboros_jax.model.ouroboros import Ouroboros
from ouroboros_jax.objective.derivatives import first_derivative
from ouroboros_jax.ode.dynamics import RolloutConfig, initial_state, rollout
from ouroboros_jax.scoring.listening import lead_in_level_db, onset_delay_ms

DETREND_ORDER = 5
DETREND_CUTOFF = 100.0
"""`correct`'s low-pass corner in cycles per window (the filter is designed with fs = length)."""

DIVERGED_STD = 1e-9
"""An output whose detrended standard deviation is below this counts as diverged (collapsed)."""

WELCH_MAX_NPERSEG = 1024
_STD_EPS = 1e-12  # Guards of the reference's amplitude ratio and rescale.
_LOG_PSD_EPS = 1e-20  # Floor of the log-PSD in spec_corr.
_PITCH_EPS = 1e-9  # Guard of the peak-frequency ratio.
_COMPONENTS = ("spec_corr", "amp_pen", "pitch_pen", "lead_in_db", "onset_delay_ms")


def correct(signal: np.ndarray) -> np.ndarray:
    """Removes the slow trend: the signal minus its zero-phase Butterworth low-pass.

    Order-5 Butterworth in second-order sections, applied forward and backward by
    `scipy.signal.sosfiltfilt` with its defaults (odd extension, padlen 18), designed with
    fs = n and cutoff 100: a high-pass at 100 cycles per window, so its corner in Hz scales with
    the window length, as in the reference.

    Args:
      signal: (..., n) with n > 200, filtered along the last axis.

    Returns:
      (..., n) float64.

    Raises:
      ValueError: n <= 200 (the cutoff would not lie below the Nyquist frequency fs / 2 = n / 2).
    """
    signal = np.asarray(signal, dtype=np.float64)
    n = signal.shape[-1]
    if n <= 2 * DETREND_CUTOFF:
        raise ValueError(f"correct needs more than {2 * DETREND_CUTOFF:.0f} samples, got {n}")
    sos = scipy.signal.butter(DETREND_ORDER, DETREND_CUTOFF, fs=n, output="sos")
    return signal - scipy.signal.sosfiltfilt(sos, signal, axis=-1)


class SegmentScore(NamedTuple):
    """The autonomy score of one segment and its parts.

    Attributes:
      score: spec_corr - w_amp * amp_pen - w_pitch * pitch_pen, floored at the divergence
        sentinel; the sentinel itself for a diverged output.
      bounded: False when the output diverged.
      spec_corr, amp_pen, pitch_pen: the components; NaN when diverged.
      lead_in_db: the output's level over the lead-in relative to the syllable, dB
        (`listening.lead_in_level_db`); NaN when diverged or without a lead-in.
      onset_delay_ms: the output's onset minus the target's (`listening.onset_delay_ms`); NaN
        likewise.
    """

    score: float
    bounded: bool
    spec_corr: float
    amp_pen: float
    pitch_pen: float
    lead_in_db: float = np.nan
    onset_delay_ms: float = np.nan


def _welch_psd(signal: np.ndarray, sample_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch PSD as the reference computes it. signal: (n,). Returns (freqs, psd), each (F,).

    Hann window, nperseg = min(1024, n), 50 % overlap, one-sided density. The reference also
    removes the global mean first; the per-segment constant detrend makes that a no-op.
    """
    nperseg = min(WELCH_MAX_NPERSEG, signal.shape[-1])
    return scipy.signal.welch(signal, fs=sample_rate, window="hann", nperseg=nperseg, noverlap=nperseg // 2,
                              detrend="constant", return_onesided=True, scaling="density")


def _peak_frequency(freqs: np.ndarray, psd: np.ndarray) -> float:
    """Frequency of the PSD maximum over the whole spectrum, DC excluded. freqs, psd: (F,)."""
    return float(freqs[1:][np.argmax(psd[1:])])


def segment_score(target: np.ndarray, output: np.ndarray, sample_rate: float, fmax: float = 8000.0,
                  w_amp: float = 1.0, w_pitch: float = 1.0, diverge_score: float = -5.0,
                  rescale: bool = False, lead_in: int = 0) -> SegmentScore:
    """Scores one autonomous output against its vocalisation (docs/method.md, "Evaluation").

    Both are detrended with `correct` first. The output has diverged if it is not finite or its
    detrended standard deviation is below 1e-9. Otherwise (optionally after rescaling it to the
    target's standard deviation) its spectral correlation, amplitude penalty and pitch penalty
    are computed on Welch PSDs, and the score is floored at `diverge_score`.

    Args:
      target: (n,) raw vocalisation.
      output: (n,) raw (un-detrended) autonomous output of the model on it.
      sample_rate: Hz, the PSD's sampling frequency.
      fmax: highest frequency of the spectral correlation, Hz.
      w_amp, w_pitch: weights of the amplitude and pitch penalties.
      diverge_score: the divergence sentinel.
      rescale: scale the output to the target's standard deviation before scoring.
      lead_in: samples of the window before the syllable's onset, for the listening metrics
        (`ouroboros_jax.scoring.listening`); 0: none (they are NaN).

    Returns:
      The `SegmentScore`.
    """
    target, output = np.asarray(target), np.asarray(output)
    if target.ndim != 1 or target.shape != output.shape:
        raise ValueError(f"target and output must be 1-D of the same length, got {target.shape} and {output.shape}")
    target = correct(target)
    # A non-finite output is not detrended: filtering would only smear the non-finite values.
    if np.all(np.isfinite(output)):
        output = correct(output)
        bounded = np.std(output) >= DIVERGED_STD
    else:
        bounded = False
    if not bounded:
        return SegmentScore(diverge_score, False, np.nan, np.nan, np.nan)
    if rescale:
        output = output * (np.std(target) / (np.std(output) + _STD_EPS))
    freqs, psd_target = _welch_psd(target, sample_rate)
    _, psd_output = _welch_psd(output, sample_rate)
    in_band = freqs <= fmax
    spec_corr = np.corrcoef(np.log(psd_target[in_band] + _LOG_PSD_EPS),
                            np.log(psd_output[in_band] + _LOG_PSD_EPS))[0, 1]
    amp_pen = np.abs(np.log((np.std(output) + _STD_EPS) / (np.std(target) + _STD_EPS)))
    pitch_pen = np.abs(np.log((_peak_frequency(freqs, psd_output) + _PITCH_EPS)
                              / (_peak_frequency(freqs, psd_target) + _PITCH_EPS)))
    score = spec_corr - w_amp * amp_pen - w_pitch * pitch_pen
    # np.maximum keeps a NaN score NaN (undefined correlation), so rank_seeds can rank it last.
    return SegmentScore(float(np.maximum(score, diverge_score)), True, float(spec_corr), float(amp_pen),
                        float(pitch_pen), lead_in_level_db(output, lead_in),
                        onset_delay_ms(target, output, lead_in, sample_rate) if lead_in else np.nan)


def _nan_mean(values: np.ndarray) -> float:
    """Mean over the non-NaN values; NaN (without a warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else np.nan


class Autonomy(NamedTuple):
    """A model's autonomy on a set of vocalisations (`autonomy_score`).

    Attributes:
      score: the mean segment score.
      segments: each vocalisation's `SegmentScore`.
      breakdown: `spec_corr`, `amp_pen`, `pitch_pen`, `lead_in_db`, `onset_delay_ms` (means over
        the segments where they are defined, NaN if none), `bounded_frac` (fraction of bounded
        segments), `cold_start` and `rescale`.
    """

    score: float
    segments: tuple
    breakdown: dict

    @property
    def segment_scores(self) -> np.ndarray:
        """(V,) each vocalisation's score."""
        return np.array([s.score for s in self.segments])


def autonomy_score(targets: Sequence[np.ndarray] | np.ndarray, outputs: Sequence[np.ndarray] | np.ndarray,
                   sample_rate: float, fmax: float = 8000.0, w_amp: float = 1.0, w_pitch: float = 1.0,
                   diverge_score: float = -5.0, rescale: bool = False, cold_start: bool = True,
                   lead_ins: Sequence[int] | None = None) -> Autonomy:
    """The autonomy score of a model on a set of vocalisations (docs/method.md, "Evaluation").

    Args:
      targets: V raw vocalisations, a (V, n) array or a sequence of 1-D arrays.
      outputs: the V raw autonomous outputs (`autonomous_outputs`), each as long as its target.
      sample_rate, fmax, w_amp, w_pitch, diverge_score, rescale: as in `segment_score`.
      cold_start: echoed in the breakdown; documents that the segments start with a silence
        lead-in and changes nothing, as in the reference.
      lead_ins: (V,) each segment's lead-in in samples, for the listening metrics; None: none.

    Returns:
      The `Autonomy`.
    """
    lead_ins = [0] * len(targets) if lead_ins is None else lead_ins
    segments = [segment_score(t, y, sample_rate, fmax, w_amp, w_pitch, diverge_score, rescale, int(lead_in))
                for t, y, lead_in in zip(targets, outputs, lead_ins, strict=True)]
    if not segments:
        raise ValueError("autonomy_score needs at least one segment")
    scores = np.array([s.score for s in segments])
    breakdown = {name: _nan_mean(np.array([getattr(s, name) for s in segments])) for name in _COMPONENTS}
    breakdown.update(bounded_frac=float(np.mean([s.bounded for s in segments])), cold_start=cold_start,
                     rescale=rescale)
    return Autonomy(float(scores.mean()), tuple(segments), breakdown)


BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.9


def autonomy_summary(autonomy: Autonomy, seed: int = 0) -> dict:
    """What the segment scores say beyond their mean (the reference's score), for a verdict.

    Returns:
      n_vocalisations; mean; median; frac_positive (the fraction of segments scoring > 0);
      mean_ci90, a percentile bootstrap 90 % interval of the mean (10 000 resamples of the
      segments drawn by `default_rng(seed)`); median_lead_in_db and median_onset_delay_ms, the
      medians of the listening metrics over the segments where they are defined (NaN if none).
    """
    scores = autonomy.segment_scores
    resampled = scores[np.random.default_rng(seed).integers(0, len(scores), (BOOTSTRAP_RESAMPLES, len(scores)))]
    low, high = np.quantile(resampled.mean(axis=1), [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])

    def median(name):
        values = np.array([getattr(s, name) for s in autonomy.segments])
        return float(np.median(values[~np.isnan(values)])) if (~np.isnan(values)).any() else np.nan

    return {"n_vocalisations": len(scores), "mean": float(scores.mean()), "median": float(np.median(scores)),
            "frac_positive": float(np.mean(scores > 0)), "mean_ci90": [float(low), float(high)],
            "median_lead_in_db": median("lead_in_db"), "median_onset_delay_ms": median("onset_delay_ms")}


def autonomous_outputs(model: Ouroboros, x: jax.Array, dxdt: jax.Array, rollout_config: RolloutConfig) -> jax.Array:
    """Integrates the model autonomously over whole vocalisations (docs/method.md, "Evaluation").

    The drives come from the model on each whole vocalisation; the state starts at the data
    (x[:, 0], time_scale * dxdt[:, 0]) without noise and is integrated with the training
    integrator over all n samples. Pure: vmap it over a seed axis with `nnx.split`/`nnx.merge`
    (or `nnx.vmap`); `autonomous_outputs_jit` is the compiled version.

    Args:
      model: the Ouroboros.
      x: (V, n) float32 audio.
      dxdt: (V, n) its first derivative per sample (`first_derivative`, computed once on the
        host: it is the same for every seed).
      rollout_config: the training integrator's settings; step_size must be dt / tau.

    Returns:
      (V, n) raw autonomous output, first sample x[:, 0].
    """
    drives = model(x, dxdt)
    x0, v0 = initial_state(x, model.config.time_scale * dxdt)
    return rollout(drives, x0, v0, x.shape[1], rollout_config)


autonomous_outputs_jit = nnx.jit(autonomous_outputs, static_argnames="rollout_config")


def generate(model: Ouroboros, audio: np.ndarray, rollout_config: RolloutConfig, rescale: bool = True,
             ref_rms: float | None = None) -> np.ndarray:
    """Deployed generation: the detrended autonomous output of the model on `audio` (docs/method.md, "Evaluation").

    Each output is detrended with `correct` and, if `rescale` and it did not diverge (finite, std
    > 1e-9), scaled to the standard deviation `ref_rms` or, by default, that of its detrended
    vocalisation. A non-finite output is returned raw (neither detrended nor scaled); a collapsed
    one detrended but not scaled.

    Args:
      model: the Ouroboros.
      audio: (V, n) or (n,) vocalisations, n > 200.
      rollout_config: the training integrator's settings.
      rescale: scale bounded outputs to the reference amplitude.
      ref_rms: the target standard deviation; None: that of `correct(audio)`, per vocalisation.

    Returns:
      float64 array of the shape of `audio`.
    """
    audio = np.asarray(audio, dtype=np.float32)
    batch = np.atleast_2d(audio)
    raw = autonomous_outputs_jit(model, batch, first_derivative(batch).astype(np.float32), rollout_config)
    return deployed(raw, batch, rescale, ref_rms).reshape(audio.shape)


def deployed(raw: np.ndarray, audio: np.ndarray, rescale: bool = True, ref_rms: float | None = None) -> np.ndarray:
    """The host half of `generate`: raw autonomous outputs as deployed (detrended, and rescaled if
    `rescale`), for outputs integrated elsewhere (a run's scored ones).

    Args:
      raw: (V, n) raw autonomous outputs.
      audio: (V, n) their vocalisations.
      rescale, ref_rms: as in `generate`.

    Returns:
      (V, n) float64: a non-finite row raw, a collapsed one detrended but not scaled.
    """
    raw = np.asarray(raw, dtype=np.float64)
    generated = np.empty_like(raw)
    for i, (vocalisation, output) in enumerate(zip(audio, raw)):
        if not np.all(np.isfinite(output)):
            generated[i] = output
            continue
        output = correct(output)
        scale = 1.0
        if rescale and np.std(output) > DIVERGED_STD:
            rms = np.std(correct(vocalisation)) if ref_rms is None else ref_rms
            scale = rms / (np.std(output) + _STD_EPS)
        generated[i] = output * scale
    return generated


def rank_seeds(val_autonomy: np.ndarray, val_bounded_frac: np.ndarray,
               diverged: np.ndarray | None = None) -> np.ndarray:
    """Orders seeds best first for culling (keep the first k) and selection (take the first).

    Higher validation autonomy first, ties broken by higher bounded fraction, then by seed
    index. A NaN autonomy ranks after every number (the reference would select it), and seeds
    that diverged (stopped in training, or diverged in every validation rollout) rank after all
    others (docs/method.md, "Evaluation").

    Args:
      val_autonomy: (S,) validation autonomy scores.
      val_bounded_frac: (S,) validation bounded fractions.
      diverged: (S,) bool, seeds that diverged; None: none.

    Returns:
      (S,) int seed indices, best first.
    """
    autonomy = np.asarray(val_autonomy, dtype=np.float64)
    bounded_frac = np.nan_to_num(np.asarray(val_bounded_frac, dtype=np.float64), nan=-np.inf)
    diverged = np.zeros(autonomy.shape, bool) if diverged is None else np.asarray(diverged, bool)
    no_score = np.isnan(autonomy)
    # np.lexsort sorts by the last key first and is stable, so equal seeds keep index order.
    return np.lexsort((-bounded_frac, -np.where(no_score, 0.0, autonomy), no_score, diverged))


RANK_STATISTICS = ("mean", "median")


def ranking(scores: Sequence[Autonomy], diverged: np.ndarray | None = None, statistic: str = "mean") -> np.ndarray:
    """`rank_seeds` of the seeds whose validation `Autonomy` is `scores`, by the `statistic` of
    their segment scores (the mean is `Autonomy.score`, the reference's): indices, best first."""
    values = [s.score if statistic == "mean" else float(np.median(s.segment_scores)) for s in scores]
    return rank_seeds(np.array(values), np.array([s.breakdown["bounded_frac"] for s in scores]), diverged)
