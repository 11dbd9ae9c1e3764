"""Checks of a data set before training (issue 14 item 4; docs/data.md "Bad input"): what stops a
run names the file and what to do, what trains but misleads is one warning naming the file."""

import logging
import re
import struct

import numpy as np
import pytest
import soundfile as sf

from ouroboros_jax.data import file_level_split, list_audio_files, read_audio
from ouroboros_jax.errors import InputError
from tests.test_data_dataset import SR, SYLLABLES, tagged_samples, write_recording

ROWS = "".join(f"{on} {off}\n" for on, off in SYLLABLES)
from tests.helpers import load_data


@pytest.fixture
def data_dir(tmp_path):
    for tag in range(10):
        write_recording(tmp_path, f"rec{tag}", tagged_samples(tag), annotation=ROWS)
    return tmp_path


def load(directory, **settings):
    return load_data(str(directory), **{"max_segs": 20, **settings})


def split(directory, val_frac=0.1, test_frac=0.1):
    return file_level_split(list_audio_files(directory, "--data_dir"), val_frac, test_frac, 1234)


def warnings_about(caplog, text):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_too_few_vocalisations_for_min_eval_vocs_is_one_line_naming_the_flag(data_dir):
    # 10 files of 3 vocalisations: 3 files each for test and validation hold 9 >= 8.
    data = load(data_dir, min_eval_vocs=8)
    assert (len(data.files.train), len(data.files.val), len(data.files.test)) == (4, 3, 3)
    assert len(data.val_vocalisations) == len(data.test_vocalisations) == 8
    with pytest.raises(InputError, match=r"^--min_eval_vocs=16: the 10 files that hold cold-start vocalisations "
                                         r"hold 30; validation and test need 16 each from whole files"):
        load(data_dir, min_eval_vocs=16, n_val_vocs=16, n_test_vocs=16)


def test_a_syllable_too_short_to_score_is_no_vocalisation(data_dir):
    (val,) = split(data_dir).val
    (data_dir / f"{val.stem}.txt").write_text("0.3 0.31\n0.5 0.65\n")  # 80 samples: 130 with its lead-in
    data = load(data_dir, silence_pad_samples=50)
    assert data.files.val == (val,) and list(data.val_vocalisations.onsets) == [0.5]

def test_silent_loud_and_clipped_recordings_are_warnings_naming_the_files(data_dir, caplog):
    write_recording(data_dir, "rec1", np.zeros(SR), annotation=ROWS)  # silent
    sf.write(data_dir / "rec2.wav", 3.0 * np.sin(np.arange(SR) / 3), SR, subtype="FLOAT")  # far above full scale
    clipped = np.clip(tagged_samples(0) * 40, -32768, 32767)  # most samples at 32767
    write_recording(data_dir, "rec3", clipped, annotation=ROWS)
    with caplog.at_level(logging.WARNING):
        load(data_dir)
    (silent,) = warnings_about(caplog, "recordings are silent")
    assert silent.startswith("1 of 10 recordings are silent") and str(data_dir / "rec1.wav") in silent
    (loud,) = warnings_about(caplog, "recordings are above full scale")
    assert str(data_dir / "rec2.wav") in loud and "peak 3" in loud
    (clip,) = warnings_about(caplog, "recordings are clipped")
    assert clip.startswith("1 of 10 recordings are clipped") and str(data_dir / "rec3.wav") in clip


def test_only_silent_training_windows_is_an_error(tmp_path):
    for tag in range(5):
        write_recording(tmp_path, f"rec{tag}", np.zeros(SR), annotation=ROWS)
    with pytest.raises(InputError, match=r"^--data_dir=\S+: every training window is silent"):
        load(tmp_path)


def test_orphan_annotations_duplicates_and_overlaps_are_warnings_naming_the_files(data_dir, caplog):
    (data_dir / "lost.txt").write_text("0.1 0.2\n")
    (data_dir / "rec4.txt").write_text("0.3 0.4\n0.3 0.4\n0.5 0.6\n")
    (data_dir / "rec5.txt").write_text("0.3 0.45\n0.4 0.6\n")
    with caplog.at_level(logging.WARNING):
        load(data_dir)
    (orphan,) = warnings_about(caplog, "no recording beside them")
    assert str(data_dir / "lost.txt") in orphan
    (duplicated,) = warnings_about(caplog, "duplicated rows")
    assert duplicated.startswith("1 of 10 annotation files")
    assert f"{data_dir / 'rec4.txt'}: 0.3-0.4 s twice" in duplicated
    (overlapping,) = warnings_about(caplog, "overlapping syllables")
    assert f"{data_dir / 'rec5.txt'}: 0.3-0.45 s and 0.4-0.6 s" in overlapping


