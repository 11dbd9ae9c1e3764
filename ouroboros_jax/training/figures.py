"""Figures of a trained model and of its training (docs/figures.md), as matplotlib `Figure`s.

Pure functions of arrays: no files, no flags. `python -m ouroboros_jax.plot` and the training
run load what they need, call these, and save or log the result.

- `specgram_figure`: a vocalisation and the model's autonomous output on it, waveform and
  spectrogram, on shared axes and a shared colour range.
- `spectrogram_pair_figure`: the same two spectrograms side by side, small (the run report's).
- `loss_panels_figure`: per-epoch loss panels of one or more runs, overlaid.
- `drives_figure`: the drives (omega in Hz, gamma, the largest kernel weights) over time, under
  the vocalisation's spectrogram.
- `syllable_types_figure`: a few example spectrograms of each syllable type, one row per type.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot: no
window is opened, and a training run that draws a figure at every checkpoint keeps no
reference to it in pyplot's registry of open figures.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.signal
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ouroboros_jax.model.ouroboros import Drives

SPECGRAM_SIZE = (10.0, 6.0)
SPECTROGRAM_PAIR_SIZE = (9.0, 2.6)
LOSS_PANELS_SIZE = (8.0, 13.0)
DRIVES_SIZE = (9.0, 8.0)
SYLLABLE_PANEL_SIZE = (1.5, 1.2)
"""Figure sizes in inches; a PNG saved at `dpi` is (height * dpi, width * dpi) pixels."""

DPI = 140
"""Resolution of the saved PNGs, as the reference's plotting script."""

DYNAMIC_RANGE_DECADES = 6.0
"""Colour range of a spectrogram: at most this many decades of magnitude (120 dB) below its peak."""

SYLLABLE_RANGE_DECADES = 3.0
"""Colour range of an example syllable: 60 dB below its own peak, the floor of the clustering's features."""

WARMUP_REACHED = 0.99
"""The spec warm-up ends at the first epoch where lam_spec_t reaches this fraction of its maximum."""

LOSS_PANELS = (  # (TensorBoard tag, panel title, log y)
    ("Loss/spec", "spec (multi-resolution STFT)", True),
    ("Loss/tf", "tf (teacher-forced anchor)", False),
    ("Loss/env", "env (envelope L1)", False),
    ("Loss/env_log", "env_log (log-ratio envelope)", False),
    ("Loss/total", "total", True),
    ("Train/H", "rollout horizon H (samples)", False),
    ("Train/lam_spec_t", "lam_spec_t (spec weight)", False),
)
VALIDATION_PANELS = (  # logged once per epoch (docs/cli.md, "TensorBoard")
    ("Val/autonomy", "validation autonomy (mean over the vocalisations)", False),
    ("Val/bounded_frac", "validation bounded_frac", False),
)

_MAGNITUDE_FLOOR = 1e-12  # keeps log10 finite on exact silence


