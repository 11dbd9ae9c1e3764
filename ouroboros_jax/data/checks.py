"""Checks of a data set made before anything trains (docs/data.md, "Bad input").

Warnings, one line per kind of problem with a count and the first file, report what trains but
probably not as meant: silent recordings, recordings above full scale or clipped, annotation
files without their recording, duplicated rows and overlapping syllables.
"""

import pathlib
from collections.abc import Sequence

import numpy as np
from absl import logging

from ouroboros_jax.data.recordings import Recording

# Full scale of 16-bit audio is 32767 / 32768: a sample this close to +-1 is at full scale.
FULL_SCALE = 1.0 - 2.0**-15
SILENCE = 2.0**-15  # a recording whose peak is below one 16-bit step holds nothing but silence
CLIPPED_FRACTION = 1e-3  # more samples than this at full scale: the recording was clipped


def _warn(problem: str, paths: Sequence, total: int, what: str, example: str = "") -> None:
    if paths:
        logging.warning("%d of %d %s %s, e.g. %s%s", len(paths), total, what, problem, paths[0], example)


def check_recordings(directory: pathlib.Path, recordings: Sequence[Recording]) -> None:
    """Warns about recordings and annotations that load but would mislead training.

    Args:
      directory: the data directory (for annotation files without a recording).
      recordings: every recording of it, in file order.
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
    duplicated, overlapping = [], []
    for r in recordings:
        onsets, offsets = r.syllables[:, 0], r.syllables[:, 1]
        same = (onsets[1:] == onsets[:-1]) & (offsets[1:] == offsets[:-1])
        if same.any():
            k = int(np.flatnonzero(same)[0])
            duplicated.append(f"{r.path.with_suffix('.txt')}: {onsets[k]:g}-{offsets[k]:g} s twice")
        overlap = (onsets[1:] < offsets[:-1]) & ~same
        if overlap.any():
            k = int(np.flatnonzero(overlap)[0])
            overlapping.append(f"{r.path.with_suffix('.txt')}: {onsets[k]:g}-{offsets[k]:g} s and "
                               f"{onsets[k + 1]:g}-{offsets[k + 1]:g} s")
    _warn("duplicated rows (the same syllable twice: its windows are drawn twice as often)", duplicated, n,
          "annotation files have")
    _warn("overlapping syllables (windows of one cover part of the other)", overlapping, n, "annotation files have")
