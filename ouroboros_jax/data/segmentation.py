"""Annotating a folder of recordings: syllables from amplitude, optionally typed by clustering.

`python -m ouroboros_jax.segment` is the command line; this module holds its work so that it can
be called (by scripts/make_example_data.py, by tests) without flags. Every recording is
segmented (ouroboros_jax/data/segmenter.py), every syllable optionally given a type
(ouroboros_jax/data/syllable_types.py), and only then is anything written: one `<stem>.txt` per
recording (onset, offset and, with types, the label), and with types a summary of them,
`syllable_types.csv` (label, count, median duration) and `syllable_types.png` (example
spectrograms of each type).
"""

import dataclasses
import pathlib

import numpy as np

from ouroboros_jax.data.annotations import write_annotations
from ouroboros_jax.data.audio import list_audio_files, read_audio
from ouroboros_jax.data.segmenter import SegmenterConfig, find_syllables
from ouroboros_jax.data.syllable_labels import check_syllables_occur, chosen, label_counts
from ouroboros_jax.data.syllable_types import SyllableTypes, cluster_syllables, parse_cluster, syllable_features
from ouroboros_jax.errors import InputError, WriteError
from ouroboros_jax.training.figures import syllable_types_figure
from ouroboros_jax.training.outputs import make_output_dir, write_png, write_table

TYPES_CSV, TYPES_PNG = "syllable_types.csv", "syllable_types.png"
TYPES_COLUMNS = ("label", "count", "median_duration_ms")
N_EXAMPLES = 6  # example spectrograms per type in the figure
TYPES_DPI = 80


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """What `segment_directory` found and wrote.

    Attributes:
      out_dir: where the annotations (and the summary of the types) went.
      targets: the annotation file written for each recording, in name order.
      syllables: per recording, (K_i, 2) onset/offset seconds of every syllable found.
      labels: per recording, (K_i,) str types ("" without clustering).
      kept: per recording, (K_i,) bool: the syllables written (those of the chosen types).
      types: the clustering; None without it.
    """

    out_dir: pathlib.Path
    targets: list[pathlib.Path]
    syllables: list[np.ndarray]
    labels: list[np.ndarray]
    kept: list[np.ndarray]
    types: SyllableTypes | None

    def summary(self) -> list[tuple[str, int, float]]:
        """(label, count, median duration in ms) of every type, by label (one row "" without types)."""
        durations_ms = np.concatenate([np.diff(s, axis=-1)[:, 0] for s in self.syllables]) * 1e3
        labels = np.concatenate(self.labels)
        return [(label, int(np.sum(labels == label)), float(np.median(durations_ms[labels == label])))
                for label in sorted(set(labels))]


def _cut(x: np.ndarray, sample_rate: int, syllables: np.ndarray) -> list[np.ndarray]:
    """The samples of each syllable of `syllables` (K, 2) seconds in recording x (T,), onset to offset."""
    return [x[round(on * sample_rate) : round(off * sample_rate)] for on, off in syllables]


