"""Train/validation/test splits: file-level (SPEC f.4) and stratified by category (SPEC f.3).

The training pipeline uses the file-level split only: every window from a training file trains
(DESIGN decision 6), and validation is on held-out files. The stratified split of windows is
kept for users who want a window-level holdout.
"""

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

from ouroboros_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class FileSplit:
    """Recording files per role, each tuple in shuffled order (the order cold-start vocalisations use)."""

    train: tuple[pathlib.Path, ...]
    val: tuple[pathlib.Path, ...]
    test: tuple[pathlib.Path, ...]


def file_level_split(
    files: Sequence[pathlib.Path], val_frac: float, test_frac: float, seed: int
) -> FileSplit:
    """Holds out whole files for validation and test (SPEC f.4).

    The indices of `files` are shuffled by `default_rng(seed)`; the first
    n_test = max(1, round(test_frac N)) go to test, the next n_val = max(1, round(val_frac N))
    to validation, the rest to training.

    Args:
      files: the recordings, sorted by name.
      val_frac: fraction of files for validation.
      test_frac: fraction of files for test.
      seed: of the shuffle.

    Raises:
      InputError: no file is left for training.
    """
    n = len(files)
    idx = np.arange(n)
    np.random.default_rng(seed).shuffle(idx)
    n_test = max(1, int(round(test_frac * n)))
    n_val = max(1, int(round(val_frac * n)))
    if n_test + n_val >= n:
        raise InputError(
            f"{n} recordings are too few for --val_frac={val_frac} and --test_frac={test_frac}: "
            f"holding out {n_val} for validation and {n_test} for test leaves none to train on "
            "(add recordings or lower the fractions)"
        )

    def pick(part: np.ndarray) -> tuple[pathlib.Path, ...]:
        return tuple(pathlib.Path(files[i]) for i in part)

    return FileSplit(
        train=pick(idx[n_test + n_val :]), val=pick(idx[n_test : n_test + n_val]), test=pick(idx[:n_test])
    )


def stratified_split(categories: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits windows per category so each category keeps its share in both parts (SPEC f.3).

    One `default_rng(seed)` is shared across the categories in ascending order; each category's
    indices are shuffled and the first n_test = max(1, round(test_size n_c)) (0 if n_c == 1) go
    to the test part.

    Args:
      categories: (N,) int category of each window.
      test_size: fraction held out per category.
      seed: of the generator.

    Returns:
      (train_idx, test_idx): int64 indices into `categories`, grouped by category.
    """
    categories = np.asarray(categories)
    rng = np.random.default_rng(seed)
    train, test = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in np.unique(categories):
        idx = np.flatnonzero(categories == c)
        rng.shuffle(idx)
        n_test = max(1, int(round(test_size * len(idx)))) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.concatenate(train), np.concatenate(test)