def _figure(size: tuple[float, float], layout: str | None = "constrained") -> Figure:
    figure = Figure(figsize=size, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _milliseconds(n: int, sample_rate: float) -> np.ndarray:
    return np.arange(n) / sample_rate * 1000.0


def log_spectrogram(signal: np.ndarray, sample_rate: float, n_fft: int = 512, hop: int = 128,
                    fmax: float = 8000.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log10 magnitude of the short-time Fourier transform (Hann window), up to `fmax`.

    The signal is zero-padded by half a window at both ends, so the window centres run from the
    first sample to past the last and the spectrogram spans the whole signal.

    Args:
      signal: (n,) audio; non-finite samples give non-finite columns.
      sample_rate: Hz.
      n_fft: window length in samples (shortened to n for a shorter signal).
      hop: samples between windows.
      fmax: highest frequency kept, Hz.

    Returns:
      (times, freqs, log_magnitude): window centres (T,) in ms, frequencies (F,) in Hz, and
      (F, T) log10 |STFT|.
    """
    signal = np.asarray(signal, dtype=np.float64)
    nperseg = min(n_fft, signal.shape[-1])
    freqs, times, stft = scipy.signal.stft(signal, fs=sample_rate, window="hann", nperseg=nperseg,
                                           noverlap=max(nperseg - hop, 0), detrend=False, boundary="zeros")
    keep = freqs <= fmax
    return times * 1000.0, freqs[keep], np.log10(np.maximum(np.abs(stft[keep]), _MAGNITUDE_FLOOR))


def _draw_spectrogram(ax, times, freqs, log_magnitude, vmin, vmax, interpolation: str = "antialiased"):
    """imshow of a `log_spectrogram` with pixel edges halfway between window centres ("nearest"
    `interpolation`: one flat block per STFT bin, which also halves a PNG's size)."""
    dt = times[1] - times[0] if len(times) > 1 else 1.0
    df = freqs[1] - freqs[0]
    extent = (times[0] - dt / 2, times[-1] + dt / 2, freqs[0] - df / 2, freqs[-1] + df / 2)
    image = ax.imshow(log_magnitude, origin="lower", aspect="auto", extent=extent, vmin=vmin, vmax=vmax,
                      cmap="magma", interpolation=interpolation)
    ax.set_ylabel("frequency (Hz)")
    return image


def shared_colour_range(spectrograms) -> tuple[float, float]:
    """(vmin, vmax) of `log_spectrogram`s drawn to compare: the range of their finite levels, capped
    at `DYNAMIC_RANGE_DECADES` below the peak (at least one must have a finite level)."""
    levels = np.concatenate([s[2][np.isfinite(s[2])] for s in spectrograms])
    vmax = levels.max()
    return max(levels.min(), vmax - DYNAMIC_RANGE_DECADES), vmax


def specgram_figure(target: np.ndarray, output: np.ndarray, sample_rate: float, n_fft: int = 512, hop: int = 128,
                    fmax: float = 8000.0, title: str = "") -> Figure:
    """The 2x2 spectrogram figure (docs/figures.md): target (top) and autonomous output (bottom).

    Left, the waveforms; the output is drawn on the target's y-limits, so an output louder than
    the song runs off the axes. Right, the log10-magnitude spectrograms on one colour range (the
    range of both, capped at `DYNAMIC_RANGE_DECADES` below their peak), so their levels compare.

    Args:
      target: (n,) the vocalisation as scored (detrended with `evaluation.correct`); finite.
      output: (m,) the model's autonomous output on it, detrended too; may be non-finite.
      sample_rate: Hz.
      n_fft, hop, fmax: spectrogram window, hop (samples) and highest frequency (Hz).
      title: the figure's title.

    Returns:
      The figure: axes [target waveform, target spectrogram, output waveform, output
      spectrogram, colour bar].
    """
    figure = _figure(SPECGRAM_SIZE)
    (ax_tw, ax_ts), (ax_ow, ax_os) = figure.subplots(2, 2, sharex=True)
    spectrograms = [log_spectrogram(s, sample_rate, n_fft, hop, fmax) for s in (target, output)]
    vmin, vmax = shared_colour_range(spectrograms)
    for name, signal, ax_w, ax_s, spectrogram in (("target", target, ax_tw, ax_ts, spectrograms[0]),
                                                   ("autonomous output", output, ax_ow, ax_os, spectrograms[1])):
        ax_w.plot(_milliseconds(len(signal), sample_rate), signal, lw=0.4, color="k")
        ax_w.set_ylabel("amplitude")
        ax_w.set_title(f"{name}: waveform")
        image = _draw_spectrogram(ax_s, *spectrogram, vmin, vmax)
        ax_s.set_title(f"{name}: log10 |STFT|")
    ax_ow.set_ylim(ax_tw.get_ylim())
    # The shared time axis spans the audio, not just the spectrogram's window centres.
    ax_tw.set_xlim(0.0, max(len(target), len(output)) / sample_rate * 1000.0)
    for ax in (ax_ow, ax_os):
        ax.set_xlabel("time (ms)")
    figure.colorbar(image, ax=[ax_ts, ax_os], label="log10 magnitude")
    if title:
        figure.suptitle(title)
    return figure


def spectrogram_pair_figure(target: np.ndarray, output: np.ndarray, sample_rate: float,
                            names: tuple[str, str] = ("target", "model"), n_fft: int = 512, hop: int = 128,
                            fmax: float = 8000.0) -> Figure:
    """Two spectrograms side by side on ONE colour range (`shared_colour_range`), so that their
    levels compare: a quiet model is dark where the song is bright.

    Args:
      target: (n,) the vocalisation as scored (detrended with `evaluation.correct`); finite.
      output: (m,) the model's output on it, detrended too; may be non-finite (drawn blank).
      sample_rate: Hz.
      names: the two panels' titles.
      n_fft, hop, fmax: as in `specgram_figure`.

    Returns:
      The figure: axes [target, output, colour bar], sharing time and frequency.
    """
    # A fixed layout: a report draws one per vocalisation, and constrained layout would double the cost.
    figure = _figure(SPECTROGRAM_PAIR_SIZE, layout=None)
    axes = figure.subplots(1, 2, sharex=True, sharey=True,
                           gridspec_kw=dict(left=0.075, right=0.88, bottom=0.17, top=0.89, wspace=0.06))
    spectrograms = [log_spectrogram(s, sample_rate, n_fft, hop, fmax) for s in (target, output)]
    vmin, vmax = shared_colour_range(spectrograms)
    for ax, name, spectrogram in zip(axes, names, spectrograms):
        image = _draw_spectrogram(ax, *spectrogram, vmin, vmax, interpolation="nearest")
        ax.set_title(name, fontsize="medium", loc="left")
        ax.set_xlabel("time (ms)")
    axes[1].set_ylabel("")
    axes[0].set_xlim(0.0, max(len(target), len(output)) / sample_rate * 1000.0)
    figure.colorbar(image, cax=figure.add_axes((0.895, 0.17, 0.012, 0.72)), label="log10 magnitude")
    return figure


def epoch_means(scalars: Mapping[str, tuple[np.ndarray, np.ndarray]],
                batches_per_epoch: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-epoch means of per-step scalars (`training.events.read_scalars`).

    A value logged at global step s belongs to epoch s // batches_per_epoch (the logbook's step
    is epoch * batches_per_epoch + batch). Non-finite values are left out of the means, so one
    skipped step does not blank its epoch; an epoch with none finite is NaN.

    Args:
      scalars: tag -> (steps (N,), values (N,)).
      batches_per_epoch: from the run's run.json, never assumed.

    Returns:
      tag -> (epochs (E,), means (E,)): the epochs with a value, counted from 1.
    """
    means = {}
    for tag, (steps, values) in scalars.items():
        epochs, index = np.unique(np.asarray(steps) // batches_per_epoch, return_inverse=True)
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        sums = np.bincount(index, weights=np.where(finite, values, 0.0), minlength=len(epochs))
        counts = np.bincount(index, weights=finite.astype(np.float64), minlength=len(epochs))
        with np.errstate(invalid="ignore", divide="ignore"):
            means[tag] = (epochs + 1, np.where(counts > 0, sums / counts, np.nan))
    return means


def warmup_end(epochs: np.ndarray, lam_spec_t: np.ndarray) -> int | None:
    """The first epoch where lam_spec_t reaches `WARMUP_REACHED` of its maximum; None if it is never positive.

    Args:
      epochs: (E,) epoch numbers.
      lam_spec_t: (E,) the spec weight of each epoch.
    """
    lam_spec_t = np.asarray(lam_spec_t, dtype=np.float64)
    peak = np.nanmax(lam_spec_t) if np.any(np.isfinite(lam_spec_t)) else np.nan
    if not peak > 0:
        return None
    return int(epochs[np.argmax(lam_spec_t >= WARMUP_REACHED * peak)])


def loss_panels_figure(runs: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
                       panels: Sequence[tuple[str, str, bool]] = LOSS_PANELS) -> Figure:
    """Per-epoch loss panels of several runs (or members of one run), overlaid (`panels`, top to bottom).

    Each run has one colour; a faint dashed vertical line of that colour marks the epoch where
    its spec warm-up ends (`warmup_end`). A tag a run did not log (Loss/env with --lam_env=0) is
    left out of its panel.

    Args:
      runs: label -> the run's `epoch_means` (tag -> (epochs, means)).
      panels: (TensorBoard tag, title, log y) per panel; `LOSS_PANELS`, or with `VALIDATION_PANELS`.

    Returns:
      The figure, one axes per panel, sharing the epoch axis; as tall per panel as `LOSS_PANELS_SIZE`.
    """
    width, height = LOSS_PANELS_SIZE
    figure = _figure((width, height * len(panels) / len(LOSS_PANELS)))
    axes = figure.subplots(len(panels), 1, sharex=True)
    for (tag, name, log_y), ax in zip(panels, axes):
        for colour, (label, curves) in enumerate(runs.items()):
            if tag in curves:
                ax.plot(*curves[tag], marker=".", lw=1.2, color=f"C{colour}", label=label)
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="0.5")
        elif log_y:
            ax.set_yscale("log")
        ax.set_title(name, fontsize="medium", loc="left")
    for colour, curves in enumerate(runs.values()):
        end = warmup_end(*curves["Train/lam_spec_t"]) if "Train/lam_spec_t" in curves else None
        if end is not None:
            for ax in axes:
                ax.axvline(end, color=f"C{colour}", ls="--", lw=0.8, alpha=0.4)
    axes[0].legend(fontsize="small")
    axes[-1].set_xlabel("epoch")
    return figure


def omega_hz(omega: np.ndarray, sample_rate: float, time_scale: float = 1.0) -> np.ndarray:
    """omega (rad per unit of rescaled time s = t / tau) in Hz: omega / (2 pi tau), tau = time_scale * dt."""
    return np.asarray(omega) * sample_rate / (2.0 * np.pi * time_scale)


def largest_kernel_terms(W: np.ndarray, n: int) -> list[tuple[int, int]]:
    """The n kernel terms (i, j) of largest mean |W_ij| over time, largest first. W: (L, P, P)."""
    strength = np.abs(np.asarray(W)).mean(axis=0)
    order = np.argsort(strength, axis=None, kind="stable")[::-1][:n]
    return [tuple(int(k) for k in np.unravel_index(flat, strength.shape)) for flat in order]


def drives_figure(target: np.ndarray, drives: Drives, sample_rate: float, time_scale: float = 1.0,
                  n_largest: int = 6, n_fft: int = 512, hop: int = 128, fmax: float = 8000.0,
                  title: str = "") -> Figure:
    """The drives of one vocalisation over time, under its spectrogram, on a shared time axis.

    Panels, top to bottom: the target's log10-magnitude spectrogram; omega in Hz
    (`omega_hz`); gamma (below 0 the linear part pumps energy in); the `n_largest` kernel
    weights W_ij by mean |W_ij|, labelled x^i x'^j.

    Args:
      target: (n,) the vocalisation (detrended with `evaluation.correct`).
      drives: the model's drives on it, one vocalisation: omega, gamma (n,), W (n, P, P).
      sample_rate: Hz.
      time_scale: the model's tau / dt (`ModelConfig.time_scale`).
      n_largest: kernel weights drawn.
      n_fft, hop, fmax: as in `specgram_figure`.
      title: the figure's title.

    Returns:
      The figure: axes [spectrogram, omega, gamma, kernel weights].
    """
    figure = _figure(DRIVES_SIZE)
    ax_s, ax_omega, ax_gamma, ax_w = figure.subplots(4, 1, sharex=True, height_ratios=(2, 1, 1, 1.5))
    times, freqs, log_magnitude = log_spectrogram(target, sample_rate, n_fft, hop, fmax)
    vmax = np.nanmax(log_magnitude)
    _draw_spectrogram(ax_s, times, freqs, log_magnitude, vmax - DYNAMIC_RANGE_DECADES, vmax)
    ax_s.set_title("target: log10 |STFT|", fontsize="medium", loc="left")
    t = _milliseconds(len(drives.omega), sample_rate)
    ax_omega.plot(t, omega_hz(drives.omega, sample_rate, time_scale), lw=0.8, color="C0")
    ax_omega.set_ylabel("omega (Hz)")
    ax_gamma.plot(t, drives.gamma, lw=0.8, color="C1")
    ax_gamma.axhline(0.0, color="0.6", lw=0.5)
    ax_gamma.set_ylabel("gamma")
    for i, j in largest_kernel_terms(drives.W, n_largest):
        ax_w.plot(t, drives.W[:, i, j], lw=0.8, label=f"$x^{{{i}}}\\,\\dot{{x}}^{{{j}}}$")
    ax_w.set_ylabel("kernel weight")
    ax_w.set_title(f"the {n_largest} largest kernel weights $W_{{ij}}$, by term $x^i\\,\\dot{{x}}^j$",
                   fontsize="medium", loc="left")
    ax_w.legend(fontsize="small", ncol=min(n_largest, 3))
    ax_w.set_xlabel("time (ms)")
    ax_w.set_xlim(0.0, t[-1])
    if title:
        figure.suptitle(title)
    return figure


def syllable_types_figure(types: Sequence[tuple[str, Sequence[np.ndarray]]], sample_rate: float,
                          fmax: float = 10000.0, title: str = "") -> Figure:
    """Example spectrograms of each syllable type: one row per type, its examples left to right.

    Every panel spans the same time (the longest example) and frequencies, so durations and
    pitches compare across types; each is coloured over 60 dB below its own peak, since the
    types are told apart by shape, not level.

    Args:
      types: (caption, examples) per type, e.g. ("a: 89 syllables, median 73 ms", [x0, x1, ...]);
        each example (n_i,) is one syllable's samples, onset to offset.
      sample_rate: Hz.
      fmax: highest frequency drawn, Hz.
      title: the figure's title.

    Returns:
      The figure, one axes per panel (empty panels where a type has fewer examples).
    """
    n_columns = max(len(examples) for _, examples in types)
    width, height = SYLLABLE_PANEL_SIZE
    figure = _figure((width * n_columns + 0.6, height * len(types) + 0.5))
    axes = np.asarray(figure.subplots(len(types), n_columns, sharex=True, sharey=True, squeeze=False))
    n_fft, hop = round(0.008 * sample_rate), round(0.001 * sample_rate)
    longest = max(len(x) for _, examples in types for x in examples) / sample_rate * 1000.0
    for row, (caption, examples) in zip(axes, types):
        row[0].set_title(caption, loc="left", fontsize=8)
        for ax, x in zip(row, examples):
            times, freqs, log_magnitude = log_spectrogram(x, sample_rate, n_fft, hop, fmax)
            peak = log_magnitude.max()
            _draw_spectrogram(ax, times, freqs / 1000.0, log_magnitude, peak - SYLLABLE_RANGE_DECADES, peak)
            ax.set_ylabel("")
        for ax in row:
            ax.tick_params(labelsize=6)
        for ax in row[len(examples):]:
            ax.set_axis_off()
        row[0].set_ylabel("kHz", fontsize=7)
    axes[0, 0].set_xlim(0.0, longest)
    for ax in axes[-1]:
        ax.set_xlabel("ms", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure
