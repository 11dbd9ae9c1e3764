"""Syllable annotation files, the reference format (docs/data.md, "Annotation format").

`<stem>.txt` beside `<stem>.wav`: a whitespace-separated table, one row per syllable, column 0
the onset and column 1 the offset in seconds, and optionally column 2 the syllable's label (its
type, a token without whitespace); further columns are numbers (a score) and are ignored. A word
there is refused: it is most likely the rest of a label with whitespace ("0.1 0.2 call c"), whose
first word alone would otherwise become the label. Blank lines and lines starting with '#' are
skipped. An empty file means "no syllables". A two-column file reads exactly as the
reference reads it; its syllables are unlabelled (label "").
"""

import os
import pathlib

import numpy as np

from ouroboros_jax.errors import InputError


def annotation_path(audio_path: str | pathlib.Path) -> pathlib.Path:
    """The annotation file that belongs to a recording: same folder and stem, suffix .txt."""
    return pathlib.Path(audio_path).with_suffix(".txt")


def check_syllable(where: str, onset: float, offset: float, duration_s: float, sample_rate: int, shown: str) -> None:
    """Raises `InputError` (naming `where` and showing `shown`) unless onset < offset lie inside the recording.

    An offset up to one sample past the end is accepted as rounding.
    """
    if not (np.isfinite(onset) and np.isfinite(offset)):
        raise InputError(f"{where}: onset and offset must be finite, got {shown!r}")
    if onset >= offset:
        raise InputError(f"{where}: onset {onset:g} s is not before offset {offset:g} s")
    if onset < 0 or offset > duration_s + 1.0 / sample_rate:
        raise InputError(f"{where}: syllable {onset:g}-{offset:g} s lies outside the recording (0-{duration_s:g} s)")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_label_is_one_token(where: str, fields: list[str]) -> None:
    """Raises `InputError` (naming `where`) if a column after the label (fields[3:]) is not a number.

    Such a row reads as a label with whitespace, which the split into columns would cut to its
    first word, silently moving the syllable to another type.
    """
    words = [k for k in range(3, len(fields)) if not _is_number(fields[k])]
    if words:
        label = fields[2 : words[-1] + 1]
        raise InputError(f"{where}: label {' '.join(label)!r} has whitespace; a label is one token (write "
                         f"{'_'.join(label)!r}), and the columns after it must be numbers (a score)")


def sorted_by_onset(rows, labels) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) float64 onset/offset rows and their (K,) str labels, both in onset order (stable)."""
    syllables = np.array(rows, dtype=np.float64).reshape(-1, 2)
    labels = np.array(labels, dtype=np.str_).reshape(-1)
    order = np.argsort(syllables[:, 0], kind="stable")
    return syllables[order], labels[order]


def read_labelled_annotations(
    path: str | pathlib.Path, duration_s: float, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reads and validates one annotation file, with its labels.

    Args:
      path: the .txt file.
      duration_s: length of its recording in seconds; every syllable must lie inside it.
      sample_rate: of the recording; offsets up to one sample past the end are accepted as
        rounding.

    Returns:
      (syllables, labels): (K, 2) float64 onset/offset seconds, sorted by onset (unsorted files
      are sorted), and (K,) str labels, the third column ("" for a row without one); K = 0 for an
      empty file.

    Raises:
      InputError: a row that is not numeric, has fewer than two columns, has onset >= offset,
        lies outside the recording, or has a word after its label (`_check_label_is_one_token`).
    """
    path = pathlib.Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read annotation file ({e})") from e
    rows, labels = [], []
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
        check_syllable(where, onset, offset, duration_s, sample_rate, line.strip())
        _check_label_is_one_token(where, fields)
        rows.append((onset, offset))
        labels.append(fields[2] if len(fields) > 2 else "")
    return sorted_by_onset(rows, labels)


def read_annotations(path: str | pathlib.Path, duration_s: float, sample_rate: int) -> np.ndarray:
    """The (K, 2) float64 onset/offset seconds of one annotation file, sorted; see `read_labelled_annotations`."""
    return read_labelled_annotations(path, duration_s, sample_rate)[0]


def format_annotations(syllables: np.ndarray, labels: np.ndarray | None = None) -> str:
    """The file text for syllables (K, 2) in seconds: one 'onset offset [label]' row each, 6 decimals (1 us).

    `labels` (K,) are single tokens; a row whose label is "" (unlabelled) has two columns.
    """
    syllables = np.asarray(syllables).reshape(-1, 2)
    labels = [""] * len(syllables) if labels is None else labels
    return "".join(
        f"{onset:.6f} {offset:.6f}{f' {label}' if label else ''}\n" for (onset, offset), label in zip(syllables, labels)
    )


def write_annotations(path: str | pathlib.Path, syllables: np.ndarray, labels: np.ndarray | None = None) -> None:
    """Writes syllables (K, 2) in seconds, and their (K,) labels if given, to `path` atomically.

    The text goes to a temp file in the same folder that is then renamed, so a crash mid-write
    never leaves a partial file in place of a good one.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(format_annotations(syllables, labels))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
