"""Held-out cold-start vocalisations for validation and test (docs/method.md, "Cold-start vocalisations").

Every syllable of the selected types in a held-out file is a candidate. Its window is the
syllable with a lead-in before its onset, so that an autonomous rollout starts from
near-silence, as it must when the model sings on its own. On song recordings the previous
syllable often ends inside the reference's fixed lead-in (`silence_pad_samples`), so the lead-in
here stops at the previous syllable's offset: it is min(silence_pad_samples, onset - previous
offset), and a syllable whose lead-in would be shorter than `min_lead_in` samples (or than
`silence_pad_samples`, if that is shorter) is no candidate: it follows the previous one too
closely to be a cold start.

The windows differ in length, and the model reads a whole window (its encoders run over it
backwards too), so a window's output depends on how far it is read. Each is read on from the
recording to the next multiple of `READ_MULTIPLE` samples (zeros past the recording's end),
which depends on the window alone, and integrated with the others of that read length as one
batch; it is scored on its own samples only, [onset - lead-in, offset).
"""

import dataclasses
import itertools
import pathlib
from collections.abc import Sequence

import numpy as np

from ouroboros_jax.data.recordings import Recording
from ouroboros_jax.data.syllable_labels import chosen

# The scoring's detrend (`evaluation.correct`) needs more samples than this (2 x its cutoff).
MIN_SCORED_SAMPLES = 200
# Windows are read to a multiple of this: few distinct batch shapes (compiled programs), and at
# most 8 ms read past a syllable at 32 kHz.
READ_MULTIPLE = 256


def read_length(length: int) -> int:
    """How far a window of `length` samples is read: the next multiple of READ_MULTIPLE."""
    return -(-length // READ_MULTIPLE) * READ_MULTIPLE


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


@dataclasses.dataclass(frozen=True)
class ColdStart:
    """Where one cold-start vocalisation lies in its recording, in samples.

    Attributes:
      syllable: its index among the recording's syllables.
      onset, offset: the syllable, [onset, offset).
      lead_in: samples before the onset that belong to the window, which starts at onset - lead_in.
    """

    syllable: int
    onset: int
    offset: int
    lead_in: int

    @property
    def start(self) -> int:
        return self.onset - self.lead_in

    @property
    def length(self) -> int:
        return self.offset - self.start


def cold_starts(recording: Recording, syllables: tuple[str, ...], silence_pad_samples: int,
                min_lead_in: int) -> list[ColdStart]:
    """The recording's candidate cold-start vocalisations, in time order.

    A syllable labelled one of `syllables` (every syllable if empty) is a candidate when its
    lead-in, min(silence_pad_samples, onset - the previous syllable's offset, onset), is at least
    min(min_lead_in, silence_pad_samples) samples and its window is long enough to be scored (> 200
    samples). The previous syllable is the one before it in the recording, whatever its label.
    """
    rate = recording.sample_rate
    bounds = np.rint(np.asarray(recording.syllables, dtype=np.float64).reshape(-1, 2) * rate).astype(np.int64)
    previous_offsets = np.concatenate([[0], bounds[:-1, 1]])
    keep = chosen(recording.labels, syllables)
    found = []
    for k, ((onset, offset), previous, selected) in enumerate(zip(bounds, previous_offsets, keep)):
        lead_in = int(min(silence_pad_samples, onset - previous))
        start = ColdStart(k, int(onset), int(offset), lead_in)
        if selected and lead_in >= min(min_lead_in, silence_pad_samples) and start.length > MIN_SCORED_SAMPLES:
            found.append(start)
    return found


@dataclasses.dataclass(frozen=True)
class Vocalisations:
    """A set of cold-start vocalisations, read to one length so that they integrate as one batch.

    Attributes:
      audio: (V, L) float32: window i is audio[i, :lengths[i]], read on to
        read_length(lengths[i]) from the recording after its offset (zeros past the recording's
        end: read by the model, never scored); zeros past that up to L, the longest read length.
      lengths: (V,) int64 samples of each window, lead-in included.
      lead_ins: (V,) int64 samples of each window's lead-in.
      files: (V,) the recording of each.
      onsets: (V,) float64 onset of each syllable in its recording, seconds.
      offsets: (V,) float64 its offset, seconds.
    """

    audio: np.ndarray
    lengths: np.ndarray
    lead_ins: np.ndarray
    files: tuple[pathlib.Path, ...]
    onsets: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def window(self, i: int) -> np.ndarray:
        """(lengths[i],) the i-th vocalisation's own samples."""
        return self.audio[i, : self.lengths[i]]

    def windows(self) -> list[np.ndarray]:
        return [self.window(i) for i in range(len(self))]

    def integrate(self, outputs) -> np.ndarray:
        """Runs `outputs` on the vocalisations of each read length as one batch.

        Args:
          outputs: audio (n, R) float32 of n vocalisations read to R samples -> (..., n, R).

        Returns:
          (..., V, L): row i holds its outputs up to its read length, then zeros.
        """
        reads = np.array([read_length(n) for n in self.lengths])
        gathered = None
        for read in np.unique(reads):
            rows = np.flatnonzero(reads == read)
            batch = np.asarray(outputs(self.audio[rows, :read]))
            if gathered is None:
                gathered = np.zeros(batch.shape[:-2] + self.audio.shape, batch.dtype)
            gathered[..., rows, :read] = batch
        return gathered


def cold_start_vocalisations(recordings: Sequence[Recording], syllables: tuple[str, ...], n_vocs: int,
                             silence_pad_samples: int, min_lead_in: int) -> Vocalisations:
    """The first `n_vocs` candidate vocalisations (`cold_starts`) of the recordings, taken in turn:
    the first of each recording in their order, then the second of each, and so on, so that a
    capped set spans the files.

    Args:
      recordings: held-out recordings in split order, with all their syllables (the previous
        syllable bounds a lead-in whatever its label).
      syllables: the selected labels; empty: every syllable.
      n_vocs: how many vocalisations to take at most.
      silence_pad_samples: the longest lead-in, in samples.
      min_lead_in: the shortest lead-in a candidate may have, in samples.

    Returns:
      The `Vocalisations`, (0, 0) audio if there is none.
    """
    per_file = [[(r, s) for s in cold_starts(r, syllables, silence_pad_samples, min_lead_in)] for r in recordings]
    in_turn = itertools.chain.from_iterable(itertools.zip_longest(*per_file))
    found = [pair for pair in in_turn if pair is not None][:n_vocs]
    length = max((read_length(s.length) for _, s in found), default=0)
    audio = np.zeros((len(found), length), np.float32)
    for row, (recording, start) in zip(audio, found):
        read = recording.audio[start.start : start.start + read_length(start.length)]
        row[: len(read)] = read
    syllables = np.array([r.syllables[s.syllable] for r, s in found], np.float64).reshape(-1, 2)
    return Vocalisations(
        audio=audio,
        lengths=np.array([s.length for _, s in found], np.int64),
        lead_ins=np.array([s.lead_in for _, s in found], np.int64),
        files=tuple(r.path for r, _ in found),
        onsets=syllables[:, 0],
        offsets=syllables[:, 1],
    )
