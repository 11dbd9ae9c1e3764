"""Figures (docs/figures.md): the plot commands on a tiny trained run, the TensorBoard media, the selected figure.

The commands are called in-process as functions; the absl shell runs in a subprocess so that its
flags never meet another CLI's in this process.
"""

import io
import math
import pathlib
import struct
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf
from tensorboardX.proto import event_pb2

from ouroboros_jax.data import load_training_data
from ouroboros_jax.objective.derivatives import first_derivative
from ouroboros_jax.scoring.evaluation import correct, generate
from ouroboros_jax.training import figures, run_figures
from ouroboros_jax.training.run_dir import SPECGRAM
from ouroboros_jax.training.trained import load_run
from tests.test_run import REPO, tiny_config

# The tests read conftest's shared `tiny_run`: 2 epochs, a checkpoint after each.
N_EPOCHS = 2


def png_shape(path, size, dpi):
    image = matplotlib.image.imread(path)
    assert image.shape == (round(size[1] * dpi), round(size[0] * dpi), 4)
    return image


def test_specgram_figure_shares_the_colour_range_and_the_target_y_limits():
    sample_rate = 32000
    t = np.arange(4000) / sample_rate
    target = 0.3 * np.sin(2 * np.pi * 2000 * t)
    output = 1e-3 * np.sin(2 * np.pi * 3000 * t)  # 50 dB quieter
    figure = figures.specgram_figure(target, output, sample_rate)
    images = [ax.images[0] for ax in figure.axes if ax.images]
    assert len(images) == 2 and images[0].get_clim() == images[1].get_clim()
    levels = [figures.log_spectrogram(s, sample_rate)[2] for s in (target, output)]
    vmax = max(level.max() for level in levels)
    np.testing.assert_allclose(images[0].get_clim(), (vmax - figures.DYNAMIC_RANGE_DECADES, vmax))
    assert levels[1].max() < vmax - 2  # so the quiet output is drawn darker, not autoscaled
    waveform_target, waveform_output = figure.axes[0], figure.axes[2]
    assert waveform_output.get_ylim() == waveform_target.get_ylim()
    assert waveform_target.get_xlim()[1] == pytest.approx(1000 * t[-1], rel=0.05)  # ms


def test_log_spectrogram_peaks_at_the_tone_up_to_fmax():
    sample_rate = 32000
    tone = np.sin(2 * np.pi * 1500 * np.arange(8000) / sample_rate)
    times, freqs, level = figures.log_spectrogram(tone, sample_rate, n_fft=512, hop=128, fmax=8000)
    assert freqs[-1] <= 8000 and level.shape == (len(freqs), len(times))
    np.testing.assert_allclose(np.diff(times), 128 / sample_rate * 1000)  # ms
    assert times[0] == 0 and times[-1] >= 1000 * 7999 / sample_rate  # windows centred over the whole tone
    np.testing.assert_allclose(freqs[np.argmax(level.mean(axis=1))], 1500, atol=sample_rate / 512)


def test_epoch_means_group_steps_by_the_given_batches_per_epoch():
    rng = np.random.default_rng(0)
    batches, n_epochs = 5, 3
    steps = np.arange(batches * n_epochs)
    values = rng.normal(size=steps.size)
    values[7] = np.nan  # a skipped step leaves its epoch's mean to the other steps
    epochs, means = figures.epoch_means({"Loss/spec": (steps, values)}, batches)["Loss/spec"]
    naive = [np.nanmean(values[e * batches:(e + 1) * batches]) for e in range(n_epochs)]
    np.testing.assert_array_equal(epochs, [1, 2, 3])
    np.testing.assert_allclose(means, naive)


def test_warmup_ends_where_lam_spec_t_first_reaches_99_percent_of_its_maximum():
    epochs = np.arange(1, 8)
    assert figures.warmup_end(epochs, [0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]) == 6
    assert figures.warmup_end(epochs, [0.995, 1, 1, 1, 1, 1, 1]) == 1
    assert figures.warmup_end(epochs, np.zeros(7)) is None


def test_omega_in_hz_and_the_largest_kernel_terms():
    sample_rate, time_scale = 32000, 4.0
    tau = time_scale / sample_rate
    np.testing.assert_allclose(figures.omega_hz(2 * np.pi * 440 * tau, sample_rate, time_scale), 440)
    W = np.zeros((10, 3, 3))
    W[:, 2, 1], W[:, 0, 2], W[:5, 1, 1] = -3.0, 2.0, 1.0  # W[1, 1] has mean |W| 0.5
    assert figures.largest_kernel_terms(W, 3) == [(2, 1), (0, 2), (1, 1)]


