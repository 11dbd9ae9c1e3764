"""Writes syllable annotations (`<stem>.txt`) for every recording of a folder, from amplitude.

    python -m ouroboros_jax.segment --audio_dir=my_bird/

finds the syllables of each .wav/.flac file in --audio_dir (see ouroboros_jax/data/segmenter.py
and docs/data.md for the method and how to tune it) and writes one annotation file per
recording in --out_dir (default: beside the recordings, where training looks for them).
All files are segmented before any is written, and each is written to a temporary name and
renamed, so a failure never leaves partial annotations behind.
"""

import dataclasses
import pathlib

import numpy as np
from absl import app, flags, logging

from ouroboros_jax.data.annotations import write_annotations
from ouroboros_jax.data.audio import list_audio_files, read_audio
from ouroboros_jax.data.segmenter import SegmenterConfig, find_syllables
from ouroboros_jax.errors import InputError, WriteError, parse_flags, report_input_errors
from ouroboros_jax.training.outputs import make_output_dir

_DEFAULTS = SegmenterConfig()
_AUDIO_DIR = flags.DEFINE_string(
    "audio_dir", None, "Folder of .wav/.flac recordings to segment.", required=True
)
_OUT_DIR = flags.DEFINE_string(
    "out_dir",
    None,
    "Folder for the <stem>.txt annotations; default --audio_dir, where training expects them.",
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace annotation files that already exist.")
_CHANNEL = flags.DEFINE_integer(
    "channel", None, "Channel to use in multi-channel files (0-based); without it they are an error."
)
_SEGMENTER_HELP = {
    "min_freq_hz": "Lower edge (Hz) of the frequency band whose power is tracked.",
    "max_freq_hz": "Upper edge (Hz) of the frequency band whose power is tracked; capped at Nyquist.",
    "window_ms": "Length of the spectrogram's Hann window (ms); it smooths the envelope.",
    "hop_ms": "Spacing of the envelope's frames (ms); threshold crossings are interpolated between frames.",
    "smooth_ms": "Extra Gaussian smoothing of the envelope (ms, standard deviation); 0 = none. "
    "Raise it for noisy recordings.",
    "noise_percentile": "Percentile of a file's envelope taken as its noise floor.",
    "onset_db": "A syllable starts where the envelope rises this many dB above the noise floor.",
    "offset_db": "A syllable ends where the envelope falls below this many dB above the noise floor "
    "(<= --onset_db).",
    "min_gap_ms": "Syllables closer than this (ms) are merged into one.",
    "min_dur_ms": "Shorter syllables (ms) are dropped as clicks.",
    "max_dur_ms": "Longer syllables (ms) are dropped as noise or calls.",
}
for _field in dataclasses.fields(SegmenterConfig):
    flags.DEFINE_float(_field.name, getattr(_DEFAULTS, _field.name), _SEGMENTER_HELP[_field.name])


def segment_directory(
    audio_dir: pathlib.Path,
    out_dir: pathlib.Path,
    config: SegmenterConfig,
    channel: int | None,
    overwrite: bool,
) -> list[tuple[pathlib.Path, np.ndarray]]:
    """Segments every recording of `audio_dir` and writes `<out_dir>/<stem>.txt` for each.

    Returns:
      (annotation path, syllables (K, 2) seconds) per recording, in file order.

    Raises:
      InputError: no recordings, an unreadable one, existing annotations without `overwrite`, or
        an `out_dir` that is a file.
      WriteError: an annotation file could not be written.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out_dir={out_dir}: is a file, not a folder; pass the folder for the .txt annotations")
    recordings = list_audio_files(audio_dir, "--audio_dir")
    targets = [out_dir / f"{p.stem}.txt" for p in recordings]
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise InputError(
            f"--out_dir={out_dir}: {len(existing)} annotation file(s) already exist, "
            f"e.g. {existing[0].name}; pass --overwrite to replace them"
        )
    results = []
    for path, target in zip(recordings, targets):
        x, sample_rate = read_audio(path, channel)
        results.append((target, find_syllables(x, sample_rate, config)))
    make_output_dir(out_dir, "--out_dir")
    for target, syllables in results:
        try:
            write_annotations(target, syllables)
        except OSError as e:
            raise WriteError.at(target, e.strerror or str(e)) from None
    return results


@report_input_errors
def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}; every setting is a --flag")
    config = SegmenterConfig(
        **{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(SegmenterConfig)}
    )
    audio_dir = pathlib.Path(_AUDIO_DIR.value).expanduser()
    out_dir = pathlib.Path(_OUT_DIR.value).expanduser() if _OUT_DIR.value else audio_dir
    results = segment_directory(audio_dir, out_dir, config, _CHANNEL.value, _OVERWRITE.value)
    durations_ms = np.concatenate([np.diff(s, axis=-1)[:, 0] for _, s in results]) * 1e3
    silent = [t for t, s in results if len(s) == 0]
    if silent:
        logging.warning(
            "%d of %d recordings have no syllable at these thresholds (empty annotation written), e.g. %s",
            len(silent),
            len(results),
            silent[0].name,
        )
    median = f", median {np.median(durations_ms):.0f} ms" if durations_ms.size else ""
    print(f"wrote {len(results)} annotation files to {out_dir}: {durations_ms.size} syllables{median}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
