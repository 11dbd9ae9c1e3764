"""Syllable annotation files, the reference format (SPEC f.1).

`<stem>.txt` beside `<stem>.wav`: a whitespace-separated table, one row per syllable, column 0
the onset and column 1 the offset in seconds; further columns (labels, for example) are ignored.
Blank lines and lines starting with '#' are skipped. An empty file means "no syllables".
"""

import os
import pathlib

import numpy as np

from ouroboros_jax.errors import InputError


def annotation_path(audio_path: str | pathlib.Path) -> pathlib.Path:
    """The annotation file that belongs to a recording: same folder and stem, suffix .txt."""
    return pathlib.Path(audio_path).with_suffix(".txt")


def read_annotations(path: str | pathlib.Path, duration_s: float, sample_rate: int) -> np.ndarray:
    """Reads and validates one annotation file.

    Args:
      path: the .txt file.
      duration_s: length of its recording in seconds; every syllable must lie inside it.
      sample_rate: of the recording; offsets up to one sample past the end are accepted as
        rounding.

    Returns:
      syllables: (K, 2) float64 onset/offset seconds, sorted by onset (unsorted files are
      sorted); K = 0 for an empty file.

    Raises:
      InputError: a row that is not numeric, has fewer than two columns, has onset >= offset,
        or lies outside the recording.
    """
    path = pathlib.Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read annotation file ({e})") from e
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path} line {number}"
        if len(fields) < 2:
            raise InputError(f"{where}: expected 'onset offset' in seconds, got {line.strip()!r}")
        try:
            onset, offset = float(fields[0]), float(fields[1])
        except ValueError:
            raise InputError(
                f"{where}: onset and offset must be numbers (seconds), got {line.strip()!r}"
            ) from None
        if not (np.isfinite(onset) and np.isfinite(offset)):
            raise InputError(f"{where}: onset and offset must be finite, got {line.strip()!r}")
        if onset >= offset:
            raise InputError(f"{where}: onset {onset:g} s is not before offset {offset:g} s")
        if onset < 0 or offset > duration_s + 1.0 / sample_rate:
            raise InputError(
                f"{where}: syllable {onset:g}-{offset:g} s lies outside the recording (0-{duration_s:g} s)"
            )
        rows.append((onset, offset))
    syllables = np.array(rows, dtype=np.float64).reshape(-1, 2)
    return syllables[np.argsort(syllables[:, 0], kind="stable")]


def format_annotations(syllables: np.ndarray) -> str:
    """The file text for syllables (K, 2) in seconds: one 'onset offset' row each, 6 decimals (1 us)."""
    return "".join(f"{onset:.6f} {offset:.6f}\n" for onset, offset in np.asarray(syllables).reshape(-1, 2))


def write_annotations(path: str | pathlib.Path, syllables: np.ndarray) -> None:
    """Writes syllables (K, 2) in seconds to `path` atomically (temp file in the same folder, then rename).

    A crash mid-write therefore never leaves a partial file in place of a good one.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(format_annotations(syllables))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
