"""Finding syllables from amplitude, for recordings that have no annotations yet.

The reference expects hand- or tool-made annotations; this fills the gap (its follow-up list
names a segmenter). The method is the classic amplitude segmentation of songbird work:

1. Band power envelope: a short-time Fourier transform (Hann window of `window_ms`, which
   already smooths the envelope, one frame every `hop_ms`, frames centred on their time), the
   power summed over the bins in [`min_freq_hz`, `max_freq_hz`], optionally smoothed further by
   a Gaussian of `smooth_ms`, in dB.
2. Noise floor: the `noise_percentile` percentile of that envelope over the file, so the
   thresholds are relative (dB above the floor) and do not depend on recording gain.
3. Hysteresis: a syllable starts where the envelope rises above `onset_db` and ends where it
   next falls below `offset_db` (<= `onset_db`), so dips inside a loud syllable do not split it.
   Crossing times are interpolated between frames.
4. Clean-up: syllables separated by less than `min_gap_ms` are merged; syllables shorter than
   `min_dur_ms` (clicks) or longer than `max_dur_ms` (cage noise, calls) are dropped, and so are
   syllables cut by the start or end of the file, whose true onset or offset is unknown.

With the defaults, boundaries of harmonic syllables 20-40 dB above white noise come out within
2.5 ms of the truth (tests/test_data_segmenter.py). A longer window or more smoothing moves
onsets earlier and offsets later, by up to half the window or a few smoothing widths.
"""

import dataclasses

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ouroboros_jax.errors import InputError
from ouroboros_jax.settings import setting

# Power added before the logarithm, so digital silence gives a finite envelope.
_POWER_FLOOR = 1e-20


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
    """Thresholds of the syllable segmenter; each field is the `segment` CLI's flag of the same name.

    Defaults suit adult songbird song (zebra and Bengalese finches, canaries) in a quiet box.
    """

    min_freq_hz: float = setting(500.0, "Lower edge (Hz) of the frequency band whose power is tracked.")
    max_freq_hz: float = setting(10000.0, "Upper edge (Hz) of the frequency band whose power is tracked; capped at "
                                 "Nyquist.")
    window_ms: float = setting(5.0, "Length of the spectrogram's Hann window (ms); it smooths the envelope.")
    hop_ms: float = setting(1.0, "Spacing of the envelope's frames (ms); threshold crossings are interpolated "
                            "between frames.")
    smooth_ms: float = setting(0.0, "Extra Gaussian smoothing of the envelope (ms, standard deviation); 0 = none. "
                               "Raise it for noisy recordings.")
    noise_percentile: float = setting(10.0, "Percentile of a file's envelope taken as its noise floor.")
    onset_db: float = setting(15.0, "A syllable starts where the envelope rises this many dB above the noise floor.")
    offset_db: float = setting(8.0, "A syllable ends where the envelope falls below this many dB above the noise "
                               "floor (<= --onset_db).")
    min_gap_ms: float = setting(5.0, "Syllables closer than this (ms) are merged into one.")
    min_dur_ms: float = setting(10.0, "Shorter syllables (ms) are dropped as clicks.")
    max_dur_ms: float = setting(500.0, "Longer syllables (ms) are dropped as noise or calls.")

    def __post_init__(self):
        for name in ("window_ms", "hop_ms", "max_freq_hz", "max_dur_ms"):
            if not getattr(self, name) > 0:
                raise InputError(f"--{name}={getattr(self, name)}: must be positive")
        for name in ("min_freq_hz", "smooth_ms", "min_gap_ms", "min_dur_ms"):
            if not getattr(self, name) >= 0:
                raise InputError(f"--{name}={getattr(self, name)}: must not be negative")
        if self.min_freq_hz >= self.max_freq_hz:
            raise InputError(
                f"--min_freq_hz={self.min_freq_hz} must be below --max_freq_hz={self.max_freq_hz}"
            )
        if not 0 <= self.noise_percentile < 100:
            raise InputError(f"--noise_percentile={self.noise_percentile}: must be in [0, 100)")
        if self.offset_db > self.onset_db:
            raise InputError(
                f"--offset_db={self.offset_db} must not exceed --onset_db={self.onset_db} (hysteresis)"
            )
        if self.min_dur_ms >= self.max_dur_ms:
            raise InputError(f"--min_dur_ms={self.min_dur_ms} must be below --max_dur_ms={self.max_dur_ms}")


