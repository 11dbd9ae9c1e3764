"""Orbax checkpoints of a run: all seeds' stacked states plus the run's bookkeeping.

A checkpoint's step is the number of completed epochs (DESIGN decision 2), so resuming from step
e trains epoch e next and nothing twice. Saves are atomic (Orbax writes to a temporary directory
and renames it when complete) and only the newest `max_saved` are kept.
"""

import pathlib

import jax
import orbax.checkpoint as ocp


def _to_saveable(tree):
    """Typed PRNG keys cannot be serialised: store their raw key data."""
    return jax.tree_util.tree_map(
        lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a, tree
    )


def _from_saveable(tree, like):
    return jax.tree_util.tree_map(
        lambda a, ref: jax.random.wrap_key_data(a) if jax.dtypes.issubdtype(ref.dtype, jax.dtypes.prng_key) else a,
        tree, like,
    )


class Checkpoints:
    """The checkpoints of one run directory (`<out_dir>/checkpoints/<epochs completed>/`)."""

    def __init__(self, directory: pathlib.Path, max_saved: int):
        self._manager = ocp.CheckpointManager(
            directory.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=max_saved, create=True)
        )

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def epochs(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state, meta: dict) -> None:
        """Saves the pytree `state` and the JSON-able `meta` as the checkpoint of `epoch`."""
        self._manager.save(
            epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(_to_saveable(state)), meta=ocp.args.JsonSave(meta))
        )
        self._manager.wait_until_finished()

    def meta(self, epoch: int) -> dict:
        return self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, epoch: int, like):
        """The state saved at `epoch`, shaped like the pytree `like` (arrays or ShapeDtypeStructs)."""
        abstract = jax.eval_shape(_to_saveable, like)
        restored = self._manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return _from_saveable(restored["state"], like)

    def close(self) -> None:
        self._manager.close()
