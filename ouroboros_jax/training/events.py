"""Reads the scalars a run logged to TensorBoard (`<out_dir>/seed<k>/events.out.tfevents.*`).

The files are TFRecords (8-byte length, 4-byte CRC, an `Event` protocol buffer, 4-byte CRC);
a record still being written by a live run is ignored.
"""

import pathlib
import struct

import numpy as np
from tensorboardX.proto import event_pb2


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
