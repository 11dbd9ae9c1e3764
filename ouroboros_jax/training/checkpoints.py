"""Orbax checkpoints of a run: all seeds' stacked states plus the run's bookkeeping.

A checkpoint's step is the number of completed epochs (docs/training.md), so resuming from step
e trains epoch e next and nothing twice. Saves are atomic (Orbax writes to a temporary directory
and renames it when complete) and only the newest `max_saved` are kept. Saves are synchronous:
a save that cannot be written (a full disk) raises `WriteError` in the caller and leaves the
checkpoints before it as they were; what it wrote is removed when the directory is opened next.
"""

import os
import pathlib
import re

import jax
import orbax.checkpoint as ocp

from ouroboros_jax.errors import HeldStderr, WriteError


def completed_epochs(directory: pathlib.Path) -> list[int]:
    """The epochs with a complete checkpoint in `directory`, ascending, without opening Orbax.

    Orbax writes a checkpoint under a temporary name and renames it to the bare epoch when complete.
    """
    directory = pathlib.Path(directory)
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def _to_saveable(tree):
    """Typed PRNG keys cannot be serialised: store their raw key data."""
    return jax.tree_util.tree_map(
        lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a, tree
    )


def _saveable_like(like):
    """The ShapeDtypeStruct `_to_saveable` makes of a leaf like `like`, keeping its sharding (where
    Orbax restores it to: a checkpoint saved on other devices is only read with one)."""
    sharding = getattr(like, "sharding", None)
    if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key):
        like = jax.eval_shape(jax.random.key_data, like)
    return jax.ShapeDtypeStruct(like.shape, like.dtype, sharding=sharding)


def _from_saveable(tree, like):
    return jax.tree_util.tree_map(
        lambda a, ref: jax.random.wrap_key_data(a) if jax.dtypes.issubdtype(ref.dtype, jax.dtypes.prng_key) else a,
        tree, like,
    )


def _write_failure(error: Exception) -> str | None:
    """The operating system's reason when `error` is a failed write, else None (a bug: let it propagate)."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    # TensorStore reports the OS error inside a ValueError: "... [os_error_code='28']".
    code = re.search(r"os_error_code='(\d+)'", str(error))
    return os.strerror(int(code.group(1))) if code else None


class Checkpoints:
    """The checkpoints of one run directory (`<out_dir>/checkpoints/<epochs completed>/`); a context manager."""

    def __init__(self, directory: pathlib.Path, max_saved: int):
        self._directory = directory.absolute()
        self._manager = ocp.CheckpointManager(self._directory, options=ocp.CheckpointManagerOptions(
            max_to_keep=max_saved, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True))

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def epochs(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, epoch: int, state, meta: dict) -> None:
        """Saves the pytree `state` and the JSON-able `meta` as the checkpoint of `epoch`.

        Raises:
          WriteError: it could not be written (its partial files go when the directory is opened next).
        """
        with HeldStderr() as stderr:
            try:
                self._manager.save(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_to_saveable(state)), meta=ocp.args.JsonSave(meta)))
                self._manager.wait_until_finished()
            except Exception as e:
                reason = _write_failure(e)
                if reason is None:
                    raise
                stderr.drop_for_good()
                raise WriteError.at(self._directory / str(epoch), reason) from None

    def meta(self, epoch: int) -> dict:
        return self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, epoch: int, like):
        """The state saved at `epoch`, shaped like the pytree `like` (arrays or ShapeDtypeStructs)."""
        abstract = jax.tree_util.tree_map(_saveable_like, like)
        restored = self._manager.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return _from_saveable(restored["state"], like)

    def close(self) -> None:
        self._manager.close()
