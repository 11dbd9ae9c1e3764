"""Writes syllable annotations (`<stem>.txt`) for every recording of a folder, from amplitude.

    python -m ouroboros_jax.segment --audio_dir=my_bird/
    python -m ouroboros_jax.segment --audio_dir=my_bird/ --cluster=auto      # and a type per syllable

finds the syllables of each .wav/.flac file in --audio_dir (see ouroboros_jax/data/segmenter.py
and docs/data.md for the method and how to tune it) and writes one annotation file per
recording in --out_dir (default: beside the recordings, where training looks for them). With
--cluster, every syllable gets a type (ouroboros_jax/data/syllable_types.py) and the types are
summarised in --out_dir (ouroboros_jax/data/segmentation.py). All files are segmented before any is
written, and each is written to a temporary name and renamed, so a failure never leaves
partial annotations behind.
"""

import pathlib

import numpy as np
from absl import flags, logging

from ouroboros_jax import cli
from ouroboros_jax.data.segmentation import TYPES_CSV, TYPES_PNG, segment_directory
from ouroboros_jax.data.segmenter import SegmenterConfig
from ouroboros_jax.data.syllable_labels import (
    describe_counts,
    label_counts,
    parse_syllables,
)
from ouroboros_jax.errors import InputError, report_input_errors

FLAGS = cli.flag_set()
_AUDIO_DIR = flags.DEFINE_string(
    "audio_dir", None, "Folder of .wav/.flac recordings to segment.", required=True, flag_values=FLAGS)
_OUT_DIR = flags.DEFINE_string(
    "out_dir",
    None,
    "Folder for the <stem>.txt annotations; default --audio_dir, where training expects them.", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace annotation files that already exist.", flag_values=FLAGS)
_CHANNEL = flags.DEFINE_integer(
    "channel", None, "Channel to use in multi-channel files (0-based); without it they are an error.",
                                flag_values=FLAGS)
_CLUSTER = flags.DEFINE_string(
    "cluster", None, "Give every syllable a type by clustering: the number of types, or auto (chosen by "
    "silhouette score); the labels go into the third column.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the clustering; the same seed gives the same types.",
                             flag_values=FLAGS)
_SYLLABLES = flags.DEFINE_string(
    "syllables", "", "With --cluster: write only the syllables of these types (comma-separated); empty: all.",
                                 flag_values=FLAGS)
cli.define_settings(SegmenterConfig, FLAGS)


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS)
    config = cli.from_flags(SegmenterConfig, FLAGS)
    audio_dir = pathlib.Path(_AUDIO_DIR.value).expanduser()
    out_dir = pathlib.Path(_OUT_DIR.value).expanduser() if _OUT_DIR.value else audio_dir
    syllables = parse_syllables(_SYLLABLES.value)
    if syllables and _CLUSTER.value is None:
        raise InputError(f"--syllables={_SYLLABLES.value}: the segmenter's syllables have no types; add --cluster=K "
                         "or --cluster=auto")
    result = segment_directory(audio_dir, out_dir, config, _CHANNEL.value, _OVERWRITE.value, _CLUSTER.value,
                               _SEED.value, syllables)
    silent = [t for t, s in zip(result.targets, result.syllables) if len(s) == 0]
    if silent:
        logging.warning(
            "%d of %d recordings have no syllable at these thresholds (empty annotation written), e.g. %s",
            len(silent),
            len(result.targets),
            silent[0].name,
        )
    durations_ms = np.concatenate([np.diff(s[k], axis=-1)[:, 0] for s, k in zip(result.syllables, result.kept)]) * 1e3
    which = f" of type {','.join(syllables)}" if syllables else ""
    median = f", median {np.median(durations_ms):.0f} ms" if durations_ms.size else ""
    print(f"wrote {len(result.targets)} annotation files to {out_dir}: {durations_ms.size} syllables{which}{median}")
    if result.types is not None:
        print(f"{result.types.n_types} syllable types (silhouette {result.types.silhouette:.2f}): "
              f"{describe_counts(label_counts(result.labels))}; medians and examples in {out_dir / TYPES_CSV} and "
              f"{out_dir / TYPES_PNG}")


if __name__ == "__main__":
    cli.run(main, FLAGS)
