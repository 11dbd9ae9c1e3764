"""Regenerates the bundled example data, ouroboros_jax/data/example/, from the pykanto wheel.

    python scripts/make_example_data.py                      # downloads pykanto==0.1.8 with pip
    python scripts/make_example_data.py --wheel=path/to/pykanto-0.1.8-py3-none-any.whl

The wheel ships two recordings of one Bengalese finch (Koumura & Okanoya 2016, CC BY 4.0) as
sample data. This script reads them out of the zip (pykanto itself is never installed or
imported), finds the syllables with our segmenter, cuts each recording in the middle of silent
gaps into files of about --piece_s seconds (keeping at most --max_pad_ms of silence at each
end), writes them as 16-bit WAV at the native 32 kHz with their samples unchanged, and then
annotates the folder as `python -m ouroboros_jax.segment --cluster=auto --seed=0` does: every
file is segmented again and every syllable typed by clustering, so each <stem>.txt holds onset,
offset and type. It adds a NOTICE crediting the authors and listing the types, and writes the
figure of example spectrograms per type to --figure. The old bundle is replaced only once the
new one is complete.

The wheel has no syllable labels of its own for these recordings (it ships one Sonic
Visualiser box per recording); Koumura & Okanoya's labels are in their data set's
Annotation.xml, which no wheel on PyPI holds for these two songs, hence the clustering.
"""

import io
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import soundfile as sf
from absl import app, flags

from ouroboros_jax.data.example_data import EXAMPLE_CLUSTER, EXAMPLE_CLUSTER_SEED
from ouroboros_jax.data.segmentation import TYPES_CSV, TYPES_PNG, segment_directory
from ouroboros_jax.data.segmenter import SegmenterConfig, find_syllables

_REPO = pathlib.Path(__file__).resolve().parent.parent
_WHEEL = flags.DEFINE_string(
    "wheel", None, "An already downloaded pykanto-0.1.8 wheel; default: pip download it."
)
_OUT_DIR = flags.DEFINE_string(
    "out_dir", str(_REPO / "ouroboros_jax" / "data" / "example"), "Where the bundle goes."
)
_PIECE_S = flags.DEFINE_float(
    "piece_s", 1.5, "A file is cut at the first suitable gap after this many seconds."
)
_MIN_CUT_GAP_MS = flags.DEFINE_float("min_cut_gap_ms", 80.0, "Only gaps at least this long (ms) are cut.")
_MAX_PAD_MS = flags.DEFINE_float(
    "max_pad_ms", 150.0, "Silence kept before the first and after the last syllable (ms)."
)
_FIGURE = flags.DEFINE_string(
    "figure", str(_REPO / "docs" / "figures" / "example_syllable_types.png"),
    "Where the figure of example spectrograms per syllable type goes.",
)

PACKAGE = "pykanto==0.1.8"
MEMBER_PREFIX = "pykanto/data/raw/BENGALESE_FINCH/bird_3/"
NOTICE = """\
Example data: song of one Bengalese finch (Lonchura striata var. domestica).

The audio files in this folder are cut from recordings of one bird that the pykanto package
ships as sample data (version 0.1.8, PyPI wheel):

{members}

They come from

  Koumura, T. (2016). BirdsongRecognition. figshare. Dataset.
  https://doi.org/10.6084/m9.figshare.3470165

described in

  Koumura, T. & Okanoya, K. (2016). Automatic recognition of element classes and boundaries in
  the birdsong with variable sequences. PLoS ONE 11(7): e0159188.
  https://doi.org/10.1371/journal.pone.0159188

and are used here under the Creative Commons Attribution 4.0 International licence (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/.

Changes made: each recording was cut in the middle of silent gaps into shorter files, keeping
at most {pad:g} ms of silence at either end (the samples are unchanged: 16-bit PCM, {sr} Hz).

The syllable annotations (*.txt: onset and offset in seconds, and the syllable type) are not
the authors'. The onsets and offsets were found by the amplitude segmenter of ouroboros_jax
with its default settings, and the types by clustering the syllables' log-mel spectrogram
shapes and durations (python -m ouroboros_jax.segment --cluster={cluster} --seed={seed}):
{n_types} types, silhouette {silhouette:.2f}, named by decreasing count:

  type  syllables  median duration
{types}

The authors' own labels of these songs (their data set's Annotation.xml) are not in the
pykanto wheel, which has one Sonic Visualiser box per recording and no syllable labels.
Regenerate this folder with scripts/make_example_data.py.
"""


