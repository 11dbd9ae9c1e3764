"""Annotations in the formats of the field's tools, read through crowsetta.

Our own format (`ours`, `<stem>.txt`, ouroboros_jax/data/annotations.py) is read by our own
parser; every other format is read by crowsetta (https://github.com/vocalpy/crowsetta), the
maintained library for exactly this, and reduced to what training needs: per recording, the
onset and offset of each syllable in seconds and its label. Where a tool keeps the annotations
of a recording `<stem>.wav`:

| format | file |
|---|---|
| ours | `<stem>.txt` (onset offset [label]) |
| aud-seq, aud-bbox | `<stem>.txt` (Audacity label track, exported) |
| notmat | `<stem>.wav.not.mat` (evsonganaly: the audio file's name + `.not.mat`) |
| raven | `<stem>.Table.1.selections.txt` (Raven selection table; labels in its `Annotation` column) |
| textgrid | `<stem>.TextGrid` (Praat; one interval tier, empty intervals are gaps) |
| simple-seq | `<stem>.csv` (columns onset_s, offset_s, label) |
| timit | `<stem>.phn` (begin and end sample, label) |
| generic-seq | one `.csv` for the whole folder (vak/crowsetta), rows matched by audio file name |
| birdsong-recognition-dataset | one `.xml` for the whole folder (Koumura's `Annotation.xml`), matched by name |

The files are looked for in the annotation directory (default: beside the recordings); for the
two one-file formats it may also name the file itself. Every syllable is checked as in our own
format (onset before offset, inside the recording); any problem is one line naming the file.
`convert_directory` (`python -m ouroboros_jax.convert_annotations`) writes them as our files.
"""

import dataclasses
import pathlib
import warnings

import numpy as np
import soundfile as sf

from ouroboros_jax.data.annotations import check_syllable, read_labelled_annotations, sorted_by_onset, write_annotations
from ouroboros_jax.data.audio import list_audio_files
from ouroboros_jax.errors import InputError

OURS = "ours"
# Per-recording file names ({stem}: the audio file's stem, {name}: its full name).
_PER_RECORDING = {
    OURS: "{stem}.txt",
    "aud-bbox": "{stem}.txt",
    "aud-seq": "{stem}.txt",
    "notmat": "{name}.not.mat",
    "raven": "{stem}.Table.1.selections.txt",
    "simple-seq": "{stem}.csv",
    "textgrid": "{stem}.TextGrid",
    "timit": "{stem}.phn",
}
# One file for all recordings, found in the annotation directory by its suffix.
_ONE_FILE = {"birdsong-recognition-dataset": ".xml", "generic-seq": ".csv"}
ANNOTATION_FORMATS = tuple(sorted({*_PER_RECORDING, *_ONE_FILE}, key=lambda f: (f != OURS, f)))


def check_format(name: str) -> str:
    """`name` if it is one of `ANNOTATION_FORMATS`.

    Raises:
      InputError: another name.
    """
    if name not in ANNOTATION_FORMATS:
        raise InputError(f"--annotation_format={name}: not a format we read; choose one of "
                         f"{', '.join(ANNOTATION_FORMATS)}")
    return name


def _crowsetta_annotations(format_name: str, path: pathlib.Path, audio_path: pathlib.Path) -> list:
    """The `crowsetta.Annotation`s of one file, times unrounded.

    Args:
      format_name: a crowsetta format.
      path: the annotation file.
      audio_path: the recording it annotates (per-recording formats) or one recording of the
        folder (one-file formats); formats that count in samples take the sample rate from it.
    """
    # crowsetta brings pandas and pandera (about a second to import); our own format needs neither.
    import crowsetta

    reader = crowsetta.formats.by_name(format_name)
    if format_name == "birdsong-recognition-dataset":
        # Koumura's positions are in samples: crowsetta converts them with each WAV's own rate.
        return reader.from_file(path, wav_path=audio_path.parent).to_annot(round_times=False)
    if format_name == "timit":
        return [reader.from_file(path, audio_path=audio_path).to_annot(round_times=False)]
    if format_name == "textgrid":
        annotation = reader.from_file(path).to_annot(round_times=False)
        if isinstance(annotation.seq, list):  # reported, like crowsetta's own errors, as a problem of the file
            raise ValueError(f"it has {len(annotation.seq)} interval tiers; keep only the tier of the syllables")
        return [annotation]
    if format_name in ("aud-bbox", "raven", "generic-seq"):
        annotations = reader.from_file(path).to_annot()
        return annotations if isinstance(annotations, list) else [annotations]
    return [reader.from_file(path).to_annot(round_times=False)]


