"""Held-out cold-start vocalisations for validation and test (SPEC f.4).

A cold-start vocalisation is the first syllable of a held-out file with `silence_pad_samples`
of the audio before its onset as lead-in, so that an autonomous rollout starts from
near-silence, as it must when the model sings on its own.
"""

import pathlib
from collections.abc import Sequence

import numpy as np

from ouroboros_jax.data.recordings import Recording


def cold_start_window(
    audio: np.ndarray, sample_rate: int, onset_s: float, offset_s: float, silence_pad_samples: int
) -> np.ndarray:
    """One syllable with its lead-in: audio[max(0, on - silence_pad_samples) : off].

    Args:
      audio: (T,) a recording.
      sample_rate: its sample rate in Hz.
      onset_s, offset_s: the syllable in seconds; on and off are them rounded to samples.
      silence_pad_samples: lead-in before the onset, clipped at the start of the recording.

    Returns:
      (off - max(0, on - silence_pad_samples),) a view of `audio`.
    """
    onset, offset = (int(round(t * sample_rate)) for t in (onset_s, offset_s))
    return audio[max(0, onset - silence_pad_samples) : offset]


def cold_start_windows(
    recordings: Sequence[Recording], n_vocs: int, silence_pad_samples: int
) -> list[tuple[pathlib.Path, np.ndarray]]:
    """The cold-start windows of the first syllable of each of the first `n_vocs` recordings.

    Recordings without syllables are passed over (the reference would fail on them), so up to
    `n_vocs` windows come from the first recordings that have syllables.

    Returns:
      (recording path, window (n_i,)) pairs in recording order, each window as `cold_start_window`.
    """
    with_syllables = [r for r in recordings if len(r.syllables)][:n_vocs]
    return [(r.path, cold_start_window(r.audio, r.sample_rate, *r.syllables[0], silence_pad_samples))
            for r in with_syllables]


def cold_start_vocalisations(
    recordings: Sequence[Recording], n_vocs: int, silence_pad_samples: int
) -> np.ndarray:
    """The first syllable of each of the first `n_vocs` recordings, with a silent lead-in.

    Each window is [max(0, on - silence_pad_samples), off) in samples, on/off the first (earliest)
    syllable's rounded onset and offset; all windows are then cut to the shortest, so they stack
    (`cold_start_windows` says which recordings give them).

    Args:
      recordings: held-out recordings in split order.
      n_vocs: how many vocalisations to take at most.
      silence_pad_samples: lead-in before the onset, in samples.

    Returns:
      (n, L) float32 with n <= n_vocs; (0, 0) if there is none.
    """
    windows = [w for _, w in cold_start_windows(recordings, n_vocs, silence_pad_samples)]
    if not windows:
        return np.zeros((0, 0), dtype=np.float32)
    length = min(len(w) for w in windows)
    return np.stack([w[:length] for w in windows]).astype(np.float32)
