"""Syllable types by clustering: features, KMeans, `segment --cluster`, and the bundled finch's types."""

import csv
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ouroboros_jax.data import example_data_dir, list_audio_files, read_audio, read_labelled_annotations
from ouroboros_jax.data.example_data import EXAMPLE_CLUSTER, EXAMPLE_CLUSTER_SEED
from ouroboros_jax.data.segmentation import TYPES_COLUMNS, segment_directory
from ouroboros_jax.data.segmenter import SegmenterConfig
from ouroboros_jax.data.syllable_types import (
    FLOOR_DB,
    N_MELS,
    N_STEPS,
    cluster_syllables,
    mel_filterbank,
    parse_cluster,
    syllable_shape,
)
from ouroboros_jax.errors import InputError

SR = 16000
# Three types a researcher would tell apart: a harmonic stack, a slow down-sweep, a short tone.
TYPES = {"stack": 12, "sweep": 8, "short": 5}


def syllable(kind: str, rng, stretch=None, shift=None) -> np.ndarray:
    """One syllable of a type, its duration and pitch scaled by `stretch` and `shift` (default: a little
    jitter), at a random level."""
    stretch = rng.uniform(0.93, 1.07) if stretch is None else stretch
    shift = rng.uniform(0.97, 1.03) if shift is None else shift
    duration = {"stack": 0.05, "sweep": 0.09, "short": 0.025}[kind] * stretch
    t = np.arange(round(duration * SR)) / SR
    if kind == "stack":
        x = sum(np.sin(2 * np.pi * 1000 * shift * k * t) / k for k in range(1, 4))
    elif kind == "sweep":
        x = np.sin(2 * np.pi * shift * (5000 * t - 0.5 * 3000 / duration * t**2))
    else:
        x = np.sin(2 * np.pi * 3000 * shift * t)
    taper = np.minimum(1.0, np.minimum(t, duration - t) / 0.003)
    return rng.uniform(0.05, 0.3) * x * taper


def typed_song(directory, n_files=5, seed=0) -> dict[str, list[str]]:
    """WAVs of the `TYPES` syllables in shuffled order, 120 ms apart in quiet noise; returns the types per file."""
    rng = np.random.default_rng(seed)
    kinds = [k for k, n in TYPES.items() for _ in range(n)]
    rng.shuffle(kinds)
    truth = {}
    for f, part in enumerate(np.array_split(np.array(kinds), n_files)):
        pieces = [rng.normal(0, 1e-4, round(0.1 * SR))]
        for kind in part:
            pieces += [syllable(kind, rng), rng.normal(0, 1e-4, round(0.12 * SR))]
        x = np.concatenate(pieces)
        sf.write(directory / f"song{f}.wav", np.round(x * 32767).astype(np.int16), SR, subtype="PCM_16")
        truth[f"song{f}"] = list(part)
    return truth


CONFIG = SegmenterConfig(min_freq_hz=300.0, max_freq_hz=7000.0)


def test_mel_filters_cover_the_band_without_an_empty_band():
    for sample_rate in (16000, 32000, 44100):
        window = round(0.008 * sample_rate)
        bank = mel_filterbank(2 * window, sample_rate, 500.0, 10000.0)
        assert bank.shape == (N_MELS, window + 1)
        np.testing.assert_allclose(bank.sum(axis=1), 1.0)
        freqs = np.fft.rfftfreq(2 * window, 1 / sample_rate)
        centres = bank @ freqs
        assert np.all(np.diff(centres) > 0) and 500 < centres[0] and centres[-1] < min(10000, sample_rate / 2)


def test_the_shape_ignores_level_and_tempo_and_tells_types_apart():
    rng = np.random.default_rng(1)
    x = syllable("stack", rng, stretch=1.0, shift=1.0)
    bank = mel_filterbank(2 * round(0.008 * SR), SR, 300.0, 7000.0)
    shape = syllable_shape(x, SR, bank)
    # dB below the peak; the resampled steps need not fall on the peak's frame.
    assert shape.shape == (N_MELS, N_STEPS) and -1.0 < shape.max() <= 0.0 and shape.min() >= FLOOR_DB
    np.testing.assert_allclose(syllable_shape(20 * x, SR, bank), shape, atol=1e-9)
    slower = syllable("stack", rng, stretch=1.2, shift=1.0)
    again = syllable("stack", rng)  # the same type, another pitch, length and level
    other = syllable("short", rng)
    distance = {name: np.abs(syllable_shape(y, SR, bank) - shape).mean() for name, y in
                (("slower", slower), ("same type", again), ("other type", other))}
    assert distance["slower"] < distance["other type"] / 3 and distance["same type"] < distance["other type"] / 3


def _recorded_types(tmp_path, **kwargs):
    truth = typed_song(tmp_path)
    result = segment_directory(tmp_path, tmp_path / "out", CONFIG, **kwargs)
    found = np.concatenate(result.labels)
    expected = np.concatenate([truth[t.stem] for t in result.targets])
    return truth, result, found, expected


def test_auto_finds_the_three_types_and_names_them_by_frequency(tmp_path):
    _, result, found, expected = _recorded_types(tmp_path, cluster="auto", seed=3)
    assert len(found) == sum(TYPES.values())  # the segmenter found every syllable
    assert result.types.n_types == 3 and result.types.silhouette > 0.5
    # Each true type is one cluster, named by decreasing count.
    assert {kind: set(found[expected == kind]) for kind in TYPES} == {"stack": {"a"}, "sweep": {"b"}, "short": {"c"}}


