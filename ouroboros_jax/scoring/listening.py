"""The listening items of the acceptance bar, measured (docs/method.md, "Listening metrics").

The autonomy score weighs a cold-start output's spectrum, level and pitch over the whole window;
a listener also hears whether the model keeps quiet until the syllable and starts when it does.
Two numbers say that, each computed on a detrended signal (`evaluation.correct`) whose first
`lead_in` samples are the lead-in and the rest the syllable:

- the lead-in level: 10 log10 of the mean power over the lead-in over the mean power over the
  syllable, in dB (a quiet lead-in is far below 0);
- the onset: the first sample at which the envelope (the RMS over a centred window of
  `ENVELOPE_MS`) reaches `ONSET_FRACTION` of the signal's own RMS over the syllable. The onset
  delay is the model's onset minus the target's, in ms: negative when the model starts early
  (at -lead-in when it already sounds at the window's start), positive when it starts late.
"""

import numpy as np

ENVELOPE_MS = 5.0
ONSET_FRACTION = 0.5  # of the syllable's RMS: -6 dB

_POWER_EPS = 1e-30  # keeps the log of a silent lead-in finite


def lead_in_level_db(signal: np.ndarray, lead_in: int) -> float:
    """The signal's level over its first `lead_in` samples relative to the rest, dB; NaN if lead_in is 0.

    signal: (n,) with 0 <= lead_in < n.
    """
    signal = np.asarray(signal, dtype=np.float64)
    if lead_in == 0:
        return np.nan
    lead, syllable = np.mean(signal[:lead_in] ** 2), np.mean(signal[lead_in:] ** 2)
    return float(10.0 * np.log10((lead + _POWER_EPS) / (syllable + _POWER_EPS)))


def envelope(signal: np.ndarray, width: int) -> np.ndarray:
    """(n,) RMS of `signal` (n,) over a centred window of `width` samples, the window cut at the ends."""
    power = np.asarray(signal, dtype=np.float64) ** 2
    window = np.ones(max(1, width))
    return np.sqrt(np.convolve(power, window, "same") / np.convolve(np.ones_like(power), window, "same"))


def onset_sample(signal: np.ndarray, lead_in: int, sample_rate: float) -> int | None:
    """The first sample whose envelope reaches ONSET_FRACTION of the RMS over signal[lead_in:];
    None when the syllable part is silent."""
    signal = np.asarray(signal, dtype=np.float64)
    level = np.sqrt(np.mean(signal[lead_in:] ** 2))
    if not level > 0:
        return None
    reached = envelope(signal, int(round(ENVELOPE_MS / 1000.0 * sample_rate))) >= ONSET_FRACTION * level
    return int(np.argmax(reached))


def onset_delay_ms(target: np.ndarray, output: np.ndarray, lead_in: int, sample_rate: float) -> float:
    """The output's onset minus the target's (`onset_sample`), in ms; NaN if either has no onset."""
    onsets = [onset_sample(s, lead_in, sample_rate) for s in (target, output)]
    if None in onsets:
        return np.nan
    return (onsets[1] - onsets[0]) / sample_rate * 1000.0