def drawn(monkeypatch, name):
    """Records the arguments of each figure `run_figures` draws with `figures.<name>`."""
    calls, draw = [], getattr(run_figures, name)

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return draw(*args, **kwargs)

    monkeypatch.setattr(run_figures, name, recording)
    return calls


def autonomous_output(run_dir, seed, epoch, voc_idx, rescale=False):
    """A seed's output at a checkpoint on a validation vocalisation, computed here from the checkpoint."""
    run = load_run(run_dir, epoch)
    vocalisation = load_training_data(run.config.data, run.config.sampler, run.config.seed).val_vocalisations.window(voc_idx)
    return vocalisation, generate(run.model(seed), vocalisation, run.setup.rollout, rescale=rescale)


def test_specgram_command_draws_the_selected_seed_by_default(tiny_run, capsys, monkeypatch):
    out, manifest = tiny_run
    calls = drawn(monkeypatch, "specgram_figure")
    path = run_figures.specgram(out, voc_idx=1)
    seed = manifest["selected_seed"]
    assert path == out / f"specgram_epoch{N_EPOCHS}_seed{seed}_voc1.png"
    png_shape(path, figures.SPECGRAM_SIZE, figures.DPI)
    assert "output finite fraction 1.000" in capsys.readouterr().out
    ((target, output, sample_rate), kwargs), = calls
    vocalisation, expected = autonomous_output(out, seed, N_EPOCHS, 1)
    np.testing.assert_array_equal(output, expected)
    np.testing.assert_array_equal(target, correct(vocalisation))
    assert sample_rate == 32000 and f"epoch {N_EPOCHS}, seed {seed}, validation vocalisation 1" in kwargs["title"]


@pytest.mark.parametrize("seed,epoch", [(1, 1), (0, 1)])
def test_specgram_command_any_seed_checkpoint_and_the_rescaled_generation(tiny_run, tmp_path, monkeypatch, seed, epoch):
    out, _ = tiny_run
    calls = drawn(monkeypatch, "specgram_figure")
    path = run_figures.specgram(out, seed=seed, epoch=epoch, rescale=True, out=tmp_path / "rescaled.png", dpi=50)
    png_shape(path, figures.SPECGRAM_SIZE, 50)
    ((_, output, _), kwargs), = calls
    _, expected = autonomous_output(out, seed, epoch, 0, rescale=True)
    np.testing.assert_array_equal(output, expected)
    _, other_epoch = autonomous_output(out, seed, N_EPOCHS, 0, rescale=True)
    assert not np.allclose(output, other_epoch)  # the checkpoints differ, so the epoch matters
    assert f"epoch {epoch}, seed {seed}," in kwargs["title"] and "(rescaled deployed generation)" in kwargs["title"]
    assert run_figures.specgram(out, seed=seed, epoch=epoch, rescale=True, dpi=20).name == \
        f"specgram_epoch{epoch}_seed{seed}_voc0_rescaled.png"


