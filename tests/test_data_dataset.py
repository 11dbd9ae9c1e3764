"""From a data directory to training windows, features, split and cold-start vocalisations."""

import logging
import pathlib

import numpy as np
import pytest
import soundfile as sf

from ouroboros_jax.data.dataset import segment_derivatives
from ouroboros_jax.data.example_data import example_data_dir, resolve_data_dir
from ouroboros_jax.data.recordings import Recording, load_recordings
from ouroboros_jax.data.sampler import SamplerConfig, sample_segments
from ouroboros_jax.data.vocalisations import cold_start_vocalisations
from ouroboros_jax.derivatives import first_derivative, second_derivative
from ouroboros_jax.errors import InputError

SR = 8000
SYLLABLES = np.array([[0.3, 0.4], [0.5, 0.65], [0.75, 0.8]])
from tests.helpers import load_data


def write_recording(directory, stem, samples, sample_rate=SR, annotation="0.3 0.4\n"):
    """A WAV (or multi-channel WAV for 2-d samples) and, unless annotation is None, its .txt."""
    sf.write(directory / f"{stem}.wav", np.asarray(samples, np.int16), sample_rate, subtype="PCM_16")
    if annotation is not None:
        (directory / f"{stem}.txt").write_text(annotation)


def tagged_samples(tag, n=SR):
    """int16 samples tag * 3000 + (i mod 2000): any window names the file it came from."""
    return tag * 3000 + np.arange(n) % 2000


@pytest.fixture
def data_dir(tmp_path):
    rows = "".join(f"{on} {off}\n" for on, off in SYLLABLES)
    for tag in range(10):
        write_recording(tmp_path, f"rec{tag}", tagged_samples(tag), annotation=rows)
    return tmp_path


def source_tags(x):
    return set(np.floor(x[:, 0].astype(np.float64) * 32768 / 3000).astype(int))


def test_training_windows_come_from_all_training_files_only(data_dir):
    data = load_data(str(data_dir), max_segs=60, seed=1)
    assert (len(data.files.train), len(data.files.val), len(data.files.test)) == (8, 1, 1)
    train_tags = {int(p.stem[3:]) for p in data.files.train}
    assert source_tags(data.x) == train_tags
    # DESIGN decision 6: no window-level holdout, every drawn window trains.
    assert data.x.shape == (60, 400) and data.x.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(data.categories), [24, 24, 12])
    assert data.categories.dtype == np.int32
    assert data.sample_rate == SR
    expected = sample_segments(load_recordings(data.files.train), SamplerConfig(max_segs=60), 1)
    np.testing.assert_array_equal(data.x, expected.x)
    np.testing.assert_array_equal(data.pool_sizes, expected.pool_sizes)


def test_derivatives_are_computed_per_window(data_dir):
    data = load_data(str(data_dir), max_segs=20)
    for k in range(len(data.x)):
        window = data.x[k].astype(np.float64)
        np.testing.assert_array_equal(data.dxdt[k], first_derivative(window).astype(np.float32))
        np.testing.assert_array_equal(data.d2x[k], second_derivative(window).astype(np.float32))
    assert data.dxdt.dtype == data.d2x.dtype == np.float32


def test_val_and_test_vocalisations_are_cut_from_their_files(data_dir):
    data = load_data(str(data_dir), silence_pad_samples=500)
    for files, vocs in ((data.files.val, data.val_vocalisations), (data.files.test, data.test_vocalisations)):
        (path,) = files
        # [on - 500, off) of the first syllable, 0.3-0.4 s.
        expected = tagged_samples(int(path.stem[3:]))[2400 - 500 : 3200] / 32768
        np.testing.assert_array_equal(vocs, expected[None].astype(np.float32))


def recording(syllables, n_samples=1000, tag=0):
    audio = tag + np.arange(n_samples, dtype=np.float64)
    return Recording(
        pathlib.Path(f"r{tag}.wav"), audio, 1000, np.asarray(syllables, dtype=np.float64).reshape(-1, 2)
    )


def test_cold_start_vocalisations():
    recordings = [
        recording([[0.1, 0.3], [0.5, 0.6]], tag=0),
        recording([], tag=10000),  # no syllables: passed over
        recording([[0.02, 0.2]], tag=20000),  # lead-in clipped at the file start
        recording([[0.4, 0.55]], tag=30000),
        recording([[0.4, 0.9]], tag=40000),
    ]
    vocs = cold_start_vocalisations(recordings, n_vocs=3, silence_pad_samples=50)
    # Windows [50, 300), [0, 200), [350, 550), all cut to the shortest, 200 samples.
    np.testing.assert_array_equal(
        vocs, np.array([np.arange(50, 250), 20000 + np.arange(200), 30350 + np.arange(200)], np.float32)
    )
    assert cold_start_vocalisations(recordings, 0, 50).shape == (0, 0)
    assert cold_start_vocalisations(recordings[1:2], 8, 50).shape == (0, 0)


def test_first_vocalisation_is_the_earliest_syllable_of_an_unsorted_file(tmp_path):
    rows = "".join(f"{on} {off}\n" for on, off in SYLLABLES[::-1])
    for tag in range(5):
        write_recording(tmp_path, f"rec{tag}", tagged_samples(tag), annotation=rows)
    data = load_data(str(tmp_path), silence_pad_samples=0, max_segs=10)
    assert data.val_vocalisations.shape == (1, 800)  # 0.3-0.4 s, not the 0.75-0.8 s first row


