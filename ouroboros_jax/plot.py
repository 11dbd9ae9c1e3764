"""`python -m ouroboros_jax.plot <command> [flags]`: figures of a trained run (docs/figures.md), as PNGs.

    python -m ouroboros_jax.plot specgram --run_dir=runs/demo [--seed=K] [--epoch=E] [--voc_idx=I] [--rescale]
    python -m ouroboros_jax.plot losses --run=demo:runs/demo [--run=label:run_dir ...] [--seed=K]
    python -m ouroboros_jax.plot drives --run_dir=runs/demo --voc_idx=I [--seed=K] [--epoch=E]

Every command takes --out (the PNG; each has a default) and --dpi. The commands are also
functions (`specgram`, `losses`, `drives`) that take the flags as arguments; the figures
themselves are drawn by `ouroboros_jax.figures`. See docs/figures.md.
"""

import pathlib
from collections.abc import Sequence

import numpy as np
from absl import flags, logging
from flax import nnx

from ouroboros_jax import cli
from ouroboros_jax.data import load_training_data
from ouroboros_jax.derivatives import first_derivative
from ouroboros_jax.errors import InputError, report_input_errors
from ouroboros_jax.evaluation import correct, generate
from ouroboros_jax.figures import DPI, drives_figure, loss_panels_figure, specgram_figure
from ouroboros_jax.model.ouroboros import Drives
from ouroboros_jax.training.events import loss_curves
from ouroboros_jax.training.logbook import console
from ouroboros_jax.training.outputs import write_png
from ouroboros_jax.training.run_dir import RUN_INFO
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
    try:
        vocalisations = load_training_data(run.config.data, run.config.sampler, run.config.seed).val_vocalisations
    except InputError as e:
        raise InputError(f"{e} (the data of the run {run.run_dir}, as recorded in its {RUN_INFO})") from e
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


def losses(runs: Sequence[str], seed: int = 0, out="losses.png", dpi: int = DPI) -> pathlib.Path:
    """Per-epoch loss panels of one or more runs, overlaid (`figures.loss_panels_figure`; each run's
    curves from `events.loss_curves`).

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


_COMMAND_FLAGS = {
    "specgram": {"run_dir", "seed", "epoch", "voc_idx", "rescale", "out", "dpi"},
    "losses": {"run", "seed", "out", "dpi"},
    "drives": {"run_dir", "seed", "epoch", "voc_idx", "out", "dpi"},
}


FLAGS = cli.flag_set()
flags.DEFINE_string("run_dir", None, "specgram, drives: the run's --out_dir.", flag_values=FLAGS)
flags.DEFINE_multi_string("run", [], "losses: label:run_dir, repeated once per run to overlay.", flag_values=FLAGS)
flags.DEFINE_integer("seed", None, "The seed (default: the run's selected seed; losses: 0).", flag_values=FLAGS)
flags.DEFINE_integer("epoch", None, "specgram, drives: the checkpoint, in completed epochs (default: newest).",
                     flag_values=FLAGS)
flags.DEFINE_integer("voc_idx", None, "specgram (default 0), drives (required): the validation vocalisation.",
                     flag_values=FLAGS)
flags.DEFINE_bool("rescale", False, "specgram: draw the rescaled deployed generation, not the raw output.",
                  flag_values=FLAGS)
flags.DEFINE_string("out", None, "The PNG (default: in the run directory; losses: losses.png here).", flag_values=FLAGS)
flags.DEFINE_integer("dpi", DPI, "Resolution of the PNG.", flag_values=FLAGS)


@report_input_errors
def main(argv):
    if len(argv) != 2 or argv[1] not in _COMMAND_FLAGS:
        raise InputError(f"expected one command, {' | '.join(_COMMAND_FLAGS)}, then --flags; got {argv[1:]}")
    command = argv[1]
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    f = FLAGS
    for name in sorted(set().union(*_COMMAND_FLAGS.values()) - _COMMAND_FLAGS[command]):
        if f[name].present:
            raise InputError(f"--{name} is not a flag of {command}; its flags: "
                             + ", ".join(f"--{n}" for n in sorted(_COMMAND_FLAGS[command])))
    if command in ("specgram", "drives") and not f.run_dir:
        raise InputError("--run_dir is required: the --out_dir of a training run")
    if command == "specgram":
        specgram(f.run_dir, f.seed, f.epoch, 0 if f.voc_idx is None else f.voc_idx, f.rescale, f.out, f.dpi)
    elif command == "losses":
        losses(f.run, 0 if f.seed is None else f.seed, f.out or "losses.png", f.dpi)
    else:
        if f.voc_idx is None:
            raise InputError("--voc_idx is required: the validation vocalisation whose drives to draw")
        drives(f.run_dir, f.voc_idx, f.seed, f.epoch, f.out, f.dpi)


if __name__ == "__main__":
    cli.run(main, FLAGS)
