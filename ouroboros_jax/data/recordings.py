"""Annotated recordings: a `<stem>.wav` (or `.flac`) with its `<stem>.txt` or another tool's file (docs/data.md)."""

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

from ouroboros_jax.data.annotation_formats import AnnotationSource
from ouroboros_jax.data.audio import read_audio
from ouroboros_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Recording:
    """One recording and its syllables.

    Attributes:
      path: the audio file.
      audio: (T,) float64 samples in [-1, 1].
      sample_rate: in Hz.
      syllables: (K, 2) float64 onset/offset seconds, sorted; K = 0 for an empty annotation file.
      labels: (K,) str, each syllable's label ("" if unlabelled); default all unlabelled.
    """

    path: pathlib.Path
    audio: np.ndarray
    sample_rate: int
    syllables: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self):
        if self.labels is None:
            object.__setattr__(self, "labels", np.full(len(self.syllables), "", dtype=np.str_))


def load_recording(
    path: str | pathlib.Path, channel: int | None = None, annotations: AnnotationSource = AnnotationSource()
) -> Recording:
    """Reads a recording and its annotations (default: `<stem>.txt` beside it).

    Raises:
      InputError: unreadable audio (see `read_audio`), a missing or invalid annotation file.
    """
    path = pathlib.Path(path)
    audio, sample_rate = read_audio(path, channel)
    return Recording(path, audio, sample_rate, *annotations.read(path, len(audio) / sample_rate, sample_rate))


def load_recordings(
    paths: Sequence[str | pathlib.Path], channel: int | None = None, annotations: AnnotationSource = AnnotationSource()
) -> list[Recording]:
    """Reads several recordings, which must share one sample rate.

    Raises:
      InputError: as `load_recording`, or two files with different sample rates.
    """
    recordings = [load_recording(p, channel, annotations) for p in paths]
    for r in recordings[1:]:
        if r.sample_rate != recordings[0].sample_rate:
            raise InputError(
                f"{r.path}: sampled at {r.sample_rate} Hz but {recordings[0].path.name} at "
                f"{recordings[0].sample_rate} Hz; all recordings of a run must share one sample rate "
                "(resample them)"
            )
    return recordings
