"""Orbax checkpoints of a run: all seeds' stacked states plus the run's bookkeeping.

A checkpoint's step is the number of completed epochs (docs/training.md), so resuming from step
e trains epoch e next and nothing twice. Saves are atomic (Orbax writes to a temporary directory
and renames it when complete) and only the newest `max_saved` are kept. Saves are synchronous:
a save that cannot be written (a full disk) raises `WriteError` in the caller and leaves the
checkpoints before it as they were; what it wrote is removed when the directory is opened next.
A checkpoint whose files cannot be read back (truncated, deleted, not JSON) raises
`DamagedCheckpoint`, naming it; `set_aside` renames it `<epoch>.damaged`, out of the run's way.
"""

import os
import pathlib
import re
import shutil
import sys

import jax
import orbax.checkpoint as ocp

from ouroboros_jax.errors import HeldStderr, InputError, WriteError


class DamagedCheckpoint(InputError):
    """A checkpoint's files cannot be read back: `path` and `reason` (the first line of the failure)."""

    def __init__(self, path: pathlib.Path, reason: str):
        super().__init__(f"the checkpoint {path} is damaged ({reason})")
        self.path, self.reason = path, reason


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


def _is_abandoned_read(unraisable) -> bool:
    return isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"


def _silence_abandoned_reads() -> None:
    """After a failed restore, TensorStore's threads still complete the reads Orbax abandoned, into
    its closed event loop, each reported as an unraisable RuntimeError with a traceback, seconds
    later: those (and only those) are dropped from then on."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_abandoned_reads", False):
        return

    def hook(unraisable):
        if not _is_abandoned_read(unraisable):
            previous(unraisable)

    hook.drops_abandoned_reads = True
    sys.unraisablehook = hook


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
        """The bookkeeping saved at `epoch`.

        Raises:
          DamagedCheckpoint: its files cannot be read back.
        """
        meta = self._read(epoch, meta=ocp.args.JsonRestore())["meta"]
        if not isinstance(meta, dict):
            raise DamagedCheckpoint(self._directory / str(epoch), "its meta is not a JSON object")
        return meta

    def restore(self, epoch: int, like):
        """The state saved at `epoch`, shaped like the pytree `like` (arrays or ShapeDtypeStructs).

        Raises:
          DamagedCheckpoint: its files cannot be read back.
        """
        abstract = jax.tree_util.tree_map(_saveable_like, like)
        return _from_saveable(self._read(epoch, state=ocp.args.StandardRestore(abstract))["state"], like)

    def _read(self, epoch: int, **items):
        # Orbax reports a truncated array file as a ValueError from TensorStore, cut-short JSON as a
        # JSONDecodeError (a ValueError), missing files as FileNotFoundError or a KeyError naming the
        # item; a checkpoint of a layout not ours (another tool's folder) as a KeyError too.
        with HeldStderr() as stderr:
            try:
                return self._manager.restore(epoch, args=ocp.args.Composite(**items))
            except (OSError, ValueError, KeyError) as e:
                stderr.discard()
                _silence_abandoned_reads()
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise DamagedCheckpoint(self._directory / str(epoch), reason[:200]) from None

    def set_aside(self, epoch: int) -> pathlib.Path:
        """Renames the checkpoint of `epoch` to `<epoch>.damaged` (kept for a look, never read again;
        a later one of that name is replaced) and returns the new path."""
        aside = self._directory / f"{epoch}.damaged"
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(self._directory / str(epoch), aside)
        self._manager.reload()
        return aside

    def close(self) -> None:
        self._manager.close()
