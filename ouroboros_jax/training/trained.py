"""A trained run read back from its directory, for synthesis, figures and conversion.

    run = load_run("runs/demo")                 # newest checkpoint
    model = run.model(run.selected_seed)        # an `Ouroboros` with that seed's parameters
"""

import dataclasses
import json
import pathlib

import jax
from flax import nnx

from ouroboros_jax.data import TrainingData, load_training_data
from ouroboros_jax.errors import InputError
from ouroboros_jax.model.ouroboros import Ouroboros
from ouroboros_jax.training.checkpoints import Checkpoints, DamagedCheckpoint, completed_epochs
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.records import read_checkpoint_meta
from ouroboros_jax.training.run_dir import MANIFEST, RUN_INFO, checkpoints_dir, read_run_info
from ouroboros_jax.training.setup import Setup
from ouroboros_jax.training.step import TrainState, scored_params


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """One checkpoint of a run: every seed it holds, and how the run integrates.

    Attributes:
      run_dir: the run directory.
      config: the run's settings.
      info: the content of run.json (batches_per_epoch, sample_rate, ...).
      epoch: completed epochs of the loaded checkpoint.
      seed_ids: seed ids of the checkpoint's stack, in stack order.
      setup: model config (with the data's sample rate), optimiser, rollout settings.
      states: the stacked `TrainState` of those seeds.
    """

    run_dir: pathlib.Path
    config: RunConfig
    info: dict
    epoch: int
    seed_ids: tuple[int, ...]
    setup: Setup
    states: TrainState

    @property
    def sample_rate(self) -> int:
        return int(self.info["sample_rate"])

    @property
    def selected_seed(self) -> int:
        """The seed the run selected (its manifest), else the first seed of the checkpoint."""
        manifest = self.run_dir / MANIFEST
        if manifest.exists():
            try:
                selected = json.loads(manifest.read_text()).get("selected_seed")
            except (OSError, ValueError, AttributeError):
                raise InputError(f"{manifest} is damaged (not the manifest a run writes); pass --seed= one of "
                                 f"{list(self.seed_ids)}") from None
            if selected in self.seed_ids:
                return selected
        return self.seed_ids[0]

    def data(self) -> TrainingData:
        """The run's data, read again as its run.json records them (files, splits, windows).

        Raises:
          InputError: the data are missing or refused now, naming the run.
        """
        try:
            return load_training_data(self.config.data, self.config.sampler, self.config.seed)
        except InputError as e:
            raise InputError(f"{e} (the data of the run {self.run_dir}, as recorded in its {RUN_INFO})") from e

    def model(self, seed_id: int) -> Ouroboros:
        """The `Ouroboros` of seed `seed_id` at this checkpoint."""
        if seed_id not in self.seed_ids:
            raise InputError(f"--seed={seed_id}: checkpoint {self.epoch} of {self.run_dir} holds seeds "
                             f"{list(self.seed_ids)}; a culled seed is in the checkpoint of its cull epoch (--epoch)")
        k = self.seed_ids.index(seed_id)
        params = jax.tree_util.tree_map(lambda a: a[k], scored_params(self.states))
        return nnx.merge(self.setup.program.graphdef, params)


def load_run(run_dir, epoch: int | None = None) -> TrainedRun:
    """Reads a run directory written by `python -m ouroboros_jax.train`.

    Args:
      run_dir: the run's `--out_dir`.
      epoch: which checkpoint (completed epochs); None for the newest.

    Raises:
      InputError: not a run directory (or a damaged run.json), no checkpoint yet, no checkpoint at
        `epoch`, or that checkpoint is damaged.
    """
    run_dir = pathlib.Path(run_dir)
    info = read_run_info(run_dir)
    config = RunConfig.from_record(info["config"], str(run_dir), info["n_epochs"])
    setup = Setup.build(config, info["sample_rate"], info["batches_per_epoch"])
    available = completed_epochs(checkpoints_dir(run_dir))  # read before Orbax, which would make the folder
    if not available:
        raise InputError(f"--run_dir={run_dir}: no checkpoint yet; wait for the first --save_freq epochs")
    epoch = available[-1] if epoch is None else epoch
    if epoch not in available:
        raise InputError(f"--epoch={epoch}: {run_dir} has checkpoints after epochs {available}")
    checkpoints = Checkpoints(checkpoints_dir(run_dir), config.max_saved)
    try:
        try:
            seed_ids, *_, n_stacked = read_checkpoint_meta(checkpoints.meta(epoch))
            seed_ids = tuple(seed_ids)
            states, _ = setup.restore(checkpoints, epoch, config, seed_ids, n_stacked)
        except DamagedCheckpoint as e:
            others = [other for other in available if other != epoch]
            raise InputError(f"{e}; " + (f"pass --epoch=E with E one of {others} to read another" if others else
                                         "the run has no other checkpoint")) from None
    finally:
        checkpoints.close()
    return TrainedRun(run_dir, config, info, epoch, seed_ids, setup, states)
