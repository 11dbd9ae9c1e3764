"""Reads the scalars a run logged to TensorBoard (`<out_dir>/seed<k>/events.out.tfevents.*`).

The files are TFRecords (8-byte length, 4-byte CRC, an `Event` protocol buffer, 4-byte CRC);
a record still being written by a live run is ignored. `loss_curves` gives a member's per-epoch
means, for `plot losses` and the run report.
"""

import pathlib
import struct

import numpy as np
from tensorboardX.proto import event_pb2

from ouroboros_jax.errors import InputError
from ouroboros_jax.figures import epoch_means
from ouroboros_jax.training.run_dir import member_folder, read_run_info


def read_events(seed_dir):
    """Every complete `Event` in a seed's event files, in file and write order."""
    for path in sorted(pathlib.Path(seed_dir).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            end = offset + 12 + length
            if end + 4 > len(data):
                break  # a partly written record
            yield event_pb2.Event.FromString(data[offset + 12 : end])
            offset = end + 4


def read_scalars(seed_dir) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag -> (steps, values) of every scalar in a seed's event files, in file and write order."""
    steps: dict[str, list[int]] = {}
    values: dict[str, list[float]] = {}
    for event in read_events(seed_dir):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                steps.setdefault(value.tag, []).append(event.step)
                values.setdefault(value.tag, []).append(value.simple_value)
    return {tag: (np.asarray(steps[tag]), np.asarray(values[tag])) for tag in steps}


def loss_curves(run_dir, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-epoch means of a seed's TensorBoard scalars (`figures.epoch_means`).

    Epochs come from the `batches_per_epoch` the run recorded in run.json, never assumed.

    Returns:
      tag -> (epochs (E,), means (E,)).

    Raises:
      InputError: not a run (named as `--run`), a seed not of the run, or one without scalars.
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