def test_bundled_example_data():
    assert resolve_data_dir("@example") == example_data_dir()
    assert (example_data_dir() / "NOTICE").read_text().count("CC BY 4.0") == 1
    data = load_data("@example")
    assert data.sample_rate == 32000
    assert (len(data.files.train), len(data.files.val), len(data.files.test)) == (16, 2, 2)
    assert data.x.shape == (6000, 1600)
    np.testing.assert_array_equal(np.bincount(data.categories), [2400, 2400, 1200])
    assert data.val_vocalisations.shape[0] == 2 and data.test_vocalisations.shape[0] == 2
    assert np.all(np.abs(data.x) <= 1)


def test_bundle_is_small():
    assert sum(f.stat().st_size for f in example_data_dir().iterdir()) < 3.2e6


# --- bad input: one line naming the file or flag -------------------------------------------


def load(directory, **settings):
    return load_data(str(directory), **settings)


def test_missing_and_empty_directory(tmp_path):
    with pytest.raises(InputError, match=r"^--data_dir=\S+nowhere: no such directory"):
        load(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"^--data_dir=\S+: no \.wav or \.flac files"):
        load(tmp_path)


def test_recording_without_annotation(data_dir):
    write_recording(data_dir, "rec_new", tagged_samples(0), annotation=None)
    with pytest.raises(
        InputError, match=r"rec_new\.wav: no annotation file rec_new\.txt beside it; .*ouroboros_jax\.segment"
    ):
        load(data_dir)


def test_malformed_annotation_names_file_and_line(data_dir):
    (data_dir / "rec3.txt").write_text("0.3 0.4\n0.5 x\n")
    with pytest.raises(InputError, match=r"rec3\.txt line 2: onset and offset must be numbers"):
        load(data_dir)


def test_mixed_sample_rates(data_dir):
    write_recording(data_dir, "rec_z", tagged_samples(0), sample_rate=16000)
    with pytest.raises(
        InputError, match=r"rec_z\.wav: sampled at 16000 Hz but rec0\.wav at 8000 Hz; .*one sample rate"
    ):
        load(data_dir)


def test_multichannel_needs_the_channel_setting(data_dir):
    write_recording(data_dir, "rec_z", np.stack([tagged_samples(9), tagged_samples(0)], axis=-1))
    with pytest.raises(InputError, match=r"rec_z\.wav: has 2 channels; pick one with --channel=0\.\.1"):
        load(data_dir)
    assert load(data_dir, channel=1, max_segs=10).sample_rate == SR


def test_too_few_files(tmp_path):
    write_recording(tmp_path, "a", tagged_samples(0))
    write_recording(tmp_path, "b", tagged_samples(1))
    with pytest.raises(
        InputError, match=r"^2 recordings are too few for --val_frac=0\.1 and --test_frac=0\.1"
    ):
        load(tmp_path)


def test_empty_annotations_are_counted_once(data_dir, caplog):
    (data_dir / "rec2.txt").write_text("")
    (data_dir / "rec5.txt").write_text("\n")
    with caplog.at_level(logging.WARNING):
        load(data_dir, max_segs=10)
    warnings = [r.getMessage() for r in caplog.records if "annotation files are empty" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("2 of 10 annotation files are empty")


def test_short_training_files_are_counted_once(data_dir, caplog):
    for tag in (4, 6, 7):
        write_recording(data_dir, f"rec{tag}", tagged_samples(tag, n=300), annotation="0.01 0.02\n")
    with caplog.at_level(logging.WARNING):
        data = load(data_dir, max_segs=10)
    short = sum(p.stem in ("rec4", "rec6", "rec7") for p in data.files.train)
    warnings = [r.getMessage() for r in caplog.records if "shorter than one window" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"{short} of 8 training recordings are shorter than one window"
    )


def test_no_training_window_at_all(tmp_path):
    for tag in range(5):
        write_recording(tmp_path, f"rec{tag}", tagged_samples(tag, n=300), annotation="0.01 0.02\n")
    with pytest.raises(
        InputError, match=r"^--data_dir=\S+: the 3 training recordings give no window of 400 samples"
    ):
        load(tmp_path)


def test_window_too_short_for_the_derivatives(data_dir):
    with pytest.raises(
        InputError, match=r"^--context_len=0\.0005: 4 samples at 8000 Hz; a window needs at least 9"
    ):
        load(data_dir, context_len=0.0005)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(ratio="0.4,0.4"), r"^--ratio=0\.4,0\.4: expected three non-negative numbers"),
        (dict(ratio=(0.5, -0.1, 0.6)), r"^--ratio=0\.5,-0\.1,0\.6: expected three non-negative numbers"),
        (dict(val_frac=1.0), r"^--val_frac=1\.0: must be in \[0, 1\)"),
        (dict(test_frac=-0.1), r"^--test_frac=-0\.1: must be in \[0, 1\)"),
        (dict(n_val_vocs=-1), r"^--n_val_vocs=-1: must not be negative"),
        (dict(silence_pad_samples=-5), r"^--silence_pad_samples=-5: must not be negative"),
        (dict(channel=-1), r"^--channel=-1: must not be negative"),
        (dict(context_len=-0.05), r"^--context_len=-0\.05: must be a positive number of seconds"),
    ],
)
def test_bad_settings_name_the_flag(settings, message):
    with pytest.raises(InputError, match=message):
        load_data("somewhere", **settings)


def test_config_normalises_the_ratio():
    assert SamplerConfig(ratio="1,1,0.5").ratio == (1.0, 1.0, 0.5)


def test_segment_derivatives_shapes():
    x = np.random.default_rng(0).normal(size=(3, 50)).astype(np.float32)
    dxdt, d2x = segment_derivatives(x)
    assert dxdt.shape == d2x.shape == (3, 50) and dxdt.dtype == d2x.dtype == np.float32
