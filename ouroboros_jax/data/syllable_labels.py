"""Choosing the syllable types a model is trained on (`--syllables`).

The method trains one model per (bird, syllable type, day). A syllable's type is its label in
the annotations (our third column, or the label of another tool's format); `--syllables=C,D`
keeps only syllables with those labels, and an empty choice keeps every syllable.
"""

import collections
from collections.abc import Iterable, Sequence

import numpy as np

from ouroboros_jax.errors import InputError


def parse_syllables(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """The labels of `--syllables`: "C,D" or a sequence of labels -> ("C", "D"); "" or None: () (all).

    Raises:
      InputError: an empty or whitespace-holding label ("C,,D", "C D").
    """
    if value is None:
        return ()
    labels = value.split(",") if isinstance(value, str) else list(value)
    if labels == [""]:
        return ()
    if not all(labels) or any(any(c.isspace() for c in label) for label in labels):
        raise InputError(f"--syllables={value if isinstance(value, str) else ','.join(labels)}: expected labels "
                         "separated by commas, e.g. --syllables=C or --syllables=a,b (no spaces, none empty)")
    return tuple(dict.fromkeys(labels))


def label_counts(labels: Iterable[np.ndarray]) -> collections.Counter:
    """How many syllables carry each label, over several (K_i,) label arrays ("" = unlabelled)."""
    counts = collections.Counter()
    for array in labels:
        counts.update(str(label) for label in array)
    return counts


def describe_counts(counts: collections.Counter) -> str:
    """'a (120), b (80), unlabelled (3)': most frequent first."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{label or 'unlabelled'} ({n})" for label, n in ranked)


def check_syllables_occur(syllables: Sequence[str], counts: collections.Counter, where: str) -> None:
    """Raises unless every chosen label labels at least one syllable.

    Args:
      syllables: the chosen labels (empty: all; always passes).
      counts: label counts of the data (`label_counts`).
      where: the data, for the message (e.g. "--data_dir=my_bird").

    Raises:
      InputError: one line naming the missing labels and listing those that occur, with counts.
    """
    missing = [s for s in syllables if counts[s] == 0]
    if not missing:
        return
    flag = f"--syllables={','.join(syllables)}"
    if not any(label for label in counts):
        raise InputError(f"{flag}: the {sum(counts.values())} syllables in {where} have no labels; label them "
                         "(a third column in <stem>.txt, python -m ouroboros_jax.segment --cluster=auto, or another "
                         "tool's format with --annotation_format)")
    raise InputError(f"{flag}: no syllable is labelled {', '.join(missing)} in {where}; the labels there are "
                     f"{describe_counts(counts)}")


def chosen(labels: np.ndarray, syllables: Sequence[str]) -> np.ndarray:
    """(K,) bool: which of the (K,) labels are among `syllables` (all, if none are chosen)."""
    labels = np.asarray(labels)
    return np.isin(labels, list(syllables)) if syllables else np.ones(labels.shape, bool)
