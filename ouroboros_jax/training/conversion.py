"""A model trained with the PyTorch reference, written as a run directory of ours (docs/cli.md).

The reference saves `checkpoint_<N>.tar`, a torch-pickled dict: `ouroboros` (the model's state
dict), the structure fields `tau`, `n_layers`, `d_state`, `d_conv`, `expand_factor`, `n_kernel`
(nTerms), `drive_lowpass_ms` and `keep_const` (the last two absent from old files and read as 0
and False, as the reference's loader does), and `opt`, `smooth_len`, `parameterization`, which
are not needed. The run written here holds that model as seed 0 in one checkpoint, so
`load_run`, `synthesize` and `plot` read it like a trained run. torch is needed only here, and
imported only here.
"""

import dataclasses
import math
import pathlib
import re

import jax
import numpy as np
from absl import logging
from flax import nnx

from ouroboros_jax.data import DataConfig, list_audio_files, resolve_data_dir
from ouroboros_jax.errors import InputError
from ouroboros_jax.model.ouroboros import ModelConfig, Ouroboros
from ouroboros_jax.model.reference_params import load_reference_params
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.training.checkpoints import Checkpoints
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.outputs import make_output_dir, write_json
from ouroboros_jax.training.records import run_info
from ouroboros_jax.training.run_dir import RUN_INFO, checkpoints_dir
from ouroboros_jax.training.run_state import Records, RunState, save_run
from ouroboros_jax.training.setup import Setup

_STRUCTURE = ("tau", "n_layers", "d_state", "d_conv", "expand_factor", "n_kernel")
_INSTALL_TORCH = 'reading a PyTorch checkpoint needs torch: pip install -e ".[bench]" (or pip install torch)'
# Recorded as the data directory when --data_dir is not given: reading it fails with this text.
NO_DATA_DIR = "<not recorded: re-run convert with --data_dir>"


@dataclasses.dataclass(frozen=True)
class ReferenceCheckpoint:
    """The parts of a reference checkpoint that make the model.

    Attributes:
      path: the file.
      epoch: the N of `checkpoint_<N>.tar`, 0 for another name.
      arrays: state-dict name -> array.
      tau: the model time constant in seconds.
      structure: n_layers, d_state, d_conv, expand_factor, n_kernel, drive_lowpass_ms, keep_const.
    """

    path: pathlib.Path
    epoch: int
    arrays: dict
    tau: float
    structure: dict


