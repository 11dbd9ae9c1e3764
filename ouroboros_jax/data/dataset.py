"""From a data directory to everything training needs (docs/data.md).

`load_training_data` lists the recordings, holds out whole files for validation and test, draws
the edge-biased windows from the training files (all of them train: no window-level holdout),
adds their derivative features, and cuts the cold-start vocalisations of the held-out files.
"""

import dataclasses

import numpy as np
from absl import logging

from ouroboros_jax.data.annotation_formats import (
    ANNOTATION_FORMATS,
    OURS,
    AnnotationSource,
    check_format,
)
from ouroboros_jax.data.audio import list_audio_files
from ouroboros_jax.data.checks import SILENCE, check_overlapping_types, check_recordings
from ouroboros_jax.data.example_data import resolve_data_dir
from ouroboros_jax.data.recordings import Recording, load_recordings
from ouroboros_jax.data.sampler import SamplerConfig, WindowSizes, sample_segments
from ouroboros_jax.data.splits import FileSplit, file_level_split
from ouroboros_jax.data.syllable_labels import (
    check_syllables_occur,
    chosen,
    label_counts,
    parse_syllables,
)
from ouroboros_jax.data.vocalisations import Vocalisations, cold_start_vocalisations, cold_starts
from ouroboros_jax.errors import InputError
from ouroboros_jax.objective.derivatives import first_derivative, second_derivative
from ouroboros_jax.settings import setting

