"""`python -m ouroboros_jax.segment`: writes annotations, never partial ones, and fails in one line.

The CLI runs in a subprocess so that its absl flags never meet another CLI's in this process.
"""

import subprocess
import sys

import numpy as np
import soundfile as sf

from ouroboros_jax.data.annotations import read_annotations

SR = 16000


def tone_file(path, syllables, seed):
    """Harmonic tones at the given onset/offset seconds in quiet noise, 1 s, int16."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1e-3, SR)
    for onset, offset in syllables:
        t = np.arange(round(onset * SR), round(offset * SR)) / SR
        x[round(onset * SR) : round(offset * SR)] += sum(
            0.1 / k * np.sin(2 * np.pi * 800 * k * t) for k in range(1, 4)
        )
    sf.write(path, np.round(x * 32767).astype(np.int16), SR)


def segment(*flags):
    return subprocess.run(
        [sys.executable, "-m", "ouroboros_jax.segment", *flags], capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(result, pattern):
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert pattern in lines[0]


def test_writes_annotations_then_refuses_to_overwrite(tmp_path):
    songs = {"a": [(0.2, 0.3), (0.5, 0.7)], "b": [(0.1, 0.15), (0.4, 0.45), (0.8, 0.9)]}
    for stem, syllables in songs.items():
        tone_file(tmp_path / f"{stem}.wav", syllables, seed=len(stem))
    out = tmp_path / "annotations"
    result = segment(f"--audio_dir={tmp_path}", f"--out_dir={out}", "--min_freq_hz=300")
    assert result.returncode == 0, result.stderr
    assert f"wrote 2 annotation files to {out}: 5 syllables" in result.stdout
    for stem, syllables in songs.items():
        np.testing.assert_allclose(read_annotations(out / f"{stem}.txt", 1.0, SR), syllables, atol=0.0025)

    (out / "a.txt").write_text("0.1 0.2\n")  # a hand-corrected file must survive a re-run
    assert_one_line_error(segment(f"--audio_dir={tmp_path}", f"--out_dir={out}"), "pass --overwrite")
    assert (out / "a.txt").read_text() == "0.1 0.2\n"


def test_a_bad_recording_leaves_no_partial_output(tmp_path):
    tone_file(tmp_path / "a.wav", [(0.2, 0.3)], seed=0)
    (tmp_path / "b.wav").write_bytes(b"not audio at all" * 10)
    assert_one_line_error(segment(f"--audio_dir={tmp_path}"), "b.wav: cannot read audio")
    assert not list(tmp_path.glob("*.txt"))


def test_an_out_dir_that_is_a_file_and_a_bad_flag_are_one_line_errors(tmp_path):
    tone_file(tmp_path / "a.wav", [(0.2, 0.3)], seed=0)
    (tmp_path / "taken").write_text("not a folder\n")
    assert_one_line_error(segment(f"--audio_dir={tmp_path}", f"--out_dir={tmp_path / 'taken'}"),
                          f"--out_dir={tmp_path / 'taken'}: is a file, not a folder")
    assert (tmp_path / "taken").read_text() == "not a folder\n"
    assert_one_line_error(segment(f"--audio_dir={tmp_path}", "--onset_db=loud"), "flag --onset_db=loud")
