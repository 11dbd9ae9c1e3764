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
from ouroboros_jax.errors import InputError
from ouroboros_jax.objective.derivatives import first_derivative, second_derivative

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
    # No window-level holdout, every drawn window trains (docs/data.md, "Splits and the cold-start vocalisations").
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


def test_val_and_test_vocalisations_are_every_syllable_of_their_files(data_dir):
    data = load_data(str(data_dir), silence_pad_samples=500)
    for files, vocs in ((data.files.val, data.val_vocalisations), (data.files.test, data.test_vocalisations)):
        (path,) = files
        audio = tagged_samples(int(path.stem[3:])) / 32768
        # The three syllables 0.3-0.4, 0.5-0.65, 0.75-0.8 s, each with 500 samples of lead-in (the
        # gaps are longer), read on to the next multiple of 256 samples.
        starts, ends = np.array([2400, 4000, 6000]) - 500, np.array([3200, 5200, 6400])
        np.testing.assert_array_equal(vocs.lengths, ends - starts)  # 1300, 1700, 900
        np.testing.assert_array_equal(vocs.lead_ins, [500, 500, 500])
        np.testing.assert_allclose(vocs.onsets, SYLLABLES[:, 0])
        np.testing.assert_allclose(vocs.offsets, SYLLABLES[:, 1])
        assert vocs.files == (path,) * 3 and vocs.audio.shape == (3, 1792) and vocs.audio.dtype == np.float32
        for row, start, read in zip(vocs.audio, starts, [1536, 1792, 1024]):
            np.testing.assert_array_equal(row[:read], audio[start : start + read].astype(np.float32))
            assert not row[read:].any()


def recording(syllables, n_samples=1000, tag=0, labels=None):
    audio = tag + np.arange(n_samples, dtype=np.float64)
    syllables = np.asarray(syllables, dtype=np.float64).reshape(-1, 2)
    return Recording(pathlib.Path(f"r{tag}.wav"), audio, 1000, syllables,
                     None if labels is None else np.array(labels, dtype=np.str_))


def test_cold_start_vocalisations():
    recordings = [
        # Lead-ins: 50 (the longest); 20, the gap to the previous syllable; none (gap 5 < 10).
        recording([[0.1, 0.4], [0.42, 0.7], [0.705, 0.95]], tag=0),
        recording([], tag=10000),  # no syllables: passed over
        recording([[0.02, 0.23]], tag=20000),  # lead-in clipped at the file start: 20
        # The b syllable is not chosen, but it bounds the next one's lead-in: 30.
        recording([[0.4, 0.61], [0.65, 0.7], [0.73, 0.98]], tag=30000, labels=["a", "b", "a"]),
        recording([[0.5, 0.6]], tag=40000),  # 150 samples with its lead-in: too short to score
    ]
    vocs = cold_start_vocalisations(recordings, ("a", ""), 8, silence_pad_samples=50, min_lead_in=10)
    # Taken in turn: the first of each recording, then the second of each.
    np.testing.assert_array_equal(vocs.onsets, [0.1, 0.02, 0.4, 0.42, 0.73])
    np.testing.assert_array_equal(vocs.lead_ins, [50, 20, 50, 20, 30])
    np.testing.assert_array_equal(vocs.lengths, [350, 230, 260, 300, 280])
    starts = [50, 20000, 30350, 400, 30700]
    for i, start in enumerate(starts):
        np.testing.assert_array_equal(vocs.window(i), start + np.arange(vocs.lengths[i]))
    # Each read on to the next multiple of 256 samples; past the recording's end, and past that, zeros.
    assert vocs.audio.shape == (5, 512)
    np.testing.assert_array_equal(vocs.audio[2], 30350 + np.arange(512))
    np.testing.assert_array_equal(vocs.audio[1], np.concatenate([20000 + np.arange(256), np.zeros(256)]))
    np.testing.assert_array_equal(vocs.audio[4], np.concatenate([30700 + np.arange(300), np.zeros(212)]))
    assert [p.name for p in vocs.files] == ["r0.wav", "r20000.wav", "r30000.wav", "r0.wav", "r30000.wav"]
    assert len(cold_start_vocalisations(recordings, ("a", ""), 3, 50, 10)) == 3
    assert cold_start_vocalisations(recordings, (), 0, 50, 10).audio.shape == (0, 0)
    assert len(cold_start_vocalisations(recordings, (), 8, 50, 25)) == 3  # lead-ins of 20 are too short


def test_vocalisations_integrate_in_one_batch_per_read_length():
    recordings = [recording([[0.1, 0.4], [0.5, 0.75]], tag=0), recording([[0.05, 0.25], [0.3, 0.5]], tag=5000)]
    vocs = cold_start_vocalisations(recordings, (), 8, silence_pad_samples=50, min_lead_in=10)
    np.testing.assert_array_equal(vocs.lengths, [350, 250, 300, 250])  # read to 512, 256, 512, 256
    calls = []

    def outputs(audio):
        calls.append(audio.shape)
        return np.stack([audio, -audio])  # (2, n, R): two "members"

    gathered = vocs.integrate(outputs)
    assert calls == [(2, 256), (2, 512)] and gathered.shape == (2, 4, 512)
    np.testing.assert_array_equal(gathered[0], vocs.audio) and np.testing.assert_array_equal(gathered[1], -vocs.audio)


def test_vocalisations_are_in_time_order_in_an_unsorted_file(tmp_path):
    rows = "".join(f"{on} {off}\n" for on, off in SYLLABLES[::-1])
    for tag in range(5):
        write_recording(tmp_path, f"rec{tag}", tagged_samples(tag), annotation=rows)
    data = load_data(str(tmp_path), silence_pad_samples=0, min_lead_in_ms=0, max_segs=10)
    np.testing.assert_array_equal(data.val_vocalisations.onsets, SYLLABLES[:, 0])


def test_bundled_example_data():
    assert resolve_data_dir("@example") == example_data_dir()
    assert (example_data_dir() / "NOTICE").read_text().count("CC BY 4.0") == 1
    data = load_data("@example", min_eval_vocs=8)
    assert data.sample_rate == 32000
    assert (len(data.files.train), len(data.files.val), len(data.files.test)) == (16, 2, 2)
    assert data.x.shape == (6000, 1600)
    np.testing.assert_array_equal(np.bincount(data.categories), [2400, 2400, 1200])
    assert len(data.val_vocalisations) == 8 and len(data.test_vocalisations) == 8
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
        write_recording(tmp_path, f"rec{tag}", tagged_samples(tag, n=300), annotation="0.005 0.035\n")
    with pytest.raises(
        InputError, match=r"^--data_dir=\S+: the 3 training recordings give no window of 400 samples"
    ):
        load(tmp_path, min_lead_in_ms=0)


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
