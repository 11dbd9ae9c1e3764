"""Train/validation/test splits: file-level and stratified by category.

The training pipeline uses the file-level split only: every window from a training file trains
(the reference set 20 % of them aside, unused), and validation is on held-out files. The
stratified split of windows is kept for users who want a window-level holdout. docs/data.md
("Splits and the cold-start vocalisations") describes both.
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
    files: Sequence[pathlib.Path], val_frac: float, test_frac: float, seed: int,
    vocalisations: Sequence[int] | None = None, min_vocs: int = 0,
) -> FileSplit:
    """Holds out whole files for validation and test, enough of them to score on (docs/method.md,
    "Cold-start vocalisations").

    The files that hold cold-start vocalisations (all of them if `vocalisations` is None) are
    shuffled by `default_rng(seed)`; of these M, test takes the first
    n_test = max(1, round(test_frac M)) and then as many more as it needs to hold `min_vocs`
    vocalisations, validation the next n_val = max(1, round(val_frac M)) and more likewise; the
    rest train, with every file that holds none. With `vocalisations` None and `min_vocs` 0 this
    is the reference's split of all N files.

    Args:
      files: the recordings, sorted by name.
      val_frac: fraction of files for validation.
      test_frac: fraction of files for test.
      seed: of the shuffle.
      vocalisations: (N,) how many cold-start vocalisations each file holds; None: one each.
      min_vocs: the fewest vocalisations validation and test must each hold.

    Raises:
      InputError: no file is left for training, or validation and test cannot each hold
        `min_vocs` vocalisations.
    """
    counts = np.ones(len(files), np.int64) if vocalisations is None else np.asarray(vocalisations, np.int64)
    idx = np.flatnonzero(counts > 0)
    np.random.default_rng(seed).shuffle(idx)
    roles, taken = [], 0
    for frac in (test_frac, val_frac):
        n = max(1, int(round(frac * len(idx))))
        while taken + n < len(idx) and counts[idx[taken : taken + n]].sum() < min_vocs:
            n += 1
        if counts[idx[taken : taken + n]].sum() < min_vocs:
            raise InputError(
                f"--min_eval_vocs={min_vocs}: the {len(idx)} files that hold cold-start vocalisations hold "
                f"{counts.sum()}; validation and test need {min_vocs} each from whole files (add recordings, or "
                "lower --min_eval_vocs or --min_lead_in_ms)")
        roles.append(idx[taken : taken + n])
        taken += n
    train = np.concatenate([idx[taken:], np.flatnonzero(counts == 0)]).astype(np.int64)
    if not all(len(r) for r in roles) or not len(train):
        raise InputError(
            f"{len(files)} recordings are too few for --val_frac={val_frac} and --test_frac={test_frac}: holding out "
            f"{len(roles[0])} for test and {taken - len(roles[0])} for validation leaves none to train on (add "
            "recordings or lower the fractions)")

    def pick(part: np.ndarray) -> tuple[pathlib.Path, ...]:
        return tuple(pathlib.Path(files[i]) for i in part)

    test, val = roles
    return FileSplit(train=pick(train), val=pick(val), test=pick(test))


def stratified_split(categories: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits windows per category so each category keeps its share in both parts.

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
