"""Data: recordings, annotations (ours and other tools' formats), syllable labels and types, the
syllable segmenter, the edge-biased sampler, splits, cold-start vocalisations and the bundled
example (docs/data.md)."""

from ouroboros_jax.data.annotation_formats import ANNOTATION_FORMATS, AnnotationSource
from ouroboros_jax.data.annotations import (
    annotation_path,
    read_annotations,
    read_labelled_annotations,
    write_annotations,
)
from ouroboros_jax.data.audio import list_audio_files, read_audio
from ouroboros_jax.data.dataset import DataConfig, TrainingData, load_training_data, segment_derivatives
from ouroboros_jax.data.example_data import EXAMPLE_DATA, example_data_dir, resolve_data_dir
from ouroboros_jax.data.recordings import Recording, load_recording, load_recordings
from ouroboros_jax.data.sampler import (
    Category,
    SamplerConfig,
    Segments,
    WindowSizes,
    category_counts,
    parse_ratio,
    sample_segments,
    window_starts,
)
from ouroboros_jax.data.segmenter import SegmenterConfig, band_power_envelope, find_syllables
from ouroboros_jax.data.splits import FileSplit, file_level_split, stratified_split
from ouroboros_jax.data.syllable_labels import label_counts, parse_syllables
from ouroboros_jax.data.vocalisations import Vocalisations, cold_start_vocalisations, cold_start_window

__all__ = [
    "ANNOTATION_FORMATS",
    "EXAMPLE_DATA",
    "AnnotationSource",
    "Category",
    "DataConfig",
    "FileSplit",
    "Recording",
    "SamplerConfig",
    "SegmenterConfig",
    "Segments",
    "TrainingData",
    "WindowSizes",
    "annotation_path",
    "band_power_envelope",
    "category_counts",
    "Vocalisations",
    "cold_start_vocalisations",
    "cold_start_window",
    "example_data_dir",
    "file_level_split",
    "label_counts",
    "find_syllables",
    "list_audio_files",
    "load_recording",
    "load_recordings",
    "load_training_data",
    "parse_ratio",
    "parse_syllables",
    "read_annotations",
    "read_audio",
    "read_labelled_annotations",
    "resolve_data_dir",
    "sample_segments",
    "segment_derivatives",
    "stratified_split",
    "window_starts",
    "write_annotations",
]