def _check_outputs(out_dir: pathlib.Path, outputs: list[pathlib.Path], overwrite: bool) -> None:
    """Refuses an `out_dir` that is a file, and outputs that exist unless `overwrite` (`InputError`)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out_dir={out_dir}: is a file, not a folder; pass the folder for the .txt annotations")
    existing = [t for t in outputs if t.exists()]
    if existing and not overwrite:
        raise InputError(
            f"--out_dir={out_dir}: {len(existing)} annotation file(s) already exist, "
            f"e.g. {existing[0].name}; pass --overwrite to replace them"
        )


def segment_directory(
    audio_dir: pathlib.Path,
    out_dir: pathlib.Path,
    config: SegmenterConfig,
    channel: int | None = None,
    overwrite: bool = False,
    cluster: str | None = None,
    seed: int = 0,
    syllables: tuple[str, ...] = (),
) -> Segmentation:
    """Segments every recording of `audio_dir` and writes `<out_dir>/<stem>.txt` for each.

    Args:
      audio_dir: the recordings.
      out_dir: where the annotations go (created).
      config: the segmenter's settings; its band is also the band of the types' features.
      channel: of multi-channel recordings.
      overwrite: replace existing outputs.
      cluster: "K" or "auto": give every syllable a type, written as the third column, and
        write the summary of the types; None: unlabelled annotations.
      seed: of the clustering.
      syllables: write only the syllables of these types (all if empty).

    Raises:
      InputError: no recordings, an unreadable one, existing outputs without `overwrite`, a bad
        `cluster`, too few syllables to cluster, a chosen type that does not occur, or an
        `out_dir` that is a file. Nothing is written then.
      WriteError: an annotation file could not be written.
    """
    n_types = parse_cluster(cluster) if cluster is not None else None
    recordings = list_audio_files(audio_dir, "--audio_dir")
    targets = [out_dir / f"{p.stem}.txt" for p in recordings]
    _check_outputs(out_dir, targets + ([out_dir / TYPES_CSV, out_dir / TYPES_PNG] if cluster is not None else []),
                   overwrite)
    found, shapes, log_durations = [], [], []
    for path in recordings:
        x, sample_rate = read_audio(path, channel)
        found.append(find_syllables(x, sample_rate, config))
        if cluster is not None and len(found[-1]):
            shape, log_duration = syllable_features(_cut(x, sample_rate, found[-1]), sample_rate,
                                                    config.min_freq_hz, config.max_freq_hz)
            shapes.append(shape)
            log_durations.append(log_duration)
    labels = [np.full(len(f), "", dtype=np.str_) for f in found]
    types = figure = None
    if cluster is not None:
        if not shapes:
            raise InputError(f"--cluster={cluster}: no syllable was found in --audio_dir={audio_dir} to cluster")
        types = cluster_syllables(np.concatenate(shapes), np.concatenate(log_durations), n_types, seed)
        labels = np.split(types.labels, np.cumsum([len(f) for f in found])[:-1])
    check_syllables_occur(syllables, label_counts(labels), f"--audio_dir={audio_dir}")
    result = Segmentation(out_dir, targets, found, labels, [chosen(lab, syllables) for lab in labels], types)
    if types is not None:
        figure = _types_figure(recordings, result, channel, config.max_freq_hz)
    make_output_dir(out_dir, "--out_dir")
    for target, rows, lab, keep in zip(targets, found, labels, result.kept):
        try:
            write_annotations(target, rows[keep], lab[keep])
        except OSError as e:
            raise WriteError.at(target, e.strerror or str(e)) from None
    if types is not None:
        write_table(out_dir / TYPES_CSV, TYPES_COLUMNS, result.summary())
        write_png(out_dir / TYPES_PNG, figure, TYPES_DPI)
    return result


def _types_figure(recordings: list[pathlib.Path], result: Segmentation, channel, max_freq_hz: float):
    """Example spectrograms of each type: its `N_EXAMPLES` syllables nearest the cluster centre."""
    # Syllable k of the clustering is row `row[k]` of recording `owner[k]`.
    owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(result.syllables)])
    row = np.concatenate([np.arange(len(s)) for s in result.syllables])
    audio, rows = {}, []
    medians = {label: median for label, _, median in result.summary()}
    for label, members in result.types.typical.items():
        examples = []
        for k in members[:N_EXAMPLES]:
            if owner[k] not in audio:  # only the recordings that hold examples are read again
                audio[owner[k]] = read_audio(recordings[owner[k]], channel)
            x, sample_rate = audio[owner[k]]
            examples.extend(_cut(x, sample_rate, result.syllables[owner[k]][row[k] : row[k] + 1]))
        rows.append((f"{label}: {len(members)} syllables, median {medians[label]:.0f} ms", examples))
    return syllable_types_figure(rows, sample_rate, max_freq_hz,
                                 title=f"{result.types.n_types} syllable types (silhouette "
                                 f"{result.types.silhouette:.2f}): the examples nearest each type's centre")
