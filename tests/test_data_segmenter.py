"""The amplitude segmenter: known syllables in synthetic song, and the bundled real song."""

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from ouroboros_jax.data.annotations import read_annotations
from ouroboros_jax.data.audio import list_audio_files, read_audio
from ouroboros_jax.data.example_data import example_data_dir
from ouroboros_jax.data.segmenter import SegmenterConfig, band_power_envelope, find_syllables
from ouroboros_jax.errors import InputError

# Onset/offset seconds of a synthetic song: durations 15-150 ms, gaps down to 15 ms.
SONG = np.array([[0.2, 0.23], [0.255, 0.335], [0.395, 0.545], [0.56, 0.605], [0.705, 0.805], [0.845, 0.86]])


def harmonic_song(syllables, sample_rate, noise_rms, seed, length_s=1.1):
    """Harmonic stacks (f0 600-1200 Hz, 5 harmonics, 2 ms raised-cosine ramps) in white noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, noise_rms, round(length_s * sample_rate))
    ramp_len = round(0.002 * sample_rate)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_len) / ramp_len)
    for onset, offset in syllables:
        a, b = round(onset * sample_rate), round(offset * sample_rate)
        t = np.arange(b - a) / sample_rate
        f0 = rng.uniform(600, 1200)
        tone = sum(0.1 / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 6))
        envelope = np.ones(b - a)
        envelope[:ramp_len], envelope[-ramp_len:] = ramp, ramp[::-1]
        x[a:b] += tone * envelope
    return x


@pytest.mark.parametrize("sample_rate", [32000, 44100])
@pytest.mark.parametrize("noise_rms", [1e-3, 1e-2])  # about 40 and 20 dB in-band SNR
@pytest.mark.parametrize("seed", [0, 1])
def test_finds_synthetic_syllables_within_a_few_ms(sample_rate, noise_rms, seed):
    found = find_syllables(harmonic_song(SONG, sample_rate, noise_rms, seed), sample_rate)
    assert found.shape == SONG.shape
    np.testing.assert_allclose(found, SONG, rtol=0, atol=0.0025)


def test_noise_and_silence_have_no_syllables():
    noise = np.random.default_rng(0).normal(0, 0.01, 32000)
    assert find_syllables(noise, 32000).shape == (0, 2)
    assert find_syllables(np.zeros(32000), 32000).shape == (0, 2)


def test_syllables_cut_by_the_file_edges_are_dropped():
    x = harmonic_song(np.array([[0.0, 0.1], [0.3, 0.4], [0.9, 1.1]]), 32000, 1e-3, seed=0)
    np.testing.assert_allclose(find_syllables(x, 32000), [[0.3, 0.4]], atol=0.0025)


def test_short_gaps_merge_and_durations_are_bounded():
    syllables = np.array([[0.1, 0.2], [0.203, 0.3], [0.4, 0.405], [0.5, 0.6]])
    x = harmonic_song(syllables, 32000, 1e-3, seed=2)
    found = find_syllables(x, 32000, SegmenterConfig(min_gap_ms=10))
    # The 3 ms gap closes; the 5 ms click is dropped.
    np.testing.assert_allclose(found, [[0.1, 0.3], [0.5, 0.6]], atol=0.0025)
    assert len(find_syllables(x, 32000, SegmenterConfig(min_gap_ms=10, max_dur_ms=150))) == 1


def test_hysteresis_keeps_a_syllable_whole_through_a_dip():
    x = harmonic_song(np.array([[0.2, 0.4]]), 32000, 1e-3, seed=3)
    x[round(0.28 * 32000) : round(0.32 * 32000)] *= 0.03  # 30 dB down
    envelope, times = band_power_envelope(x, 32000, SegmenterConfig())
    level = envelope - np.percentile(envelope, 10)
    in_dip = (times > 0.29) & (times < 0.31)
    # The dip lies between the offset (8 dB) and onset (15 dB) thresholds ...
    assert np.all((level[in_dip] > 8) & (level[in_dip] < 15))
    # ... so it does not end the syllable, while without hysteresis it would.
    np.testing.assert_allclose(find_syllables(x, 32000), [[0.2, 0.4]], atol=0.0025)
    assert len(find_syllables(x, 32000, SegmenterConfig(offset_db=15))) == 2


def test_envelope_frames_are_centred_every_hop():
    envelope, times = band_power_envelope(
        np.zeros(1000), 1000, SegmenterConfig(min_freq_hz=0, max_freq_hz=500)
    )
    np.testing.assert_array_equal(times, np.arange(1001) / 1000)
    assert envelope.shape == times.shape and np.all(np.isfinite(envelope))


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(offset_db=20.0), r"--offset_db=20\.0 must not exceed --onset_db=15\.0"),
        (dict(min_freq_hz=9000, max_freq_hz=8000), r"--min_freq_hz=9000 must be below --max_freq_hz=8000"),
        (dict(min_dur_ms=600), r"--min_dur_ms=600 must be below --max_dur_ms=500"),
        (dict(hop_ms=0), r"--hop_ms=0: must be positive"),
        (dict(noise_percentile=100), r"--noise_percentile=100: must be in \[0, 100\)"),
    ],
)
def test_bad_settings_name_the_flag(settings, message):
    with pytest.raises(InputError, match=message):
        SegmenterConfig(**settings)


def test_band_above_nyquist_is_an_error():
    with pytest.raises(InputError, match=r"--min_freq_hz=12000.*no frequency in this band at 16000 Hz"):
        find_syllables(np.zeros(1600), 16000, SegmenterConfig(min_freq_hz=12000, max_freq_hz=20000))


def test_finds_the_syllables_of_the_bundled_finch_song():
    files = list_audio_files(example_data_dir(), "--data_dir")
    assert len(files) >= 20
    durations, contrasts = [], []
    for path in files:
        x, sample_rate = read_audio(path)
        found = find_syllables(x, sample_rate)
        # The bundle was annotated by this segmenter with its defaults; they still agree.
        np.testing.assert_allclose(
            found, read_annotations(path.with_suffix(".txt"), len(x) / sample_rate, sample_rate), atol=1e-6
        )
        assert len(found) >= 5
        durations.extend(found[:, 1] - found[:, 0])
        # Song power (1-8 kHz, by a filter independent of the segmenter) inside vs outside syllables.
        song = sosfiltfilt(butter(4, [1000, 8000], btype="band", fs=sample_rate, output="sos"), x)
        inside = np.zeros(len(x), bool)
        for onset, offset in np.round(found * sample_rate).astype(int):
            inside[onset:offset] = True
        contrasts.append(10 * np.log10(np.mean(song[inside] ** 2) / np.mean(song[~inside] ** 2)))
    # Bengalese finch syllables last tens of milliseconds and stand far above the box noise.
    assert 0.04 < np.median(durations) < 0.12 and min(durations) >= 0.01 and max(durations) < 0.25
    assert min(contrasts) > 15
    assert sf.info(files[0]).samplerate == 32000