def read_reference_checkpoint(path) -> ReferenceCheckpoint:
    """Reads a PyTorch reference checkpoint (torch-pickled; only convert files you trust).

    Raises:
      InputError: no such file, torch not installed, not a torch checkpoint, or a field missing.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"--torch_checkpoint={path}: no such file")
    try:
        import torch
    except ImportError:
        raise InputError(_INSTALL_TORCH) from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    # Unpickling can fail in many ways (UnpicklingError, RuntimeError, EOFError, ...); all mean "not one".
    except Exception as e:  # noqa: BLE001
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise InputError(f"--torch_checkpoint={path}: cannot read it as a PyTorch checkpoint ({reason})") from e
    missing = [k for k in ("ouroboros", *_STRUCTURE) if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise InputError(f"--torch_checkpoint={path}: not a reference Ouroboros checkpoint (no {missing[0]!r}); pass a "
                         "checkpoint_<N>.tar written by the reference's training")
    arrays = {name: value.detach().cpu().numpy() for name, value in checkpoint["ouroboros"].items()}
    structure = {k: int(checkpoint[k]) for k in _STRUCTURE[1:]}
    structure.update(drive_lowpass_ms=float(checkpoint.get("drive_lowpass_ms", 0.0)),
                     keep_const=bool(checkpoint.get("keep_const", False)))
    match = re.fullmatch(r"checkpoint_(\d+)\.tar", path.name)
    return ReferenceCheckpoint(path, int(match.group(1)) if match else 0, arrays, float(checkpoint["tau"]), structure)


def _sample_rate(reference: ReferenceCheckpoint, sample_rate: int | None) -> int:
    """The data's sample rate: as given, else 1 / tau (the reference's entry point sets tau = dt)."""
    if sample_rate is not None:
        if sample_rate <= 0:
            raise InputError(f"--sample_rate={sample_rate}: must be positive")
        return sample_rate
    rate = 1.0 / reference.tau
    if not math.isclose(rate, round(rate), rel_tol=1e-6):
        raise InputError(f"--torch_checkpoint={reference.path}: tau = {reference.tau:g} s is not one sample at any "
                         "sample rate; pass --sample_rate (that of the data it was trained on)")
    return int(round(rate))


def convert_reference_checkpoint(path, out_dir, sample_rate: int | None = None, data_dir: str | None = None,
                                 clamp_stages: bool = False) -> RunConfig:
    """Writes the reference model of `path` as a run directory `out_dir` (seed 0, one checkpoint).

    The checkpoint is named by the reference's N (its epoch). Adam starts afresh: the
    reference's optimiser state is not converted.

    Args:
      path: the reference's `checkpoint_<N>.tar`.
      out_dir: the run directory to write; it must not hold a run yet.
      sample_rate: of the data the model was trained on; None: 1 / tau.
      data_dir: that data (recorded for `plot`, which rebuilds the validation vocalisations);
        None records a placeholder that tells to pass it.
      clamp_stages: bound the kernel's input inside the RK4 stages; off (default) is the
        integrator the reference trained the model with.

    Returns:
      The run's config, as recorded in run.json.

    Raises:
      InputError: see `read_reference_checkpoint`; also an `out_dir` that holds a run, a
        `data_dir` without recordings, a model whose parameters do not fit its structure fields.
    """
    out_dir = pathlib.Path(out_dir)
    if (out_dir / RUN_INFO).exists() or checkpoints_dir(out_dir).exists():
        raise InputError(f"--out_dir={out_dir}: already holds a run; choose a new directory")
    if data_dir is not None:
        list_audio_files(resolve_data_dir(data_dir), "--data_dir")
    reference = read_reference_checkpoint(path)
    sample_rate = _sample_rate(reference, sample_rate)
    # tau = dt is our default (None); another tau is kept, so the drives' features are the reference's.
    tau = None if math.isclose(reference.tau * sample_rate, 1.0, rel_tol=1e-6) else reference.tau
    if tau is not None:
        logging.warning("tau = %g s is not one sample at %d Hz: the reference integrated with one step per sample "
                        "(docs/method.md, \"The ODE and the rollout\"), this run with dt / tau, so their rollouts "
                        "differ", tau, sample_rate)
    s = reference.structure
    model = ModelConfig(n_kernels=s["n_kernel"], n_layers=s["n_layers"], d_state=s["d_state"], d_conv=s["d_conv"],
                        expand_factor=s["expand_factor"], drive_lowpass_ms=s["drive_lowpass_ms"],
                        keep_const=s["keep_const"], sample_rate=float(sample_rate), tau=tau)
    config = RunConfig(data=DataConfig(data_dir=NO_DATA_DIR if data_dir is None else data_dir), model=model,
                       out_dir=str(out_dir), n_epochs=max(1, reference.epoch), n_seeds=1,
                       rollout=RolloutConfig(clamp_stages=clamp_stages))
    # The number of training batches is unknown (the model trained elsewhere); the constant learning rate needs none.
    setup = Setup.build(config, sample_rate, None)
    # A model of the right shape to load into, without initialising one (that compiles every
    # operation apart, seconds on CPU); the reference's arrays overwrite every parameter.
    shapes = nnx.state(nnx.eval_shape(lambda: Ouroboros(setup.model, rngs=nnx.Rngs(0))))
    ouroboros = nnx.merge(setup.program.graphdef, jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), shapes))
    load_reference_params(ouroboros, reference.arrays, str(reference.path))
    state = RunState(*setup.place(*setup.init(config, [0], nnx.state(ouroboros))), (0,), Records(), reference.epoch)

    make_output_dir(out_dir, "--out_dir")
    checkpoints = Checkpoints(checkpoints_dir(out_dir), config.max_saved)
    try:
        save_run(checkpoints, config, state)
    finally:
        checkpoints.close()
    # run.json last: without it the directory is not a run, so an interrupted conversion is never read as one.
    write_json(out_dir / RUN_INFO, run_info(
        config, setup.kernels, sample_rate, None, None,
        converted_from={"torch_checkpoint": str(reference.path.absolute()), "epoch": reference.epoch,
                        "tau": reference.tau, **reference.structure},
    ))
    return config