def fetch_wheel(directory: pathlib.Path) -> pathlib.Path:
    """Downloads the pykanto wheel (no dependencies) into `directory` with pip."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            PACKAGE,
            "-d",
            str(directory),
        ],
        check=True,
    )
    return next(directory.glob("pykanto-*.whl"))


def read_recordings(wheel: pathlib.Path) -> list[tuple[str, np.ndarray, int]]:
    """(name, int16 samples (T,), sample rate) of each bird-3 WAV in the wheel, sorted by name."""
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith(MEMBER_PREFIX) and n.endswith(".wav"))
        recordings = []
        for name in names:
            samples, sample_rate = sf.read(io.BytesIO(z.read(name)), dtype="int16")
            recordings.append((pathlib.PurePosixPath(name).stem, samples, sample_rate))
    if not recordings:
        sys.exit(f"error: {wheel} holds no {MEMBER_PREFIX}*.wav")
    return recordings


def cut_points(syllables: np.ndarray, sample_rate: int, n_samples: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges of the pieces of one recording.

    Args:
      syllables: (K, 2) onset/offset seconds of the whole recording, K >= 1.
      sample_rate: in Hz.
      n_samples: length of the recording.
    """
    pad = _MAX_PAD_MS.value * 1e-3
    pieces, start = [], max(0.0, syllables[0, 0] - pad)
    for (_, offset), (next_onset, _) in zip(syllables[:-1], syllables[1:]):
        gap = next_onset - offset
        if gap * 1e3 >= _MIN_CUT_GAP_MS.value and offset - start >= _PIECE_S.value:
            margin = min(gap / 2, pad)
            pieces.append((start, offset + margin))
            start = next_onset - margin
    pieces.append((start, min(n_samples / sample_rate, syllables[-1, 1] + pad)))
    return [(round(a * sample_rate), round(b * sample_rate)) for a, b in pieces]


def build(wheel: pathlib.Path, out_dir: pathlib.Path, figure: pathlib.Path) -> None:
    """Writes the complete bundle into `out_dir`, and the figure of its syllable types to `figure`."""
    config = SegmenterConfig()
    recordings = read_recordings(wheel)
    for name, samples, sample_rate in recordings:
        syllables = find_syllables(samples / 32768.0, sample_rate, config)
        for k, (a, b) in enumerate(cut_points(syllables, sample_rate, len(samples))):
            sf.write(out_dir / f"bird3_{name}_{k:02d}.wav", samples[a:b], sample_rate, subtype="PCM_16")
    result = segment_directory(out_dir, out_dir, config, cluster=EXAMPLE_CLUSTER, seed=EXAMPLE_CLUSTER_SEED)
    for target, syllables in zip(result.targets, result.syllables):
        if len(syllables) == 0:
            sys.exit(f"error: no syllable found in {target.stem}.wav; adjust --piece_s or --min_cut_gap_ms")
    figure.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out_dir / TYPES_PNG, figure)
    (out_dir / TYPES_CSV).unlink()  # the NOTICE lists the types
    (out_dir / "NOTICE").write_text(
        NOTICE.format(
            members="\n".join(f"  {MEMBER_PREFIX}{name}.wav" for name, _, _ in recordings),
            pad=_MAX_PAD_MS.value,
            sr=", ".join(sorted({str(sample_rate) for _, _, sample_rate in recordings})),
            cluster=EXAMPLE_CLUSTER,
            seed=EXAMPLE_CLUSTER_SEED,
            n_types=result.types.n_types,
            silhouette=result.types.silhouette,
            types="\n".join(f"  {label:>4}  {count:9d}  {median:9.0f} ms" for label, count, median in result.summary()),
        )
    )


def main(argv):
    del argv
    out_dir = pathlib.Path(_OUT_DIR.value).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = pathlib.Path(_WHEEL.value) if _WHEEL.value else fetch_wheel(pathlib.Path(tmp))
        staging = pathlib.Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
        staging.chmod(0o755)  # mkdtemp makes it private; the bundle is package data
        try:
            build(wheel, staging, pathlib.Path(_FIGURE.value).resolve())
        except BaseException:
            shutil.rmtree(staging)
            raise
    # Swap the finished bundle in; the old one is removed only after the new one is in place.
    old = out_dir.with_name(f".{out_dir.name}.old")
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    files = sorted(out_dir.iterdir())
    size = sum(f.stat().st_size for f in files)
    n_syllables = sum(len(f.read_text().splitlines()) for f in files if f.suffix == ".txt")
    n_wav = sum(f.suffix == ".wav" for f in files)
    print(f"wrote {n_wav} recordings with {n_syllables} typed syllables to {out_dir} ({size / 1e6:.2f} MB) and "
          f"their types' figure to {_FIGURE.value}")


if __name__ == "__main__":
    app.run(main)