# Samples spanned by the 9-point derivative stencils (docs/method.md, "The model").
_STENCIL_WIDTH = 9


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the recordings are and what of them trains and is held out (docs/data.md; the reference's defaults).

    Each field is the training CLI's flag of the same name (`ouroboros_jax.settings`). The
    windows drawn from the training files are the sampler's (`SamplerConfig`).
    """

    data_dir: str = setting(help="Directory of <stem>.wav + <stem>.txt pairs; '@example' for the bundled finch.",
                            kind=str)
    val_frac: float = setting(0.1, "Fraction of files held out for validation (file-level).")
    test_frac: float = setting(0.1, "Fraction of files held out for test (file-level).")
    n_val_vocs: int = setting(8, "Cold-start validation vocalisations scored, at most.")
    n_test_vocs: int = setting(8, "Cold-start test vocalisations scored, at most.")
    min_eval_vocs: int = setting(8, "Fewest cold-start vocalisations that the validation files, and the test files, "
                                 "must hold: held-out files are added until they do.")
    silence_pad_samples: int = setting(2000, "Longest lead-in before each cold-start vocalisation, in samples.")
    min_lead_in_ms: float = setting(20.0, "Shortest lead-in of a cold-start vocalisation (the gap to the previous "
                                    "syllable), ms.")
    channel: int | None = setting(None, "Channel to use from multi-channel files (default: files must be mono).",
                                  kind=int)
    syllables: tuple[str, ...] = setting((), "Labels of the syllable types to train on, comma-separated (e.g. C or "
                                         "a,b); empty: every syllable.", kind=str, text=",".join)
    annotation_format: str = setting(OURS, f"Format of the annotations: {', '.join(ANNOTATION_FORMATS)}.")
    annotation_dir: str | None = setting(None, "Folder of the annotation files (for generic-seq and "
                                         "birdsong-recognition-dataset also the file itself); default: beside the "
                                         "recordings.", kind=str)

    def __post_init__(self):
        object.__setattr__(self, "syllables", parse_syllables(self.syllables))
        check_format(self.annotation_format)
        for name in ("val_frac", "test_frac"):
            if not 0 <= getattr(self, name) < 1:
                raise InputError(f"--{name}={getattr(self, name)}: must be in [0, 1)")
        for name in ("n_val_vocs", "n_test_vocs", "min_eval_vocs", "silence_pad_samples", "min_lead_in_ms"):
            if not getattr(self, name) >= 0:
                raise InputError(f"--{name}={getattr(self, name)}: must not be negative")
        for name in ("n_val_vocs", "n_test_vocs"):
            if getattr(self, name) < self.min_eval_vocs:
                raise InputError(f"--{name}={getattr(self, name)}: below --min_eval_vocs={self.min_eval_vocs}, so "
                                 "fewer would be scored than the split holds out for; raise it or lower "
                                 "--min_eval_vocs")
        if self.channel is not None and self.channel < 0:
            raise InputError(f"--channel={self.channel}: must not be negative")

    @property
    def annotations(self) -> AnnotationSource:
        return AnnotationSource(self.annotation_format, self.annotation_dir)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """Training windows, their features and labels, the file split and the held-out vocalisations.

    Attributes:
      x: (N, L) float32 training windows (L = round(context_len * sample_rate)).
      dxdt: (N, L) float32 first derivative per sample of each window (`derivatives.first_derivative`).
      d2x: (N, L) float32 second derivative per sample squared of each window.
      categories: (N,) int32, `Category` ONSET = 0, OFFSET = 1, MID = 2.
      window_sources: (N, 2) int64 provenance of each window: (index into `files.train`, first sample).
      pool_sizes: (3,) int64 distinct ONSET, OFFSET, MID windows the training files offered.
      sample_rate: in Hz, shared by all files.
      files: the file-level split.
      val_vocalisations: the cold-start `Vocalisations` of the validation files.
      test_vocalisations: the same for the test files.
      syllable_counts: role ("train", "val", "test") -> how many syllables of each label its files
        hold, every label (`syllable_labels.label_counts`).
    """

    x: np.ndarray
    dxdt: np.ndarray
    d2x: np.ndarray
    categories: np.ndarray
    window_sources: np.ndarray
    pool_sizes: np.ndarray
    sample_rate: int
    files: FileSplit
    val_vocalisations: Vocalisations
    test_vocalisations: Vocalisations
    syllable_counts: dict = dataclasses.field(default_factory=dict)


def segment_derivatives(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window derivative features, each window differenced on its own as the reference does.

    Args:
      x: (N, L) windows.

    Returns:
      (dxdt, d2x): (N, L) float32 each, computed in float64 from x's values.
    """
    x = np.asarray(x, dtype=np.float64)
    return first_derivative(x).astype(np.float32), second_derivative(x).astype(np.float32)


def _only(recording: Recording, syllables: tuple[str, ...]) -> Recording:
    """The recording with only the syllables labelled `syllables` (all of them if none are chosen)."""
    keep = chosen(recording.labels, syllables)
    return dataclasses.replace(recording, syllables=recording.syllables[keep], labels=recording.labels[keep])


def _report_unused(config: DataConfig, recordings: list, chosen_only: list, n_files: int) -> None:
    """Logs the recordings that give nothing: empty annotation files, and no chosen syllable."""
    empty = [r.path for r in recordings if len(r.syllables) == 0]
    if empty:
        logging.warning(
            "%d of %d annotation files are empty (no syllables), e.g. %s; those recordings give no windows "
            "or vocalisations",
            len(empty),
            n_files,
            config.annotations.path_for(empty[0]),
        )
    unchosen = [r.path for r in chosen_only if len(r.syllables) == 0 and r.path not in empty]
    if unchosen:  # expected when training one type, so not a warning
        logging.info("%d of %d recordings have no syllable labelled %s, e.g. %s; they give no windows or "
                     "vocalisations", len(unchosen), n_files, ",".join(config.syllables), unchosen[0])


def _training_windows(config: DataConfig, sampler: SamplerConfig, seed: int, train: list, sample_rate):
    """The sampler's windows of the training recordings, checked: long enough for the derivative
    stencils, some at all, not all silent (`InputError` otherwise)."""
    length = WindowSizes.at(sampler, sample_rate).length
    if length < _STENCIL_WIDTH:
        raise InputError(
            f"--context_len={sampler.context_len}: {length} samples at {sample_rate} Hz; "
            f"a window needs at least {_STENCIL_WIDTH} for the derivative features"
        )
    short = [r.path for r in train if len(r.audio) < length]
    if short:
        logging.warning(
            "%d of %d training recordings are shorter than one window (--context_len=%g s, "
            "%d samples), e.g. %s; they give no windows",
            len(short),
            len(train),
            sampler.context_len,
            length,
            short[0],
        )
    segments = sample_segments(train, sampler, seed)
    if len(segments.x) == 0:
        raise InputError(
            f"--data_dir={config.data_dir}: the {len(train)} training recordings give no window of "
            f"{length} samples around any syllable; check the annotations or lower --context_len"
        )
    if np.abs(segments.x).max() < SILENCE:
        raise InputError(f"--data_dir={config.data_dir}: every training window is silent (no sample reaches one "
                         "16-bit step); check that the recordings hold the song, and their annotations")
    return segments


def load_training_data(config: DataConfig, sampler: SamplerConfig, seed: int) -> TrainingData:
    """Reads a data directory and builds the training set and the held-out vocalisations.

    `seed` draws the file split and the sampler's windows (`--seed`).

    With `config.syllables`, only syllables with those labels give windows and vocalisations.
    Problems the reference skips silently are logged once each, with a count: empty annotation
    files, recordings without chosen syllables, training recordings shorter than one window, and
    those of `checks.check_recordings`.

    Raises:
      InputError: a missing or empty directory, a bad file (see `load_recording`), mixed sample
        rates, a chosen label that labels no syllable or a chosen syllable that overlaps one of
        a type not chosen (`checks.check_overlapping_types`), too few files for the split or too few
        cold-start vocalisations for --min_eval_vocs, no training window at all, or only silent
        training windows.
    """
    directory = resolve_data_dir(config.data_dir)
    files = list_audio_files(directory, "--data_dir")
    recordings = load_recordings(files, config.channel, config.annotations)
    check_syllables_occur(config.syllables, label_counts(r.labels for r in recordings), f"--data_dir={config.data_dir}")
    check_overlapping_types(recordings, config.syllables, config.annotations)
    sample_rate = recordings[0].sample_rate
    held_out = _HeldOut(config, sample_rate)
    split = file_level_split(files, config.val_frac, config.test_frac, seed,
                             [len(held_out.candidates(r)) for r in recordings], config.min_eval_vocs)
    by_path = {r.path: r for r in recordings}
    val, test = ([by_path[p] for p in part] for part in (split.val, split.test))
    chosen_only = {r.path: _only(r, config.syllables) for r in recordings}

    _report_unused(config, recordings, list(chosen_only.values()), len(files))
    check_recordings(directory, list(chosen_only.values()), config.annotations)
    segments = _training_windows(config, sampler, seed, [chosen_only[p] for p in split.train], sample_rate)
    dxdt, d2x = segment_derivatives(segments.x)
    return TrainingData(
        x=segments.x,
        dxdt=dxdt,
        d2x=d2x,
        categories=segments.categories,
        window_sources=segments.sources,
        pool_sizes=segments.pool_sizes,
        sample_rate=sample_rate,
        files=split,
        val_vocalisations=held_out.vocalisations(val, config.n_val_vocs),
        test_vocalisations=held_out.vocalisations(test, config.n_test_vocs),
        syllable_counts={role: label_counts(by_path[p].labels for p in getattr(split, role))
                         for role in ("train", "val", "test")},
    )


@dataclasses.dataclass(frozen=True)
class _HeldOut:
    """The cold-start vocalisations that `config` cuts from recordings at `sample_rate`."""

    config: DataConfig
    sample_rate: int

    @property
    def min_lead_in(self) -> int:
        return int(round(self.config.min_lead_in_ms / 1000.0 * self.sample_rate))

    def candidates(self, recording: Recording) -> list:
        return cold_starts(recording, self.config.syllables, self.config.silence_pad_samples, self.min_lead_in)

    def vocalisations(self, recordings: list[Recording], n_vocs: int) -> Vocalisations:
        return cold_start_vocalisations(recordings, self.config.syllables, n_vocs, self.config.silence_pad_samples,
                                        self.min_lead_in)
