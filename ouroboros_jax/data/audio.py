"""Reading recordings: WAV and FLAC through soundfile, as mono float64 in [-1, 1] (docs/data.md, "Directory layout").

16-bit PCM is divided by 32768 exactly as the reference does (so [-1, 1)). Other PCM widths
(8, 24, 32 bit) are scaled by their full scale by libsndfile, which is exact for 24-bit
(v / 2**23); float files are taken as they are, their full scale being 1.0 by convention.
"""

import errno
import os
import pathlib
import stat
import struct

import numpy as np
import soundfile as sf

from ouroboros_jax.errors import InputError

AUDIO_SUFFIXES = (".wav", ".flac")
_STREAMED = 0xFFFFFFFF  # a WAV data size meaning "until the end of the file"


def list_audio_files(directory: str | pathlib.Path, flag: str) -> list[pathlib.Path]:
    """The .wav and .flac files of `directory`, sorted by name; hidden files (".name") are skipped.

    Args:
      directory: the folder to list.
      flag: the command-line flag that named it, for error messages (e.g. "--data_dir").

    Raises:
      InputError: the folder does not exist, holds no audio file, holds an audio name that is no
        readable file (a broken symbolic link, a link loop, a folder), or holds two with one stem
        (they would share one annotation file).
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise InputError(f"{flag}={directory}: no such directory; pass the folder holding your recordings")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."))
    for p in files:
        # Skipping it would lose the recording with nothing said but that its .txt has no recording.
        reason = _not_a_file(p)
        if reason:
            raise InputError(f"{p}: cannot read audio: {reason}; replace it with the recording or remove it")
    if not files:
        raise InputError(f"{flag}={directory}: no .wav or .flac files in this directory")
    first_with_stem = {}
    for p in files:
        other = first_with_stem.setdefault(p.stem, p)
        if other != p:
            raise InputError(
                f"{other} and {p.name} would share the annotation file {p.stem}.txt; keep only one"
            )
    return files


def _not_a_file(path: pathlib.Path) -> str | None:
    """Why `path` cannot be read as a file ("it is a folder", ...); None for a regular file (or a link to one)."""
    try:
        mode = path.stat().st_mode  # follows links
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "it is a symbolic link loop"
        if e.errno == errno.ENOENT and path.is_symlink():
            return f"it is a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return e.strerror or type(e).__name__
    if stat.S_ISDIR(mode):
        return "it is a folder"
    return None if stat.S_ISREG(mode) else "it is not a regular file"


def _declared_wav_data_bytes(path: pathlib.Path) -> tuple[int, int] | None:
    """(declared, present) byte counts of a RIFF/WAVE file's data chunk; None if not plain RIFF.

    libsndfile silently reads what is left of a truncated WAV, so the header has to be checked
    here to tell a cut-off copy from a complete file.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                return chunk_size, size - offset - 8
            offset += 8 + chunk_size + (chunk_size & 1)  # chunks are padded to even length
    return None


def read_audio(path: str | pathlib.Path, channel: int | None = None) -> tuple[np.ndarray, int]:
    """Reads one recording as mono float64.

    Args:
      path: a .wav or .flac file.
      channel: which channel of a multi-channel file to use (0-based); mono files ignore it.

    Returns:
      (x, sample_rate): x: (T,) float64 in [-1, 1] for PCM files.

    Raises:
      InputError: unreadable or truncated file, a WAV whose header was never finalised, NaN/inf
        samples, several channels and no `channel`, or a `channel` a multi-channel file does not
        have.
    """
    path = pathlib.Path(path)
    try:
        info = sf.info(str(path))
        declared = _declared_wav_data_bytes(path)
        if declared is not None and declared[0] == 0 and declared[1] > 0:
            raise InputError(
                f"{path}: unfinalised WAV header (it declares no audio, but {declared[1]} bytes follow it): the "
                "recorder did not close the file; repair the header (e.g. sox --ignore-length in.wav out.wav) or "
                "export the recording again"
            )
        # 0xFFFFFFFF is a streamed WAV's "unknown length", which libsndfile reads to the end of the file.
        if declared is not None and declared[0] != _STREAMED and declared[0] > declared[1]:
            raise InputError(
                f"{path}: truncated WAV (header declares {declared[0]} bytes of audio, file has "
                f"{declared[1]}); copy or export the recording again"
            )
        # int16 is read as integers so that the division by 32768 is the reference's, bit for bit.
        dtype = "int16" if info.subtype == "PCM_16" else "float64"
        data, sample_rate = sf.read(str(path), dtype=dtype, always_2d=True)
    except (RuntimeError, OSError) as e:  # soundfile.LibsndfileError is a RuntimeError
        raise InputError(f"{path}: cannot read audio ({e}); check that it is a valid WAV or FLAC file") from e
    if data.shape[0] != info.frames:
        raise InputError(
            f"{path}: truncated audio ({data.shape[0]} of {info.frames} frames readable); "
            "copy or export the recording again"
        )
    n_channels = data.shape[1]
    if n_channels > 1 and channel is None:
        raise InputError(f"{path}: has {n_channels} channels; pick one with --channel=0..{n_channels - 1}")
    if n_channels > 1 and not 0 <= channel < n_channels:
        raise InputError(f"{path}: --channel={channel} but the file has {n_channels} channels")
    x = data[:, channel if n_channels > 1 else 0]
    x = x / 32768.0 if x.dtype == np.int16 else x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x))
        raise InputError(
            f"{path}: {bad.size} NaN or infinite samples (first at sample {bad[0]}); "
            "repair or remove the file"
        )
    return x, int(sample_rate)