def _rows(annotation) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(onsets (K,), offsets (K,) seconds, K labels) of a `crowsetta.Annotation`, sequence or boxes."""
    if hasattr(annotation, "seq"):  # a crowsetta.Annotation has either .seq or .bboxes
        seq = annotation.seq
        return np.asarray(seq.onsets_s, float), np.asarray(seq.offsets_s, float), [str(v) for v in seq.labels]
    boxes = annotation.bboxes
    return (np.array([b.onset for b in boxes], float), np.array([b.offset for b in boxes], float),
            [str(b.label) for b in boxes])


@dataclasses.dataclass(frozen=True)
class AnnotationSource:
    """The format of a data directory's annotations and where they are.

    Attributes:
      format: one of `ANNOTATION_FORMATS`.
      directory: the folder of the annotation files (for a one-file format, the file may be
        named); None: beside the recordings.
    """

    format: str = OURS
    directory: pathlib.Path | None = None
    # One-file formats are parsed once: file -> {audio file name: [annotations]}.
    _parsed: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        check_format(self.format)
        if self.directory is not None:
            object.__setattr__(self, "directory", pathlib.Path(self.directory).expanduser())
            if not self.directory.exists():
                raise InputError(f"--annotation_dir={self.directory}: no such directory or file")

    def path_for(self, audio_path: pathlib.Path) -> pathlib.Path:
        """The file that holds the annotations of `audio_path`.

        Raises:
          InputError: it does not exist (or, for a one-file format, none or several candidates).
        """
        folder = self.directory if self.directory is not None else audio_path.parent
        if self.format in _ONE_FILE:
            if folder.is_file():
                return folder
            suffix = _ONE_FILE[self.format]
            found = sorted(p for p in folder.iterdir() if p.suffix.lower() == suffix and not p.name.startswith("."))
            if len(found) != 1:
                raise InputError(
                    f"--annotation_format={self.format}: expected one {suffix} file in {folder}, found {len(found)}; "
                    "name the file with --annotation_dir=FILE"
                )
            return found[0]
        path = folder / _PER_RECORDING[self.format].format(stem=audio_path.stem, name=audio_path.name)
        if not path.is_file():
            if self.format == OURS and self.directory is None:
                raise InputError(
                    f"{audio_path}: no annotation file {path.name} beside it; write one, or make them all with "
                    f"python -m ouroboros_jax.segment --audio_dir={audio_path.parent}"
                )
            where = f"in --annotation_dir={self.directory}" if self.directory is not None else "beside it"
            raise InputError(f"{audio_path}: no {self.format} annotation file {path.name} {where}")
        return path

    def describe(self, audio_path: pathlib.Path) -> str:
        """The annotation file of `audio_path` for messages; for a one-file format with the recording's name."""
        path = self.path_for(audio_path)
        return f"{path} ({audio_path.name})" if self.format in _ONE_FILE else str(path)

    def read(self, audio_path: pathlib.Path, duration_s: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """The syllables of one recording and their labels.

        Args:
          audio_path: the recording.
          duration_s: its length in seconds; every syllable must lie inside it.
          sample_rate: its sample rate (an offset one sample past the end is rounding).

        Returns:
          (syllables, labels): (K, 2) float64 onset/offset seconds sorted by onset, (K,) str.

        Raises:
          InputError: a missing or unreadable file, a recording a one-file format does not
            list, or a syllable that is not one (onset not before offset, outside the recording).
        """
        audio_path = pathlib.Path(audio_path)
        path = self.path_for(audio_path)
        if self.format == OURS:
            return read_labelled_annotations(path, duration_s, sample_rate)
        if self.format in _ONE_FILE:
            by_name = self._parsed.get(path)
            if by_name is None:
                by_name = {}
                for annotation in self._annotations(path, audio_path):
                    by_name.setdefault(pathlib.Path(annotation.notated_path).name, []).append(annotation)
                self._parsed[path] = by_name
            if audio_path.name not in by_name:
                raise InputError(f"{audio_path}: {path} lists no annotations for {audio_path.name}")
            annotations, where = by_name[audio_path.name], f"{path} ({audio_path.name})"
        else:
            annotations, where = self._annotations(path, audio_path), str(path)
        rows, labels = [], []
        for annotation in annotations:
            onsets, offsets, names = _rows(annotation)
            for onset, offset, label in zip(onsets, offsets, names):
                check_syllable(f"{where} syllable {len(rows) + 1}", onset, offset, duration_s, sample_rate,
                               f"{onset} {offset} {label}")
                rows.append((onset, offset))
                labels.append(label)
        return sorted_by_onset(rows, labels)

    def _annotations(self, path: pathlib.Path, audio_path: pathlib.Path) -> list:
        try:
            with warnings.catch_warnings():
                # crowsetta's use of pandas raises deprecation warnings that are no concern of the user's,
                # and a BirdsongRecognition XML that covers a whole data set warns for each WAV not in this
                # folder (whose rows are unused here).
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", UserWarning)
                return _crowsetta_annotations(self.format, path, audio_path)
        except Exception as e:  # crowsetta, pandas, pandera, scipy and the XML parser each raise their own
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise InputError(f"{path}: cannot read it as {self.format} annotations ({reason}); check the file "
                             "and --annotation_format") from e


def recording_length(path: pathlib.Path) -> tuple[float, int]:
    """(duration in seconds, sample rate) of a recording, from its header.

    Raises:
      InputError: not a readable audio file.
    """
    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise InputError(f"{path}: cannot read audio ({e}); check that it is a valid WAV or FLAC file") from e
    return info.frames / info.samplerate, int(info.samplerate)


def convert_directory(
    audio_dir: pathlib.Path, source: AnnotationSource, out_dir: pathlib.Path, overwrite: bool = False
) -> list[tuple[pathlib.Path, np.ndarray, np.ndarray]]:
    """Writes our `<out_dir>/<stem>.txt` (onset, offset, label) for every recording of `audio_dir`.

    Every file is read and checked before any is written.

    Returns:
      (annotation file written, syllables (K, 2) seconds, labels (K,)) per recording, in name order.

    Raises:
      InputError: our own format as the source, a recording without annotations, a bad
        annotation file, a label with whitespace (ours are single tokens), or existing `.txt`
        files without `overwrite`.
    """
    if source.format == OURS:
        raise InputError("--annotation_format=ours: these are our files already; pass the format they are in")
    recordings = list_audio_files(audio_dir, "--audio_dir")
    targets = [out_dir / f"{p.stem}.txt" for p in recordings]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise InputError(f"--out_dir={out_dir}: {len(existing)} annotation file(s) already exist, e.g. "
                         f"{existing[0].name}; pass --overwrite to replace them")
    results = []
    for path, target in zip(recordings, targets):
        syllables, labels = source.read(path, *recording_length(path))
        spaced = [str(label) for label in labels if any(c.isspace() for c in label)]
        if spaced:
            raise InputError(f"{source.path_for(path)}: the label {spaced[0]!r} has whitespace, but a label in "
                             f"{target.name} is one token; rename it (e.g. {'_'.join(spaced[0].split())!r})")
        results.append((target, syllables, labels))
    out_dir.mkdir(parents=True, exist_ok=True)
    for target, syllables, labels in results:
        write_annotations(target, syllables, labels)
    return results
