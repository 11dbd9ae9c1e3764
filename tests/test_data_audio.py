"""Reading recordings: exact scaling of every sample format, and every bad-file message."""

import re

import numpy as np
import pytest
import soundfile as sf

from ouroboros_jax.data.audio import list_audio_files, read_audio
from ouroboros_jax.errors import InputError


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_int16_is_divided_by_32768_exactly(tmp_path, suffix):
    samples = np.concatenate(
        [[-32768, -1, 0, 1, 32767], np.random.default_rng(0).integers(-32768, 32768, 1000)]
    )
    path = tmp_path / f"a{suffix}"
    sf.write(path, samples.astype(np.int16), 22050, subtype="PCM_16")
    x, sample_rate = read_audio(path)
    assert sample_rate == 22050
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, samples / 32768.0)
    assert x.min() == -1.0 and x.max() == 32767 / 32768


@pytest.mark.parametrize(
    "suffix, subtype, bits",
    [(".wav", "PCM_24", 24), (".flac", "PCM_24", 24), (".wav", "PCM_32", 32), (".wav", "PCM_U8", 8)],
)
def test_other_pcm_widths_map_to_full_scale(tmp_path, suffix, subtype, bits):
    full = 2 ** (bits - 1)
    values = np.array([-full, -full // 2, -1, 0, 1, full // 2, full - 1], dtype=np.int64)
    # libsndfile takes the top bits of an int32 container, whatever the file's width.
    path = tmp_path / f"a{suffix}"
    sf.write(path, (values << (32 - bits)).astype(np.int32), 16000, subtype=subtype)
    x, _ = read_audio(path)
    np.testing.assert_array_equal(x, values / full)
    assert x.min() == -1.0 and x.max() < 1.0


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_float_files_are_taken_as_they_are(tmp_path, subtype):
    values = np.array([-1.0, -0.25, 0.0, 0.125, 1.0], dtype=np.float32)
    sf.write(tmp_path / "a.wav", values, 16000, subtype=subtype)
    x, _ = read_audio(tmp_path / "a.wav")
    np.testing.assert_array_equal(x, values.astype(np.float64))


def test_multichannel_needs_a_channel(tmp_path):
    stereo = np.stack([np.full(100, 1000), np.full(100, -2000)], axis=-1).astype(np.int16)
    sf.write(tmp_path / "a.wav", stereo, 16000)
    with pytest.raises(InputError, match=r"a\.wav: has 2 channels; pick one with --channel=0\.\.1"):
        read_audio(tmp_path / "a.wav")
    x, _ = read_audio(tmp_path / "a.wav", channel=1)
    np.testing.assert_array_equal(x, np.full(100, -2000 / 32768))
    with pytest.raises(InputError, match=r"a\.wav: --channel=2 but the file has 2 channels"):
        read_audio(tmp_path / "a.wav", channel=2)
    # The setting is for multi-channel files; mono files (in the same folder) ignore it.
    sf.write(tmp_path / "mono.wav", stereo[:, 0], 16000)
    np.testing.assert_array_equal(read_audio(tmp_path / "mono.wav", channel=1)[0], np.full(100, 1000 / 32768))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_rejected(tmp_path, bad):
    values = np.zeros(50)
    values[17] = bad
    sf.write(tmp_path / "a.wav", values, 16000, subtype="DOUBLE")
    with pytest.raises(InputError, match=r"a\.wav: 1 NaN or infinite samples \(first at sample 17\)"):
        read_audio(tmp_path / "a.wav")


def test_unreadable_file(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"this is not audio" * 20)
    with pytest.raises(InputError, match=r"a\.wav: cannot read audio") as error:
        read_audio(tmp_path / "a.wav")
    assert "\n" not in str(error.value)


def test_truncated_wav(tmp_path):
    sf.write(tmp_path / "full.wav", np.zeros(4000, np.int16), 16000)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "a.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        InputError, match=r"a\.wav: truncated WAV \(header declares 8000 bytes of audio, file has 3978\)"
    ):
        read_audio(tmp_path / "a.wav")


def test_truncated_flac(tmp_path):
    noise = np.random.default_rng(0).integers(-3000, 3000, 16000).astype(np.int16)
    sf.write(tmp_path / "full.flac", noise, 16000)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "a.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"a\.flac: (cannot read audio|truncated audio)"):
        read_audio(tmp_path / "a.flac")


def test_list_audio_files(tmp_path):
    for name in ["b.wav", "a.flac", "C.WAV", "a.txt", "notes.md"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_audio_files(tmp_path, "--data_dir")] == ["C.WAV", "a.flac", "b.wav"]


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.mkdir(), r"it is a folder"),
        (lambda p: p.symlink_to(p.with_name("gone.wav")),
         r"it is a broken symbolic link \(to \S*gone\.wav, which does not exist\)"),
        (lambda p: p.symlink_to(p), r"it is a symbolic link loop"),
    ],
)
def test_an_audio_name_that_is_no_file_is_an_error_naming_it(tmp_path, make, reason):
    # Skipped, it would only show as a warning that its b.txt has no recording.
    sf.write(tmp_path / "a.wav", np.zeros(100, np.int16), 16000)
    (tmp_path / "b.txt").write_text("0.01 0.02\n")
    make(tmp_path / "b.wav")
    with pytest.raises(InputError, match=rf"^{re.escape(str(tmp_path / 'b.wav'))}: cannot read audio: {reason}; "
                                         r"replace it with the recording or remove it$") as error:
        list_audio_files(tmp_path, "--data_dir")
    assert "\n" not in str(error.value)


def test_a_symbolic_link_to_a_recording_is_read(tmp_path):
    sf.write(tmp_path / "elsewhere.flac", np.zeros(100, np.int16), 16000)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.flac").symlink_to(tmp_path / "elsewhere.flac")
    assert [p.name for p in list_audio_files(tmp_path / "data", "--data_dir")] == ["a.flac"]


def test_hidden_files_are_skipped_and_stems_must_be_unique(tmp_path):
    for name in ["._a.wav", "a.wav", "b.wav"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_audio_files(tmp_path, "--data_dir")] == ["a.wav", "b.wav"]
    (tmp_path / "a.g.wav").write_bytes(b"")  # sorts between a.flac and a.wav
    (tmp_path / "a.flac").write_bytes(b"")
    with pytest.raises(
        InputError, match=r"a\.flac and a\.wav would share the annotation file a\.txt; keep only one"
    ):
        list_audio_files(tmp_path, "--data_dir")


def test_missing_or_empty_directory(tmp_path):
    with pytest.raises(InputError, match=r"^--data_dir=\S*nowhere: no such directory"):
        list_audio_files(tmp_path / "nowhere", "--data_dir")
    (tmp_path / "a.txt").write_text("0.1 0.2\n")
    with pytest.raises(InputError, match=r"^--audio_dir=\S+: no \.wav or \.flac files in this directory"):
        list_audio_files(tmp_path, "--audio_dir")