def test_the_same_seed_gives_the_same_files(tmp_path):
    truth = typed_song(tmp_path)
    texts = []
    for out in ("one", "two"):
        segment_directory(tmp_path, tmp_path / out, CONFIG, cluster="2", seed=5)
        texts.append({stem: (tmp_path / out / f"{stem}.txt").read_text() for stem in truth})
    assert texts[0] == texts[1]
    assert {line.split()[2] for text in texts[0].values() for line in text.splitlines()} == {"a", "b"}


def test_summary_counts_medians_and_figure(tmp_path):
    _, result, found, expected = _recorded_types(tmp_path, cluster="3")
    with (tmp_path / "out" / "syllable_types.csv").open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == TYPES_COLUMNS
    durations = np.concatenate([np.diff(s, axis=-1)[:, 0] for s in result.syllables]) * 1e3
    for label, count, median in rows[1:]:
        assert int(count) == np.sum(found == label)
        np.testing.assert_allclose(float(median), np.median(durations[found == label]))
    assert [r[0] for r in rows[1:]] == ["a", "b", "c"] and [int(r[1]) for r in rows[1:]] == [12, 8, 5]
    from PIL import Image  # matplotlib's own dependency

    with Image.open(tmp_path / "out" / "syllable_types.png") as image:
        width, height = image.size
    assert width > height > 300  # three rows (types) of six examples


def test_only_the_chosen_types_are_written(tmp_path):
    truth, result, found, expected = _recorded_types(tmp_path, cluster="3", syllables=("b",))
    for target, syllables, labels, kept in zip(result.targets, result.syllables, result.labels, result.kept):
        written, written_labels = read_labelled_annotations(target, 10.0, SR)
        np.testing.assert_allclose(written, syllables[labels == "b"], atol=1e-6)
        assert set(written_labels) <= {"b"} and np.array_equal(kept, labels == "b")


def test_too_few_syllables_and_bad_cluster_values():
    with pytest.raises(InputError, match="--cluster=4: 3 syllables are too few to cluster into 4 types"):
        cluster_syllables(np.zeros((3, 5)), np.zeros(3), 4, 0)
    for value in ("1", "27", "many", "-3"):
        with pytest.raises(InputError, match=rf"--cluster={value}: expected a number of syllable types from 2 to 26"):
            parse_cluster(value)
    assert parse_cluster("auto") is None and parse_cluster("5") == 5


def segment_cli(*flags):
    return subprocess.run([sys.executable, "-m", "ouroboros_jax.segment", *flags], capture_output=True, text=True,
                          timeout=300)


def one_line_error(result) -> str:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.slow
def test_cli_cluster_and_its_errors(tmp_path):
    typed_song(tmp_path)
    band = ("--min_freq_hz=300", "--max_freq_hz=7000")
    result = segment_cli(f"--audio_dir={tmp_path}", "--cluster=auto", *band)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote 5 annotation files" in result.stdout and "25 syllables" in result.stdout
    assert "3 syllable types (silhouette" in result.stdout and "a (12), b (8), c (5)" in result.stdout
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    line = one_line_error(segment_cli(f"--audio_dir={tmp_path}", *band, "--cluster=auto", "--overwrite",
                                      "--syllables=a,x"))
    assert (f"--syllables=a,x: no syllable is labelled x in --audio_dir={tmp_path}; " in line
            and line.endswith("the labels there are a (12), b (8), c (5)")), line
    line = one_line_error(segment_cli(f"--audio_dir={tmp_path}", "--syllables=a", "--overwrite"))
    assert "--syllables=a: the segmenter's syllables have no types; add --cluster" in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing was overwritten


@pytest.mark.parametrize("kwargs, message", [
    (dict(cluster="auto"), "--out_dir=.*already exist.*pass --overwrite"),
    (dict(cluster="0", overwrite=True), "--cluster=0: expected a number of syllable types"),
    (dict(cluster="30", overwrite=True), "--cluster=30: expected a number of syllable types"),
])
def test_bad_requests_write_nothing(tmp_path, kwargs, message):
    typed_song(tmp_path)
    segment_directory(tmp_path, tmp_path, CONFIG, cluster="3")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=message):
        segment_directory(tmp_path, tmp_path, CONFIG, **kwargs)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_bundled_finch_labels_are_the_clustering_of_its_syllables(tmp_path):
    """The bundle's third column is `segment --cluster` on its own recordings (scripts/make_example_data.py)."""
    bundle = example_data_dir()
    for wav in list_audio_files(bundle, "--data_dir"):
        shutil.copy(wav, tmp_path)
    result = segment_directory(tmp_path, tmp_path, SegmenterConfig(), cluster=EXAMPLE_CLUSTER,
                               seed=EXAMPLE_CLUSTER_SEED)
    for target, syllables, labels in zip(result.targets, result.syllables, result.labels):
        x, sample_rate = read_audio(bundle / target.with_suffix(".wav").name)
        bundled = read_labelled_annotations(bundle / target.name, len(x) / sample_rate, sample_rate)
        np.testing.assert_allclose(bundled[0], syllables, atol=1e-6)
        np.testing.assert_array_equal(bundled[1], labels)
    assert result.types.n_types >= 4  # Bengalese finch song has several types