def test_clean_data_gives_no_warning(data_dir, caplog):
    with caplog.at_level(logging.WARNING):
        load(data_dir)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def set_wav_data_size(path, size):
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", size)
    path.write_bytes(bytes(data))


def test_an_unfinalised_wav_header_is_an_audio_error_and_a_streamed_one_reads(data_dir):
    set_wav_data_size(data_dir / "rec3.wav", 0)  # what a recorder that crashed leaves: no length written
    with pytest.raises(InputError, match=r"rec3\.wav: unfinalised WAV header \(it declares no audio, but 16000 "
                                         r"bytes follow it\).*sox --ignore-length"):
        load(data_dir)
    set_wav_data_size(data_dir / "rec3.wav", 0xFFFFFFFF)  # a streamed WAV: "to the end of the file"
    x, _ = read_audio(data_dir / "rec3.wav")
    np.testing.assert_array_equal(x, tagged_samples(3) / 32768)


LABELLED = "0.3 0.4 c\n0.5 0.65 b\n0.75 0.8 c\n"


def label(directory, rows=LABELLED, **files):
    """Every rec<tag>.txt of `directory` with `rows`, but those given by name (rec5="...")."""
    for tag in range(10):
        (directory / f"rec{tag}.txt").write_text(files.get(f"rec{tag}", rows))


def test_overlapping_types_are_a_warning_unless_one_of_them_is_chosen(data_dir, caplog):
    label(data_dir, rec5="0.3 0.4 c\n0.35 0.45 b\n0.5 0.65 b\n0.75 0.8 c\n")
    rec5 = re.escape(str(data_dir / "rec5.txt"))
    for syllables in ("", "b,c"):  # both types train: a warning, as for one type
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            load(data_dir, syllables=syllables)
        (mixed,) = warnings_about(caplog, "overlapping syllables of different types")
        assert mixed.startswith("1 of 10 annotation files have overlapping syllables of different types")
        assert f"{data_dir / 'rec5.txt'}: 0.3-0.4 s (c) and 0.35-0.45 s (b)" in mixed
        assert not warnings_about(caplog, "overlapping syllables (")  # not also reported as one type's
    with pytest.raises(InputError, match=rf"^--syllables=c: {rec5}: the syllable 0\.3-0\.4 s \(c\) overlaps "
                                         r"0\.35-0\.45 s \(b\), so its windows hold another type's sound") as error:
        load(data_dir, syllables="c")
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match=rf"^--syllables=b: {rec5}: the syllable 0\.35-0\.45 s \(b\) overlaps "
                                         r"0\.3-0\.4 s \(c\)"):
        load(data_dir, syllables="b")


def test_a_chosen_syllable_inside_a_long_one_of_another_type_is_an_error_though_not_its_neighbour(data_dir):
    # Sorted by onset: c, a (0.42-0.9), a, c; the long a overlaps the last c, two rows on.
    label(data_dir, rec6="0.3 0.4 c\n0.42 0.9 a\n0.5 0.65 a\n0.75 0.8 c\n")
    with pytest.raises(InputError, match=rf"^--syllables=c: {re.escape(str(data_dir / 'rec6.txt'))}: the syllable "
                                         r"0\.75-0\.8 s \(c\) overlaps 0\.42-0\.9 s \(a\)"):
        load(data_dir, syllables="c")


def test_overlapping_syllables_of_the_chosen_type_stay_a_warning(data_dir, caplog):
    label(data_dir, rec5="0.3 0.4 c\n0.35 0.45 c\n0.5 0.65 b\n0.75 0.8 c\n")
    with caplog.at_level(logging.WARNING):
        load(data_dir, syllables="c")
    (overlapping,) = warnings_about(caplog, "overlapping syllables (windows of one cover part of the other)")
    assert f"{data_dir / 'rec5.txt'}: 0.3-0.4 s and 0.35-0.45 s" in overlapping
    assert not warnings_about(caplog, "different types")


def test_a_broken_link_in_place_of_a_recording_is_an_error_naming_it(data_dir):
    (data_dir / "rec3.wav").unlink()
    (data_dir / "rec3.wav").symlink_to(data_dir / "moved" / "rec3.wav")
    with pytest.raises(InputError, match=rf"^{re.escape(str(data_dir / 'rec3.wav'))}: cannot read audio: it is a "
                                         r"broken symbolic link"):
        load(data_dir)
