"""Checks of a data set made before anything trains (docs/data.md, "Bad input").

Warnings, one line per kind of problem with a count and the first file, report what trains but
probably not as meant: silent recordings, recordings above full scale or clipped, annotation
files without their recording, duplicated rows, overlapping syllables of one type and of two.
One overlap is an error instead: a syllable chosen with `--syllables` that overlaps one of a type
not chosen, since its windows would teach the model the other type's sound as this one's.
"""

import pathlib
from collections.abc import Sequence

import numpy as np
from absl import logging

from ouroboros_jax.data.annotation_formats import AnnotationSource
from ouroboros_jax.data.recordings import Recording
from ouroboros_jax.data.syllable_labels import chosen
from ouroboros_jax.errors import InputError

# Full scale of 16-bit audio is 32767 / 32768: a sample this close to +-1 is at full scale.
FULL_SCALE = 1.0 - 2.0**-15
SILENCE = 2.0**-15  # a recording whose peak is below one 16-bit step holds nothing but silence
CLIPPED_FRACTION = 1e-3  # more samples than this at full scale: the recording was clipped


def _warn(problem: str, paths: Sequence, total: int, what: str, example: str = "") -> None:
    if paths:
        logging.warning("%d of %d %s %s, e.g. %s%s", len(paths), total, what, problem, paths[0], example)


def overlapping_pairs(syllables: np.ndarray) -> np.ndarray:
    """Every pair of overlapping syllables, neighbours or not (a long one may span several).

    Args:
      syllables: (K, 2) onset/offset seconds, sorted by onset, onset < offset.

    Returns:
      (P, 2) int indices (i, j), i < j, of the pairs where j begins before i ends, by i then j.
    """
    onsets, offsets = syllables[:, 0], syllables[:, 1]
    # The onsets are sorted, so the syllables that i overlaps are i + 1 up to the first that begins
    # at or after its offset: P pairs found without comparing all K^2.
    counts = np.searchsorted(onsets, offsets, side="left") - np.arange(len(onsets)) - 1
    first = np.repeat(np.arange(len(onsets)), counts)
    steps = np.arange(len(first)) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.stack([first, first + 1 + steps], axis=1)


def _times(recording: Recording, k: int) -> str:
    onset, offset = recording.syllables[k]
    return f"{onset:g}-{offset:g} s"


def _row(recording: Recording, k: int) -> str:
    return f"{_times(recording, k)} ({recording.labels[k] or 'unlabelled'})"


def check_overlapping_types(recordings: Sequence[Recording], syllables: Sequence[str],
                            annotations: AnnotationSource) -> None:
    """Raises if a chosen syllable overlaps a syllable of a type not chosen.

    Args:
      recordings: every recording, with all its syllables (before the choice).
      syllables: the chosen labels (`--syllables`); empty: all, which always passes.
      annotations: where the annotation files are, to name them.

    Raises:
      InputError: one line naming the annotation file and the first such pair of rows.
    """
    if not syllables:
        return
    for r in recordings:
        pairs = overlapping_pairs(r.syllables)
        for (i, j), (keep_i, keep_j) in zip(pairs, chosen(r.labels, syllables)[pairs]):
            if keep_i == keep_j:  # both chosen: a warning of `check_recordings`; neither: not trained
                continue
            mine, other = (i, j) if keep_i else (j, i)
            raise InputError(
                f"--syllables={','.join(syllables)}: {annotations.describe(r.path)}: the syllable {_row(r, mine)} "
                f"overlaps {_row(r, other)}, so its windows hold another type's sound; correct the annotations, "
                "or choose both types"
            )


def _check_rows(recordings: Sequence[Recording], annotations: AnnotationSource) -> None:
    """Warns about duplicated rows, overlapping syllables of one type, and of different types."""
    duplicated, overlapping, mixed = [], [], []
    for r in recordings:
        pairs = overlapping_pairs(r.syllables)
        if not len(pairs):
            continue
        where = annotations.describe(r.path)
        twice = (r.syllables[pairs[:, 0]] == r.syllables[pairs[:, 1]]).all(axis=1)
        typed = r.labels[pairs[:, 0]] != r.labels[pairs[:, 1]]
        if (twice & ~typed).any():
            duplicated.append(f"{where}: {_times(r, pairs[twice & ~typed][0, 0])} twice")
        if (~twice & ~typed).any():
            i, j = pairs[~twice & ~typed][0]
            overlapping.append(f"{where}: {_times(r, i)} and {_times(r, j)}")
        if typed.any():
            i, j = pairs[typed][0]
            mixed.append(f"{where}: {_row(r, i)} and {_row(r, j)}")
    n = len(recordings)
    _warn("duplicated rows (the same syllable twice: its windows are drawn twice as often)", duplicated, n,
          "annotation files have")
    _warn("overlapping syllables (windows of one cover part of the other)", overlapping, n, "annotation files have")
    _warn("overlapping syllables of different types (windows of each hold the other's sound)", mixed, n,
          "annotation files have")


def check_recordings(directory: pathlib.Path, recordings: Sequence[Recording], annotations: AnnotationSource) -> None:
    """Warns about recordings and annotations that load but would mislead training.

    Args:
      directory: the data directory (for annotation files without a recording).
      recordings: every recording of it, in file order, with the chosen syllables only.
      annotations: where the annotation files are, to name them.
    """
    n = len(recordings)
    peaks = [float(np.abs(r.audio).max(initial=0.0)) for r in recordings]
    _warn("silent (no sample reaches one 16-bit step); they teach the model silence", [
        r.path for r, p in zip(recordings, peaks) if p < SILENCE], n, "recordings are")
    loud = [(r.path, p) for r, p in zip(recordings, peaks) if p > 1.0]
    _warn("above full scale (float samples beyond +-1; scale them into [-1, 1])", [p for p, _ in loud], n,
          "recordings are", f" (peak {loud[0][1]:.3g})" if loud else "")
    clipped = [r.path for r, p in zip(recordings, peaks)
               if p <= 1.0 and np.mean(np.abs(r.audio) >= FULL_SCALE) > CLIPPED_FRACTION]
    _warn(f"clipped (more than {CLIPPED_FRACTION:.1%} of their samples at full scale)", clipped, n,
          "recordings are")
    stems = {r.path.stem for r in recordings}
    orphans = sorted(p for p in directory.glob("*.txt") if p.stem not in stems and not p.name.startswith("."))
    _warn("no recording beside them (<stem>.wav or .flac) and are ignored", orphans,
          len(orphans) + n, "annotation files have")
    _check_rows(recordings, annotations)