def test_losses_are_per_epoch_with_the_run_s_batches_per_epoch(tiny_run, tmp_path):
    out, _ = tiny_run
    curves = run_figures.loss_curves(out, seed=0)
    for tag in ("Loss/spec", "Loss/tf", "Loss/total", "Train/H", "Train/lam_spec_t"):
        np.testing.assert_array_equal(curves[tag][0], np.arange(1, N_EPOCHS + 1), err_msg=tag)
    figure = figures.loss_panels_figure({"a": curves, "b": run_figures.loss_curves(out, seed=1)})
    assert len(figure.axes) == len(figures.LOSS_PANELS)
    assert figure.axes[0].get_yscale() == "log" and figure.axes[4].get_yscale() == "log"
    assert [len(line.get_xdata()) for line in figure.axes[0].lines if line.get_linestyle() == "-"] == [N_EPOCHS] * 2
    # --spec_warmup_epochs=1: the spec weight is 0 in epoch 1 and full from epoch 2, marked on every panel.
    for ax in figure.axes:
        assert [tuple(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "--"] == [(2, 2)] * 2

    path = run_figures.losses([f"a:{out}", f"b:{out}"], seed=1, out=tmp_path / "losses.png", dpi=40)
    png_shape(path, figures.LOSS_PANELS_SIZE, 40)


def test_drives_command(tiny_run, tmp_path, monkeypatch):
    out, manifest = tiny_run
    calls = drawn(monkeypatch, "drives_figure")
    path = run_figures.drives(out, voc_idx=0, out=tmp_path / "drives.png", dpi=50)
    png_shape(path, figures.DRIVES_SIZE, 50)
    assert run_figures.drives(out, voc_idx=1, seed=0, epoch=1, dpi=20).name == "drives_epoch1_seed0_voc1.png"
    for ((_, drives, _), kwargs), (seed, epoch, voc_idx) in zip(calls, [(manifest["selected_seed"], N_EPOCHS, 0),
                                                                        (0, 1, 1)]):
        run = load_run(out, epoch)
        vocalisation = load_training_data(run.config.data, run.config.sampler, run.config.seed).val_vocalisations.window(voc_idx)[None]
        expected = run.model(seed)(vocalisation, first_derivative(vocalisation).astype(np.float32))
        np.testing.assert_allclose(drives.omega, expected.omega[0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(drives.W, expected.W[0], rtol=1e-5, atol=1e-7)
        assert f"epoch {epoch}, seed {seed}, validation vocalisation {voc_idx}" in kwargs["title"]


def events(seed_dir: pathlib.Path):
    """Every Event in a seed's TensorBoard files (TFRecords: length, CRC, Event, CRC)."""
    for path in sorted(seed_dir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            yield event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length


def test_checkpoints_log_audio_and_the_specgram_image_per_seed(tiny_run):
    out, manifest = tiny_run
    config = tiny_config(out)
    data = load_training_data(config.data, config.sampler, config.seed)
    batches = math.ceil(len(data.x) / manifest["batch_size"])
    assert batches > 1  # so that a reader taking the reference's 600 batches per epoch would see one epoch
    for seed in (0, 1):
        media = {}
        for event in events(out / f"seed{seed}"):
            for value in event.summary.value:
                if value.tag.startswith("Media/"):
                    media.setdefault(value.tag, []).append((event.step, value))
        # save_freq 1: a checkpoint after each epoch, logged at the epoch's last step.
        assert {tag: [step for step, _ in logged] for tag, logged in media.items()} == {
            tag: [batches - 1, 2 * batches - 1] for tag in ("Media/target", "Media/autonomous", "Media/specgram")}
        for tag in ("Media/target", "Media/autonomous"):
            for _, value in media[tag]:
                assert value.audio.sample_rate == data.sample_rate == 32000
                audio, sample_rate = sf.read(io.BytesIO(value.audio.encoded_audio_string))
                assert sample_rate == 32000 and audio.shape == data.val_vocalisations.window(0).shape
                np.testing.assert_allclose(np.abs(audio).max(), 1.0, atol=1e-4)  # peak-normalised
        for _, value in media["Media/specgram"]:
            image = matplotlib.image.imread(io.BytesIO(value.image.encoded_image_string), format="png")
            width, height = figures.SPECGRAM_SIZE
            assert (value.image.height, value.image.width) == image.shape[:2] == (height * 100, width * 100)


def test_the_selected_seed_s_figure_is_written_next_to_the_manifest(tiny_run):
    out, _ = tiny_run
    image = png_shape(out / SPECGRAM, figures.SPECGRAM_SIZE, figures.DPI)
    assert image[..., :3].std() > 0.05  # drawn, not blank


def run_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "ouroboros_jax.plot", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_the_cli_draws_losses_into_the_current_directory_by_default(tiny_run, tmp_path):
    out, _ = tiny_run
    result = run_cli("losses", f"--run=tiny:{out}", "--dpi=30", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    png_shape(tmp_path / "losses.png", figures.LOSS_PANELS_SIZE, 30)


@pytest.mark.parametrize("make_args,message", [
    (lambda run: ["specgram", f"--run_dir={run}", "--voc_idx=99"],
     "--voc_idx=99: the run has 2 validation vocalisations; choose 0 to 1"),
    (lambda run: ["specgram", f"--run_dir={run / 'checkpoints'}"], "checkpoints: no run.json"),
    (lambda run: ["losses", f"--run=a:{run}", "--rescale"], "--rescale is not a flag of losses"),
    (lambda run: ["drives", f"--run_dir={run}"], "--voc_idx is required"),
], ids=["voc_idx_out_of_range", "not_a_run_dir", "flag_of_another_command", "drives_without_voc_idx"])
def test_bad_input_is_a_one_line_error(tiny_run, make_args, message):
    result = run_cli(*make_args(tiny_run[0]))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
