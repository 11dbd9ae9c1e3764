"""`convert`: a model trained with the PyTorch reference becomes a run of ours (docs/cli.md).

The checkpoint files are built here from the reference's golden small-model parameters, in the
reference's format (a torch-pickled dict); those tests are skipped when torch is not installed.
"""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ouroboros_jax.errors import InputError
from ouroboros_jax.training.conversion import NO_DATA_DIR, convert_reference_checkpoint
from ouroboros_jax.training.synthesis import synthesize
from ouroboros_jax.training.trained import load_run
from tests.helpers import compute_drives

HAS_TORCH = importlib.util.find_spec("torch") is not None


def reference_checkpoint(path, golden, golden_json, legacy=False):
    """Writes the golden small model as the reference's `checkpoint_<N>.tar` would hold it."""
    torch = pytest.importorskip("torch")
    spec = golden_json["small_model"]
    prefix = "small/param/"
    checkpoint = {
        "ouroboros": {k[len(prefix):]: torch.tensor(v) for k, v in golden.items() if k.startswith(prefix)},
        "opt": {}, "tau": golden_json["tau"], "smooth_len": 0, "n_layers": spec["n_layers"],
        "d_state": spec["d_state"], "d_conv": spec["d_conv"], "expand_factor": spec["expand_factor"],
        "parameterization": "poly", "n_kernel": spec["n_kernels"],
    }
    if not legacy:  # files from before these fields existed lack them
        checkpoint.update(drive_lowpass_ms=spec["drive_lowpass_ms"], keep_const=spec["keep_const"])
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, golden, golden_json):
    tmp = tmp_path_factory.mktemp("convert")
    checkpoint = reference_checkpoint(tmp / "checkpoint_7.tar", golden, golden_json)
    result = subprocess.run([sys.executable, "-m", "ouroboros_jax.convert", f"--torch_checkpoint={checkpoint}",
                             f"--out_dir={tmp / 'run'}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"wrote run {tmp / 'run'}: seed 0 = {checkpoint}")
    assert "at 44100 Hz; no --data_dir recorded" in result.stdout
    return tmp / "run"


def test_the_converted_run_computes_the_references_drives(converted, golden, golden_json):
    run = load_run(converted)
    spec = golden_json["small_model"]
    assert run.epoch == 7 and run.seed_ids == (0,) and run.selected_seed == 0
    assert run.sample_rate == golden_json["sr"] and run.setup.model.time_scale == 1.0  # tau = dt
    assert {k: getattr(run.config.model, k) for k in ("n_kernels", "n_layers", "d_state", "d_conv", "expand_factor",
                                                      "drive_lowpass_ms", "keep_const")} == \
        {k: spec[k] for k in ("n_kernels", "n_layers", "d_state", "d_conv", "expand_factor", "drive_lowpass_ms",
                              "keep_const")}
    assert not run.config.rollout.clamp_stages  # the integrator the reference trained it with
    assert run.config.data.data_dir == NO_DATA_DIR
    drives = compute_drives(run.model(0), golden["small/input/x"], golden["small/input/dxdt"])
    for field in ("omega", "gamma", "W", "K"):
        ref = golden[f"small/drives/{field}"]
        np.testing.assert_allclose(getattr(drives, field), ref, rtol=1e-5, atol=2e-6 * np.abs(ref).max(),
                                   err_msg=field)
    info = json.loads((converted / "run.json").read_text())
    assert info["converted_from"]["epoch"] == 7 and info["seeds"] == [0]


def test_synthesize_runs_on_the_converted_run(converted, tmp_path):
    sample_rate = 44100
    t = np.arange(int(0.2 * sample_rate)) / sample_rate
    noise = np.random.default_rng(0).normal(0, 1e-3, t.size)  # so the lead-in is not exactly silent
    song = np.where(t > 0.05, 0.3 * np.sin(2 * np.pi * 3000 * t), 0.0) + noise
    sf.write(tmp_path / "song.wav", (song * 32767).astype(np.int16), sample_rate)
    result = synthesize(converted, tmp_path / "song.wav", tmp_path / "out.wav", onset=0.06, offset=0.15)
    pcm, wav_rate = sf.read(tmp_path / "out.wav", dtype="int16")
    assert wav_rate == sample_rate and result.seed == 0 and result.epoch == 7
    assert len(pcm) == round(0.15 * sample_rate) - round(0.06 * sample_rate) + 2000 and np.any(pcm)


def test_an_old_checkpoint_reads_as_no_lowpass_and_no_constant(tmp_path, golden, golden_json):
    checkpoint = reference_checkpoint(tmp_path / "model.tar", golden, golden_json, legacy=True)
    config = convert_reference_checkpoint(checkpoint, tmp_path / "run", data_dir="@example")
    assert config.model.drive_lowpass_ms == 0.0 and config.model.keep_const is False
    assert config.data.data_dir == "@example"
    assert load_run(tmp_path / "run").epoch == 0  # no N in the file name
    with pytest.raises(InputError, match="already holds a run"):
        convert_reference_checkpoint(checkpoint, tmp_path / "run")


def test_a_tau_other_than_one_sample_needs_the_sample_rate(tmp_path, golden, golden_json):
    torch = pytest.importorskip("torch")
    checkpoint = reference_checkpoint(tmp_path / "checkpoint_1.tar", golden, golden_json)
    torch.save({**torch.load(checkpoint, weights_only=False), "tau": 1.5e-5}, checkpoint)
    with pytest.raises(InputError, match="pass --sample_rate"):
        convert_reference_checkpoint(checkpoint, tmp_path / "run")
    config = convert_reference_checkpoint(checkpoint, tmp_path / "run", sample_rate=32000)
    assert config.model.tau == 1.5e-5 and load_run(tmp_path / "run").setup.model.time_scale == pytest.approx(0.48)


def test_a_missing_or_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(InputError) as error:
        convert_reference_checkpoint(tmp_path / "checkpoint_3.tar", tmp_path / "run")
    assert str(error.value) == f"--torch_checkpoint={tmp_path / 'checkpoint_3.tar'}: no such file"
    (tmp_path / "garbage.tar").write_bytes(b"not a pickle")
    with pytest.raises(InputError) as error:
        convert_reference_checkpoint(tmp_path / "garbage.tar", tmp_path / "run")
    expected = "cannot read it as a PyTorch checkpoint" if HAS_TORCH else 'pip install -e ".[bench]"'
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()
