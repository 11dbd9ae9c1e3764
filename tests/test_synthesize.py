"""`synthesize`: deployed generation of any syllable of any recording by a trained run (docs/cli.md)."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ouroboros_jax.data import example_data_dir, read_annotations, read_audio, read_labelled_annotations
from ouroboros_jax.errors import InputError
from ouroboros_jax.scoring.evaluation import correct, generate
from ouroboros_jax.training.synthesis import synthesize
from ouroboros_jax.training.trained import load_run

EXAMPLE = example_data_dir()
STEM = "bird3_348_01"  # syllable 0 starts 1273 samples in (lead-in clipped), syllable 1 at 6092
PAD = 2000  # the tiny run's silence_pad_samples (the default)


@pytest.fixture(scope="module")
def recording():
    x, sample_rate = read_audio(EXAMPLE / f"{STEM}.wav")
    return x, sample_rate, read_annotations(EXAMPLE / f"{STEM}.txt", len(x) / sample_rate, sample_rate)


def read_wav(path):
    pcm, sample_rate = sf.read(path, dtype="int16")
    assert sf.info(path).subtype == "PCM_16"
    return pcm, sample_rate


def test_onset_offset_with_clipped_lead_in_at_the_syllables_level(tiny_run, recording, tmp_path):
    run_dir, manifest = tiny_run
    x, sample_rate, syllables = recording
    onset, offset = syllables[0]
    result = synthesize(run_dir, EXAMPLE / f"{STEM}.wav", tmp_path / "out.wav", onset=onset, offset=offset)

    pcm, wav_rate = read_wav(tmp_path / "out.wav")
    off = round(offset * sample_rate)
    assert wav_rate == sample_rate == 32000
    assert len(pcm) == result.n_samples == off  # the window starts at the file start
    assert result.lead_in == round(onset * sample_rate) < PAD
    assert result.seed == manifest["selected_seed"] and result.epoch == 2
    # Rescaled: as loud as the detrended syllable, not peak-normalised.
    np.testing.assert_allclose(np.std(pcm / 32767), np.std(correct(x[:off])), rtol=1e-3)


def test_txt_row_without_rescale_is_the_models_own_output(tiny_run, recording, tmp_path):
    run_dir, manifest = tiny_run
    x, sample_rate, syllables = recording
    other = 1 - manifest["selected_seed"]
    result = synthesize(run_dir, EXAMPLE / f"{STEM}.wav", tmp_path / "out.wav", txt=EXAMPLE / f"{STEM}.txt", row=1,
                        rescale=False, seed=other, epoch=1)

    on, off = (round(t * sample_rate) for t in syllables[1])
    window = x[on - PAD : off]
    pcm, _ = read_wav(tmp_path / "out.wav")
    assert len(pcm) == len(window) == off - on + PAD and result.lead_in == PAD
    run = load_run(run_dir, epoch=1)
    expected = generate(run.model(other), window, run.setup.rollout, rescale=False)
    assert np.abs(expected).max() <= 1.0  # so the level is kept as it is
    np.testing.assert_allclose(pcm / 32767, expected, atol=1 / 32767)


def test_syllables_choose_the_rows_that_row_counts(tiny_run, tmp_path):
    stem = "bird3_348_03"  # types b d c c c c a a a a a b b b e a a
    x, sample_rate = read_audio(EXAMPLE / f"{stem}.wav")
    rows, labels = read_labelled_annotations(EXAMPLE / f"{stem}.txt", len(x) / sample_rate, sample_rate)
    result = synthesize(tiny_run[0], EXAMPLE / f"{stem}.wav", tmp_path / "out.wav", txt=EXAMPLE / f"{stem}.txt",
                        row=1, syllables="a")
    assert (result.onset_s, result.offset_s) == tuple(rows[np.flatnonzero(labels == "a")[1]])
    assert np.flatnonzero(labels == "a")[1] != 1
    # The tiny run trained on every syllable, so by default --row counts every row.
    default = synthesize(tiny_run[0], EXAMPLE / f"{stem}.wav", tmp_path / "all.wav", txt=EXAMPLE / f"{stem}.txt",
                         row=1)
    assert (default.onset_s, default.offset_s) == tuple(rows[1])


def wav_at(path, sample_rate, seconds=0.5):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 2000 * t) * 32767).astype(np.int16), sample_rate)
    return path


@pytest.mark.parametrize("kwargs,message", [
    (dict(onset=0.2, offset=0.1), "--onset=0.2 s is not before --offset=0.1 s"),
    (dict(onset=0.1, offset=99.0), "outside"),
    (dict(), "say which syllable"),
    (dict(onset=0.1), "--onset and --offset go together"),
    (dict(onset=0.1, offset=0.2, txt=EXAMPLE / f"{STEM}.txt"), "both name a syllable"),
    (dict(row=1), "--row=1 picks a row of --txt"),
    (dict(txt=EXAMPLE / f"{STEM}.txt", row=99), "--row=99"),
    (dict(txt="/no/such.txt"), "--txt=/no/such.txt: no such file"),
    (dict(txt=EXAMPLE / f"{STEM}.txt", syllables="zz"),
     f"--syllables=zz: no syllable is labelled zz in --txt={EXAMPLE}"),
    (dict(txt=EXAMPLE / f"{STEM}.txt", syllables="b", row=99),
     "bird3_348_01.txt has 10 syllables labelled b, rows 0-9"),
    (dict(onset=0.1, offset=0.2, syllables="a"), "--syllables=a picks rows of --txt"),
    (dict(onset=0.0, offset=0.005, silence_pad_samples=0), "generation needs more than 200"),
    (dict(onset=0.1, offset=0.2, silence_pad_samples=-1), "--silence_pad_samples=-1"),
    (dict(onset=0.1, offset=0.2, seed=7), "--seed=7"),
    (dict(onset=0.1, offset=0.2, epoch=5), "--epoch=5"),
])
def test_bad_requests_are_input_errors_and_write_nothing(tiny_run, tmp_path, kwargs, message):
    out = tmp_path / "out.wav"
    with pytest.raises(InputError) as error:
        synthesize(tiny_run[0], EXAMPLE / f"{STEM}.wav", out, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not out.exists()


def test_an_out_that_is_a_folder_is_an_error(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr("ouroboros_jax.training.synthesis.load_run", lambda *a: pytest.fail("loaded the run"))
    with pytest.raises(InputError, match=rf"^--out={tmp_path}: is a folder; name the WAV file to write, e\.g\. "
                                         rf"--out={tmp_path}/syllable\.wav$"):
        synthesize(tiny_run[0], EXAMPLE / f"{STEM}.wav", tmp_path, onset=0.1, offset=0.2)
    assert list(tmp_path.iterdir()) == []


def test_a_recording_at_another_rate_or_missing_is_an_error(tiny_run, tmp_path):
    with pytest.raises(InputError, match="recorded at 16000 Hz, but the run was trained at 32000 Hz"):
        synthesize(tiny_run[0], wav_at(tmp_path / "a.wav", 16000), tmp_path / "out.wav", onset=0.1, offset=0.2)
    with pytest.raises(InputError, match="--audio=/no/such.wav: no such file"):
        synthesize(tiny_run[0], "/no/such.wav", tmp_path / "out.wav", onset=0.1, offset=0.2)


def run_cli(*flags):
    return subprocess.run([sys.executable, "-m", "ouroboros_jax.synthesize", *flags], capture_output=True, text=True,
                          timeout=300)


def test_cli_writes_the_wav_and_says_what_it_did(tiny_run, tmp_path):
    out = tmp_path / "sub" / "out.wav"
    result = run_cli(f"--run_dir={tiny_run[0]}", f"--audio={EXAMPLE / f'{STEM}.wav'}",
                     f"--txt={EXAMPLE / f'{STEM}.txt'}", "--row=1", "--seed=0", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"wrote {out}: ") and "seed 0 after epoch 2" in result.stdout
    pcm, wav_rate = read_wav(out)
    assert wav_rate == 32000 and len(pcm) == int(result.stdout.split(": ")[1].split()[0])


def test_cli_error_is_one_line_with_exit_status_2(tmp_path):
    result = run_cli(f"--run_dir={tmp_path}", "--audio=/no/such.wav", "--onset=0.1", "--offset=0.2",
                     f"--out={tmp_path / 'out.wav'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: --audio=/no/such.wav: no such file"], result.stderr
    assert not (tmp_path / "out.wav").exists()