def _frame_sizes(sample_rate: int, config: SegmenterConfig) -> tuple[int, int]:
    """(window, hop) in samples, each at least one sample."""
    window = max(2, round(config.window_ms * 1e-3 * sample_rate))
    hop = max(1, round(config.hop_ms * 1e-3 * sample_rate))
    return window, hop


def band_power_envelope(
    x: np.ndarray, sample_rate: int, config: SegmenterConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed spectral power in the configured band, in dB.

    Args:
      x: (T,) audio.
      sample_rate: in Hz.
      config: band, window, hop and smoothing.

    Returns:
      (envelope_db, times_s): both (F,), F = T // hop + 1; frame k is centred on sample k * hop.

    Raises:
      InputError: the band holds no frequency bin at this sample rate.
    """
    window, hop = _frame_sizes(sample_rate, config)
    freqs = np.fft.rfftfreq(window, 1.0 / sample_rate)
    in_band = (freqs >= config.min_freq_hz) & (freqs <= config.max_freq_hz)
    if not in_band.any():
        raise InputError(
            f"--min_freq_hz={config.min_freq_hz}, --max_freq_hz={config.max_freq_hz}: no frequency in "
            f"this band at {sample_rate} Hz sampling (Nyquist {sample_rate / 2:g} Hz)"
        )
    n_frames = len(x) // hop + 1
    half = window // 2
    padded = np.pad(np.asarray(x, dtype=np.float64), (half, window - half + hop))
    frames = np.lib.stride_tricks.sliding_window_view(padded, window)[::hop][:n_frames]
    spectrum = np.fft.rfft(frames * np.hanning(window), axis=-1)
    power = np.sum(np.abs(spectrum[:, in_band]) ** 2, axis=-1)
    if config.smooth_ms > 0:
        power = gaussian_filter1d(power, config.smooth_ms / (hop * 1e3 / sample_rate), mode="nearest")
    return 10.0 * np.log10(power + _POWER_FLOOR), np.arange(n_frames) * hop / sample_rate


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and (exclusive) end indices of the runs of True in a 1-d boolean mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _crossing(
    times: np.ndarray, level: np.ndarray, before: np.ndarray, after: np.ndarray, threshold: float
) -> np.ndarray:
    """Times where `level` crosses `threshold` between frames `before` and `after` (one apart)."""
    fraction = (threshold - level[before]) / (level[after] - level[before])
    return times[before] + fraction * (times[after] - times[before])


def find_syllables(
    x: np.ndarray, sample_rate: int, config: SegmenterConfig = SegmenterConfig()
) -> np.ndarray:
    """Syllable onsets and offsets of one recording.

    Args:
      x: (T,) audio.
      sample_rate: in Hz.
      config: the segmenter's thresholds.

    Returns:
      syllables: (K, 2) float64 onset/offset seconds, sorted, non-overlapping.
    """
    envelope_db, times = band_power_envelope(x, sample_rate, config)
    level = envelope_db - np.percentile(envelope_db, config.noise_percentile)
    starts, ends = _runs(level > config.offset_db)
    # Runs cut by the file's edges have no observable onset or offset.
    inside = (starts > 0) & (ends < len(level))
    starts, ends = starts[inside], ends[inside]
    # Hysteresis: a run above the offset threshold is a syllable only if it reaches the onset
    # threshold, and the syllable begins where the envelope first rises above it.
    loud = level > config.onset_db
    reaches = np.array([loud[s:e].any() for s, e in zip(starts, ends)], dtype=bool)
    first_loud = np.array([s + np.argmax(loud[s:e]) for s, e in zip(starts, ends)], dtype=np.int64)[reaches]
    last_above = ends[reaches] - 1
    # Crossing times interpolated linearly between the frames on either side of the threshold.
    onsets = _crossing(times, level, first_loud - 1, first_loud, config.onset_db)
    offsets = _crossing(times, level, last_above, last_above + 1, config.offset_db)
    if onsets.size:
        close = (onsets[1:] - offsets[:-1]) < config.min_gap_ms * 1e-3
        onsets = onsets[np.concatenate([[True], ~close])]
        offsets = offsets[np.concatenate([~close, [True]])]
    duration_ms = (offsets - onsets) * 1e3
    keep = (duration_ms >= config.min_dur_ms) & (duration_ms <= config.max_dur_ms)
    return np.stack([onsets[keep], offsets[keep]], axis=-1).reshape(-1, 2)
