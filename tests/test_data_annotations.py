"""Annotation files: the reference format, the label column, sorting, and every malformed-row message."""

import numpy as np
import pytest

from ouroboros_jax.data.annotations import (
    annotation_path,
    read_annotations,
    read_labelled_annotations,
    write_annotations,
)
from ouroboros_jax.errors import InputError

SR = 1000


def test_round_trip_is_exact_to_a_microsecond(tmp_path):
    syllables = np.array([[0.1234564, 0.2], [0.5, 0.987654321]])
    write_annotations(tmp_path / "a.txt", syllables)
    np.testing.assert_allclose(read_annotations(tmp_path / "a.txt", 1.0, SR), syllables, rtol=0, atol=5e-7)
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left behind


def test_write_replaces_an_existing_file(tmp_path):
    (tmp_path / "a.txt").write_text("0.1 0.2\n0.3 0.4\n0.5 0.6\n")
    write_annotations(tmp_path / "a.txt", np.array([[0.7, 0.8]]))
    assert (tmp_path / "a.txt").read_text() == "0.700000 0.800000\n"


def test_extra_columns_comments_blank_lines_and_sorting(tmp_path):
    (tmp_path / "a.txt").write_text("# onset offset label\n0.5\t0.6  b 7\n\n0.1 0.2 a\n  0.3 0.45\n")
    np.testing.assert_array_equal(
        read_annotations(tmp_path / "a.txt", 1.0, SR), [[0.1, 0.2], [0.3, 0.45], [0.5, 0.6]]
    )


def test_numbers_after_the_label_are_a_score_and_ignored(tmp_path):
    (tmp_path / "a.txt").write_text("0.1 0.2 c 0.93 -1e-3 nan\n0.3 0.4 7 8\n")
    syllables, labels = read_labelled_annotations(tmp_path / "a.txt", 1.0, SR)
    np.testing.assert_array_equal(syllables, [[0.1, 0.2], [0.3, 0.4]])
    np.testing.assert_array_equal(labels, ["c", "7"])


def test_the_third_column_is_the_label_and_sorts_with_its_row(tmp_path):
    (tmp_path / "a.txt").write_text("0.5 0.6 C 0.93\n0.1 0.2 intro\n0.3 0.45\n")
    syllables, labels = read_labelled_annotations(tmp_path / "a.txt", 1.0, SR)
    np.testing.assert_array_equal(syllables, [[0.1, 0.2], [0.3, 0.45], [0.5, 0.6]])
    np.testing.assert_array_equal(labels, ["intro", "", "C"])


def test_labels_round_trip_and_unlabelled_rows_keep_two_columns(tmp_path):
    syllables, labels = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]), np.array(["a", "", "b12"])
    write_annotations(tmp_path / "a.txt", syllables, labels)
    assert (tmp_path / "a.txt").read_text() == "0.100000 0.200000 a\n0.300000 0.400000\n0.500000 0.600000 b12\n"
    read = read_labelled_annotations(tmp_path / "a.txt", 1.0, SR)
    np.testing.assert_array_equal(read[0], syllables)
    np.testing.assert_array_equal(read[1], labels)


def test_two_column_files_are_unlabelled(tmp_path):
    (tmp_path / "a.txt").write_text("0.1 0.2\n0.3 0.4\n")
    syllables, labels = read_labelled_annotations(tmp_path / "a.txt", 1.0, SR)
    np.testing.assert_array_equal(syllables, read_annotations(tmp_path / "a.txt", 1.0, SR))
    np.testing.assert_array_equal(labels, ["", ""])


def test_single_row_and_empty_file(tmp_path):
    (tmp_path / "one.txt").write_text("0.1 0.2")
    assert read_annotations(tmp_path / "one.txt", 1.0, SR).shape == (1, 2)
    (tmp_path / "empty.txt").write_text("")
    empty = read_annotations(tmp_path / "empty.txt", 1.0, SR)
    assert empty.shape == (0, 2) and empty.dtype == np.float64


def test_offset_may_exceed_the_end_by_one_sample_of_rounding(tmp_path):
    (tmp_path / "a.txt").write_text("0.5 1.001\n")
    np.testing.assert_array_equal(read_annotations(tmp_path / "a.txt", 1.0, SR), [[0.5, 1.001]])


@pytest.mark.parametrize(
    "row, message",
    [
        ("0.1 abc", r"a\.txt line 2: onset and offset must be numbers \(seconds\), got '0\.1 abc'"),
        ("onset offset", r"a\.txt line 2: onset and offset must be numbers"),
        ("0.3", r"a\.txt line 2: expected 'onset offset' in seconds, got '0\.3'"),
        ("0.4 0.3", r"a\.txt line 2: onset 0\.4 s is not before offset 0\.3 s"),
        ("0.4 0.4", r"a\.txt line 2: onset 0\.4 s is not before offset 0\.4 s"),
        ("-0.1 0.3", r"a\.txt line 2: syllable -0\.1-0\.3 s lies outside the recording \(0-1 s\)"),
        ("0.9 1.5", r"a\.txt line 2: syllable 0\.9-1\.5 s lies outside the recording \(0-1 s\)"),
        ("nan 0.5", r"a\.txt line 2: onset and offset must be finite"),
        # A word after the label: a label with whitespace, whose first word alone would be taken.
        ("0.3 0.4 c x", (r"a\.txt line 2: label 'c x' has whitespace; a label is one token \(write 'c_x'\), and "
                         r"the columns after it must be numbers \(a score\)$")),
        ("0.3 0.4 song c 0.93", (r"a\.txt line 2: label 'song c' has whitespace; a label is one token \(write "
                                 r"'song_c'\)")),
        ("0.3 0.4 c 0.93 x", r"a\.txt line 2: label 'c 0\.93 x' has whitespace"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, message):
    (tmp_path / "a.txt").write_text(f"0.1 0.2\n{row}\n")
    with pytest.raises(InputError, match=message) as error:
        read_annotations(tmp_path / "a.txt", 1.0, SR)
    assert "\n" not in str(error.value)


def test_annotation_path_is_the_stem_with_txt(tmp_path):
    assert annotation_path(tmp_path / "bird.1.flac") == tmp_path / "bird.1.txt"
