"""Figures of a trained run, as PNGs (docs/figures.md): the library half of `python -m ouroboros_jax.plot`.

`specgram` (a validation vocalisation and a member's autonomous output on it), `losses` (per-epoch
loss panels of runs, overlaid) and `drives` (a member's drives under the vocalisation's
spectrogram) take the command's flags as arguments; `loss_curves` reads a member's per-epoch
means from its TensorBoard scalars. The drawing is `training.figures`'.
"""

import pathlib
from collections.abc import Sequence

import numpy as np
from flax import nnx

from ouroboros_jax.errors import InputError
from ouroboros_jax.model.ouroboros import Drives
from ouroboros_jax.objective.derivatives import first_derivative
from ouroboros_jax.scoring.evaluation import correct, generate
from ouroboros_jax.training.events import read_scalars
from ouroboros_jax.training.figures import (
    DPI,
    drives_figure,
    epoch_means,
    loss_panels_figure,
    specgram_figure,
)
from ouroboros_jax.training.logbook import console
from ouroboros_jax.training.outputs import write_png
from ouroboros_jax.training.run_dir import member_folder, read_run_info
from ouroboros_jax.training.sweep import member_label
from ouroboros_jax.training.trained import TrainedRun, load_run

_compute_drives = nnx.jit(lambda model, x, dxdt: model(x, dxdt))


def _save(figure, out, dpi: int) -> pathlib.Path:
    path = pathlib.Path(out)
    if not path.parent.is_dir():
        raise InputError(f"--out={out}: the directory {path.parent} does not exist")
    if dpi < 1:
        raise InputError(f"--dpi={dpi}: must be at least 1")
    write_png(path, figure, dpi)
    return path


def _validation_vocalisation(run: TrainedRun, voc_idx: int) -> np.ndarray:
    """Validation vocalisation `voc_idx` of the run, rebuilt from its recorded data settings. Returns (n,)."""
    vocalisations = run.data().val_vocalisations
    if not 0 <= voc_idx < len(vocalisations):
        raise InputError(f"--voc_idx={voc_idx}: the run has {len(vocalisations)} validation vocalisations; "
                         f"choose 0 to {len(vocalisations) - 1}")
    return vocalisations.window(voc_idx)


def _model_and_vocalisation(run_dir, seed: int | None, epoch: int | None, voc_idx: int):
    """(run, seed, model, validation vocalisation voc_idx); seed None is the run's selected seed."""
    run = load_run(run_dir, epoch)
    seed = run.selected_seed if seed is None else seed
    return run, seed, run.model(seed), _validation_vocalisation(run, voc_idx)


def specgram(run_dir, seed: int | None = None, epoch: int | None = None, voc_idx: int = 0, rescale: bool = False,
             out=None, dpi: int = DPI) -> pathlib.Path:
    """A validation vocalisation and a seed's autonomous output on it (`figures.specgram_figure`).

    The output is the raw autonomous integration from the vocalisation's first sample
    (`evaluation.generate` without rescale), or with `rescale` the deployed generation scaled to
    the vocalisation's level; target and output are detrended with `evaluation.correct`.
    Prints both standard deviations and the output's finite fraction.

    Args:
      run_dir: the run's --out_dir.
      seed: the seed; None for the run's selected seed.
      epoch: the checkpoint (completed epochs); None for the newest.
      voc_idx: the validation vocalisation.
      rescale: draw the rescaled deployed generation.
      out: the PNG; None for `<run_dir>/specgram_epoch<E>_seed<K>_voc<I>[_rescaled].png`.
      dpi: resolution of the PNG.

    Returns:
      The PNG's path.
    """
    run, seed, model, vocalisation = _model_and_vocalisation(run_dir, seed, epoch, voc_idx)
    target = correct(vocalisation)
    output = generate(model, vocalisation, run.setup.rollout, rescale=rescale)
    kind = "rescaled deployed generation" if rescale else "raw autonomous output"
    figure = specgram_figure(target, output, run.sample_rate,
                             title=f"{run.run_dir.name}: epoch {run.epoch}, {member_label(run.config, seed)}, "
                                   f"validation vocalisation {voc_idx} ({kind})")
    suffix = "_rescaled" if rescale else ""
    path = _save(figure, out or run.run_dir / f"specgram_epoch{run.epoch}_seed{seed}_voc{voc_idx}{suffix}.png", dpi)
    finite = np.isfinite(output)
    console("target std %.4g, output std %.4g, output finite fraction %.3f; wrote %s", np.std(target),
            np.std(output[finite]) if finite.any() else np.nan, finite.mean(), path)
    return path


