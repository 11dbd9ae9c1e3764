"""Annotated recordings: a `<stem>.wav` (or `.flac`) with its `<stem>.txt` (SPEC f.1)."""

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

from ouroboros_jax.data.annotations import annotation_path, read_annotations
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
    """

    path: pathlib.Path
    audio: np.ndarray
    sample_rate: int
    syllables: np.ndarray


def load_recording(path: str | pathlib.Path, channel: int | None = None) -> Recording:
    """Reads a recording and its annotation file.

    Raises:
      InputError: unreadable audio (see `read_audio`), a missing or invalid annotation file.
    """
    path = pathlib.Path(path)
    audio, sample_rate = read_audio(path, channel)
    txt = annotation_path(path)
    if not txt.is_file():
        raise InputError(
            f"{path}: no annotation file {txt.name} beside it; write one, or make them all with "
            f"python -m ouroboros_jax.segment --audio_dir={path.parent}"
        )
    return Recording(path, audio, sample_rate, read_annotations(txt, len(audio) / sample_rate, sample_rate))


def load_recordings(paths: Sequence[str | pathlib.Path], channel: int | None = None) -> list[Recording]:
    """Reads several recordings, which must share one sample rate.

    Raises:
      InputError: as `load_recording`, or two files with different sample rates.
    """
    recordings = [load_recording(p, channel) for p in paths]
    for r in recordings[1:]:
        if r.sample_rate != recordings[0].sample_rate:
            raise InputError(
                f"{r.path}: sampled at {r.sample_rate} Hz but {recordings[0].path.name} at "
                f"{recordings[0].sample_rate} Hz; all recordings of a run must share one sample rate "
                "(resample them)"
            )
    return recordings
