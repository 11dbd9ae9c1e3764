"""File-level and stratified splits (docs/data.md): count rules, order, determinism."""

import pathlib

import numpy as np
import pytest

from ouroboros_jax.data.splits import file_level_split, stratified_split
from ouroboros_jax.errors import InputError


def files(n):
    return [pathlib.Path(f"rec{i:03d}.wav") for i in range(n)]


@pytest.mark.parametrize(
    "n, val_frac, test_frac, expected",
    [
        (20, 0.1, 0.1, (16, 2, 2)),
        (25, 0.1, 0.1, (21, 2, 2)),  # round(2.5) is 2 (half to even), as in the reference
        (35, 0.1, 0.1, (27, 4, 4)),  # round(3.5) is 4
        (7, 0.1, 0.1, (5, 1, 1)),
        (3, 0.0, 0.0, (1, 1, 1)),  # at least one file each for val and test
        (10, 0.3, 0.2, (5, 3, 2)),
    ],
)
def test_file_level_split_counts(n, val_frac, test_frac, expected):
    split = file_level_split(files(n), val_frac, test_frac, seed=1234)
    assert (len(split.train), len(split.val), len(split.test)) == expected
    assert sorted(split.train + split.val + split.test) == files(n)


def test_file_level_split_is_the_reference_shuffle():
    split = file_level_split(files(30), 0.1, 0.1, seed=1234)
    idx = np.arange(30)
    np.random.default_rng(1234).shuffle(idx)
    # test = first 3 shuffled files, val = next 3, train = the rest, in shuffled order.
    assert split.test == tuple(files(30)[i] for i in idx[:3])
    assert split.val == tuple(files(30)[i] for i in idx[3:6])
    assert split.train == tuple(files(30)[i] for i in idx[6:])


def test_file_level_split_is_deterministic_for_a_seed():
    assert file_level_split(files(40), 0.1, 0.1, 5) == file_level_split(files(40), 0.1, 0.1, 5)
    assert file_level_split(files(40), 0.1, 0.1, 5) != file_level_split(files(40), 0.1, 0.1, 6)


def test_held_out_files_hold_enough_vocalisations():
    # 8 files, two of them without vocalisations; the other 6 are shuffled as the reference shuffles.
    counts = np.array([3, 0, 1, 5, 2, 0, 4, 2])
    eligible = np.flatnonzero(counts)
    np.random.default_rng(7).shuffle(eligible)
    split = file_level_split(files(8), 0.1, 0.1, seed=7, vocalisations=counts, min_vocs=4)
    order = list(eligible)
    # Test takes the shortest prefix holding >= 4, validation the shortest next run; the rest train.
    n_test = next(k for k in range(1, 7) if counts[order[:k]].sum() >= 4)
    n_val = next(k for k in range(1, 7) if counts[order[n_test:n_test + k]].sum() >= 4)
    assert split.test == tuple(files(8)[i] for i in order[:n_test])
    assert split.val == tuple(files(8)[i] for i in order[n_test:n_test + n_val])
    assert split.train == tuple(files(8)[i] for i in order[n_test + n_val:] + [1, 5])
    held = lambda part: sum(counts[int(p.stem[3:])] for p in part)  # noqa: E731
    assert held(split.test) >= 4 and held(split.val) >= 4


def test_without_a_minimum_the_split_of_the_files_with_vocalisations_is_the_reference_split():
    counts = np.array([2, 0, 1, 1, 3, 0, 1, 1, 2, 1, 1, 4])
    with_vocs = [f for f, c in zip(files(12), counts) if c]
    split = file_level_split(files(12), 0.1, 0.1, seed=3, vocalisations=counts)
    reference = file_level_split(with_vocs, 0.1, 0.1, seed=3)
    assert (split.test, split.val) == (reference.test, reference.val)
    assert split.train == reference.train + (files(12)[1], files(12)[5])


def test_too_few_vocalisations_for_the_minimum():
    with pytest.raises(InputError, match=r"^--min_eval_vocs=5: the 4 files that hold cold-start vocalisations hold "
                                         r"9; validation and test need 5 each from whole files"):
        file_level_split(files(5), 0.1, 0.1, seed=0, vocalisations=[2, 2, 0, 3, 2], min_vocs=5)


@pytest.mark.parametrize("n, val_frac, test_frac", [(2, 0.1, 0.1), (1, 0.1, 0.1), (10, 0.5, 0.5)])
def test_too_few_files_for_a_split(n, val_frac, test_frac):
    with pytest.raises(
        InputError,
        match=rf"^{n} recordings are too few for --val_frac={val_frac} and --test_frac={test_frac}",
    ):
        file_level_split(files(n), val_frac, test_frac, seed=0)


def test_stratified_split_counts_of_the_entry_point():
    categories = np.repeat([0, 1, 2], [2400, 2400, 1200])
    train, test = stratified_split(categories, test_size=1 - 0.8, seed=1234)
    np.testing.assert_array_equal(np.bincount(categories[train]), [1920, 1920, 960])
    np.testing.assert_array_equal(np.bincount(categories[test]), [480, 480, 240])
    assert sorted(np.concatenate([train, test])) == list(range(6000))


def test_stratified_split_small_categories():
    # n_test = max(1, round(test_size * n)) if n > 1 else 0.
    categories = np.array([2, 0, 0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5])
    train, test = stratified_split(categories, test_size=0.1, seed=0)
    assert sorted(categories[test]) == [0, 5]
    assert sorted(categories[train]) == [0, 2] + [5] * 10


def test_stratified_split_is_the_reference_shuffle():
    categories = np.random.default_rng(0).integers(0, 3, 500)
    train, test = stratified_split(categories, test_size=0.25, seed=99)
    rng = np.random.default_rng(99)
    expected_train, expected_test = [], []
    for c in (0, 1, 2):  # one generator, categories in ascending order
        idx = np.flatnonzero(categories == c)
        rng.shuffle(idx)
        n_test = max(1, int(round(0.25 * len(idx))))
        expected_test += list(idx[:n_test])
        expected_train += list(idx[n_test:])
    np.testing.assert_array_equal(train, expected_train)
    np.testing.assert_array_equal(test, expected_test)