def loss_curves(run_dir, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-epoch means of a seed's TensorBoard scalars (`figures.epoch_means`).

    Epochs come from the `batches_per_epoch` the run recorded in run.json, never assumed.

    Returns:
      tag -> (epochs (E,), means (E,)).
    """
    run_dir = pathlib.Path(run_dir)
    info = read_run_info(run_dir, "--run")
    if seed not in info["seeds"]:
        raise InputError(f"--seed={seed}: the run's seeds are {info['seeds']}")
    folder = run_dir / member_folder(info, seed)
    scalars = read_scalars(folder)
    if not scalars:
        raise InputError(f"--seed={seed}: {folder} holds no TensorBoard scalars; the run's seeds are {info['seeds']}")
    return epoch_means(scalars, info["batches_per_epoch"])


def losses(runs: Sequence[str], seed: int = 0, out="losses.png", dpi: int = DPI) -> pathlib.Path:
    """Per-epoch loss panels of one or more runs, overlaid (`figures.loss_panels_figure`).

    Args:
      runs: `label:run_dir` strings, one per run.
      seed: the seed whose scalars are drawn, in every run.
      out: the PNG.
      dpi: resolution of the PNG.

    Returns:
      The PNG's path.
    """
    if not runs:
        raise InputError("--run is required: label:run_dir, once per run to overlay")
    curves = {}
    for spec in runs:
        label, sep, run_dir = spec.partition(":")
        if not (sep and label and run_dir):
            raise InputError(f"--run={spec}: expected label:run_dir")
        if label in curves:
            raise InputError(f"--run={spec}: the label {label} is used twice")
        curves[label] = loss_curves(run_dir, seed)
    path = _save(loss_panels_figure(curves), out, dpi)
    console("wrote %s", path)
    return path


def drives(run_dir, voc_idx: int, seed: int | None = None, epoch: int | None = None, out=None,
           dpi: int = DPI) -> pathlib.Path:
    """A seed's drives on a validation vocalisation under its spectrogram (`figures.drives_figure`).

    Args:
      run_dir: the run's --out_dir.
      voc_idx: the validation vocalisation.
      seed: the seed; None for the run's selected seed.
      epoch: the checkpoint (completed epochs); None for the newest.
      out: the PNG; None for `<run_dir>/drives_epoch<E>_seed<K>_voc<I>.png`.
      dpi: resolution of the PNG.

    Returns:
      The PNG's path.
    """
    run, seed, model, vocalisation = _model_and_vocalisation(run_dir, seed, epoch, voc_idx)
    x = vocalisation[None].astype(np.float32)
    computed = _compute_drives(model, x, first_derivative(x).astype(np.float32))
    title = (f"{run.run_dir.name}: epoch {run.epoch}, {member_label(run.config, seed)}, validation vocalisation "
             f"{voc_idx}")
    figure = drives_figure(correct(vocalisation), Drives(*(np.asarray(a[0]) for a in computed)), run.sample_rate,
                           time_scale=run.setup.model.time_scale, title=title)
    path = _save(figure, out or run.run_dir / f"drives_epoch{run.epoch}_seed{seed}_voc{voc_idx}.png", dpi)
    console("wrote %s", path)
    return path
