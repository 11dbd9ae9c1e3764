"""Output files: `seed_cv.csv`, `selected_model.json`, other CSV tables, WAVs, PNG figures and HTML pages.

Each file is written to a temporary name and renamed, so a crash never leaves a partial file
over a good one; a write that fails (a full disk) raises `WriteError` and leaves no temporary
file behind.
"""

import contextlib
import csv
import io
import json
import math
import os
import pathlib

import numpy as np
import soundfile as sf
from absl import logging

from ouroboros_jax.errors import InputError, WriteError

SEED_CV_COLUMNS = (
    "seed", "val_autonomy", "ckpt", "val_spec_corr", "val_amp_pen", "val_pitch_pen", "val_bounded_frac",
    "val_cold_start", "val_rescale", "val_lead_in_db", "val_onset_delay_ms", "status", "stopped_epoch",
    "skipped_steps",
)
WAV_PEAK = 0.95  # peak level of the written WAV, as in the reference


def check_output_dir(path: pathlib.Path, flag: str) -> None:
    """Refuses an output directory that could not be made because it, or a folder above it, is a file.

    Raises:
      InputError: naming the file, for `flag` (e.g. "--out_dir").
    """
    blocking = next((p for p in (*reversed(path.parents), path) if p.exists() and not p.is_dir()), None)
    if blocking == path:
        raise InputError(f"{flag}={path}: is a file, not a directory; choose another {flag}")
    if blocking is not None:
        raise InputError(f"{flag}={path}: {blocking} is a file, so no directory can be made under it; choose "
                         f"another {flag}")


def make_output_dir(path: pathlib.Path, flag: str) -> None:
    """Makes an output directory (and its parents).

    Args:
      path: the directory.
      flag: the flag that named it, for the messages (e.g. "--out_dir").

    Raises:
      InputError: it is a file, lies under a file (`check_output_dir`), or cannot be made there.
    """
    check_output_dir(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{flag}={path}: cannot be made ({e.strerror}); choose a writable {flag}") from None


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise WriteError.at(path, e.strerror or str(e)) from None


def strict_json(value):
    """Replaces NaN/inf by None and NumPy scalars by Python ones, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: pathlib.Path, value: dict) -> None:
    _write_atomic(path, (json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n").encode())


def write_table(path: pathlib.Path, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """A CSV file with a header: one line per row, values in the order of `columns`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    _write_atomic(path, buffer.getvalue().encode())


def write_seed_cv(path: pathlib.Path, rows: list[dict]) -> None:
    """One row per seed (finished, culled and diverged ones), columns `SEED_CV_COLUMNS`; a sweep's
    rows (one per member) lead with the member's index and swept settings."""
    buffer = io.StringIO()
    leading = dict.fromkeys(k for row in rows for k in row if k not in SEED_CV_COLUMNS)
    writer = csv.DictWriter(buffer, fieldnames=[*leading, *SEED_CV_COLUMNS], lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r.get("member", r["seed"])):
        writer.writerow({k: ("" if v is None else v) for k, v in strict_json(row).items()})
    _write_atomic(path, buffer.getvalue().encode())


def write_wav(path: pathlib.Path, audio: np.ndarray, sample_rate: int, peak_normalise: bool = True) -> bool:
    """Writes int16 PCM; skips (False) a non-finite or silent output.

    Args:
      path: the WAV file.
      audio: (n,) float samples, full scale 1.0.
      sample_rate: Hz.
      peak_normalise: scale the peak to 0.95 full scale; otherwise keep the level, scaling down
        only a signal whose peak would clip.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if not np.isfinite(audio).all() or not np.any(audio):
        reason = "not finite" if not np.isfinite(audio).all() else "all zero"
        logging.warning("not writing %s: the autonomous output is %s", path, reason)
        return False
    peak = np.abs(audio).max()
    if not peak_normalise and peak > 1.0:
        logging.warning("%s: the peak %.2f is above full scale; scaled down to a peak of %.2f", path, peak, WAV_PEAK)
    _write_atomic(path, wav_bytes(audio, sample_rate, peak_normalise))
    return True


def wav_bytes(audio: np.ndarray, sample_rate: int, peak_normalise: bool = True) -> bytes:
    """A WAV file's bytes: int16 PCM, mono, `sample_rate` Hz.

    Args:
      audio: (n,) finite float samples, full scale 1.0.
      sample_rate: Hz.
      peak_normalise: scale the peak to `WAV_PEAK`; otherwise keep the level, scaling a signal whose
        peak would clip down to `WAV_PEAK` (silence stays silence).
    """
    audio = np.asarray(audio, dtype=np.float64)
    peak = np.abs(audio).max() if audio.size else 0.0
    gain = WAV_PEAK / peak if peak > 0 and (peak_normalise or peak > 1.0) else 1.0
    pcm = np.round(audio * gain * 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def png_bytes(figure, dpi: int) -> bytes:
    """A matplotlib `Figure` as the bytes of a PNG of (height * dpi, width * dpi) pixels."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def write_png(path: pathlib.Path, figure, dpi: int) -> None:
    """Saves a matplotlib `Figure` as a PNG of (height * dpi, width * dpi) pixels."""
    _write_atomic(pathlib.Path(path), png_bytes(figure, dpi))


def write_text(path: pathlib.Path, text: str) -> None:
    """A UTF-8 text file (an HTML page), written atomically like the others."""
    _write_atomic(pathlib.Path(path), text.encode())
