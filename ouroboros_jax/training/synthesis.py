"""Deployed generation: a trained run sings one syllable of any recording (docs/method.md, "Evaluation").

The syllable is cut as the run's cold-start vocalisations are, [onset - lead-in, offset), and
one seed of the run generates it autonomously from the window's first sample with the run's own
integrator (`evaluation.generate`). `python -m ouroboros_jax.synthesize` is the command line;
this module holds its work so that it can be called (and tested) without flags.
"""

import dataclasses
import pathlib

from ouroboros_jax.data.annotations import read_labelled_annotations
from ouroboros_jax.data.audio import read_audio
from ouroboros_jax.data.syllable_labels import check_syllables_occur, chosen, label_counts, parse_syllables
from ouroboros_jax.data.vocalisations import cold_start_window
from ouroboros_jax.errors import InputError
from ouroboros_jax.scoring.evaluation import DETREND_CUTOFF, generate
from ouroboros_jax.training.outputs import make_output_dir, write_wav
from ouroboros_jax.training.trained import load_run

# `correct` (the detrend inside `generate`) needs more samples than this.
_MIN_SAMPLES = int(2 * DETREND_CUTOFF)


@dataclasses.dataclass(frozen=True)
class Synthesis:
    """What `synthesize` wrote.

    Attributes:
      out: the WAV file.
      seed: the seed that sang.
      epoch: completed epochs of the checkpoint it came from.
      sample_rate: of the recording and the WAV, Hz.
      onset_s, offset_s: the syllable, seconds.
      lead_in: samples before the onset (the lead-in asked for, clipped at the start of the recording).
      n_samples: length of the window and the WAV.
      rescaled: the output was scaled to the syllable's level.
    """

    out: pathlib.Path
    seed: int
    epoch: int
    sample_rate: int
    onset_s: float
    offset_s: float
    lead_in: int
    n_samples: int
    rescaled: bool


def _syllable(audio: pathlib.Path, duration_s: float, sample_rate: int, onset, offset, txt, row,
              syllables: tuple[str, ...]) -> tuple[float, float]:
    """(onset, offset) in seconds from either --onset/--offset or --txt/--row, checked against the recording.

    `row` counts the rows of --txt labelled `syllables` (every row if none are given).
    """
    if txt is not None and (onset is not None or offset is not None):
        raise InputError("--txt and --onset/--offset both name a syllable; pass one of them")
    if txt is None:
        if row is not None:
            raise InputError(f"--row={row} picks a row of --txt; pass --txt too, or --onset and --offset")
        if onset is None and offset is None:
            raise InputError(f"--audio={audio}: say which syllable: --onset and --offset in seconds, or --txt (an "
                             "annotation file) and --row")
        if onset is None or offset is None:
            raise InputError("--onset and --offset go together (seconds from the start of --audio)")
        if onset >= offset:
            raise InputError(f"--onset={onset:g} s is not before --offset={offset:g} s")
        # The same tolerance as annotation files: an offset up to one sample past the end is rounding.
        if onset < 0 or offset > duration_s + 1.0 / sample_rate:
            raise InputError(f"--onset={onset:g} --offset={offset:g}: outside {audio} (0-{duration_s:g} s)")
        return onset, offset
    txt = pathlib.Path(txt)
    if not txt.is_file():
        raise InputError(f"--txt={txt}: no such file")
    rows, labels = read_labelled_annotations(txt, duration_s, sample_rate)
    if len(rows) == 0:
        raise InputError(f"--txt={txt}: the file lists no syllable")
    check_syllables_occur(syllables, label_counts([labels]), f"--txt={txt}")
    rows = rows[chosen(labels, syllables)]
    which = f" labelled {','.join(syllables)}" if syllables else ""
    row = 0 if row is None else row
    if not 0 <= row < len(rows):
        raise InputError(f"--row={row}: {txt} has {len(rows)} syllables{which}, rows 0-{len(rows) - 1} in onset "
                         "order")
    return float(rows[row, 0]), float(rows[row, 1])


def synthesize(run_dir, audio, out, *, onset: float | None = None, offset: float | None = None, txt=None,
               row: int | None = None, rescale: bool = True, seed: int | None = None, epoch: int | None = None,
               silence_pad_samples: int | None = None, channel: int | None = None,
               syllables: str | tuple[str, ...] | None = None) -> Synthesis:
    """Generates one syllable of `audio` with a trained run and writes it as a WAV.

    Args:
      run_dir: the run (`python -m ouroboros_jax.train --out_dir`, or `convert`'s).
      audio: a .wav or .flac recording at the run's sample rate.
      out: the WAV to write (int16, the recording's sample rate, as long as the window).
      onset, offset: the syllable in seconds; or
      txt, row: an annotation file and its row (0-based, in onset order; default 0) among the rows
        labelled `syllables`.
      rescale: scale the output to the level (standard deviation) of the detrended syllable, so
        the WAV sounds as loud as the recording; otherwise keep the model's own amplitude.
      seed: which seed sings; None: the run's selected seed (the checkpoint's first without one).
      epoch: which checkpoint (completed epochs); None: the newest.
      silence_pad_samples: lead-in before the onset; None: the run's.
      channel: channel of a multi-channel recording; None: the run's `--channel`.
      syllables: the labels `row` counts ("C,D" or a tuple; "" or (): every row); None: the
        run's `--syllables`, the type the model was trained on.

    Raises:
      InputError: a missing or unreadable file, a syllable that is not one, a label --txt does
        not have, a sample rate other than the run's, a window too short to detrend, an --out
        that is a folder, or an output that diverged (nothing is written then).
      WriteError: the WAV could not be written.
    """
    audio, out = pathlib.Path(audio), pathlib.Path(out)
    if not audio.is_file():
        raise InputError(f"--audio={audio}: no such file")
    if out.is_dir():
        raise InputError(f"--out={out}: is a folder; name the WAV file to write, e.g. --out={out / 'syllable.wav'}")
    if silence_pad_samples is not None and silence_pad_samples < 0:
        raise InputError(f"--silence_pad_samples={silence_pad_samples}: must not be negative")
    run = load_run(run_dir, epoch)
    x, sample_rate = read_audio(audio, run.config.data.channel if channel is None else channel)
    if sample_rate != run.sample_rate:
        raise InputError(f"--audio={audio}: recorded at {sample_rate} Hz, but the run was trained at "
                         f"{run.sample_rate} Hz; resample the recording to {run.sample_rate} Hz")
    if syllables is not None and txt is None:
        raise InputError(f"--syllables={syllables if isinstance(syllables, str) else ','.join(syllables)} picks "
                         "rows of --txt; with --onset/--offset there is nothing to pick")
    syllables = run.config.data.syllables if syllables is None else parse_syllables(syllables)
    onset_s, offset_s = _syllable(audio, len(x) / sample_rate, sample_rate, onset, offset, txt, row, syllables)
    pad = run.config.data.silence_pad_samples if silence_pad_samples is None else silence_pad_samples
    window = cold_start_window(x, sample_rate, onset_s, offset_s, pad)
    if len(window) <= _MIN_SAMPLES:
        raise InputError(f"the window {onset_s:g}-{offset_s:g} s of {audio} with its lead-in is {len(window)} "
                         f"samples; generation needs more than {_MIN_SAMPLES} (a longer syllable or more lead-in)")
    seed = run.selected_seed if seed is None else seed
    generated = generate(run.model(seed), window, run.setup.rollout, rescale=rescale)
    make_output_dir(out.parent, "--out")
    # The level is kept (not peak-normalised) so that --rescale is heard: the recording's level, or the model's own.
    if not write_wav(out, generated, sample_rate, peak_normalise=False):
        raise InputError(f"--out={out}: nothing written: seed {seed}'s autonomous output on this syllable is not "
                         "finite or all zero (it diverged or fell silent); try another --seed or --epoch")
    lead_in = min(pad, int(round(onset_s * sample_rate)))  # clipped at the start of the recording
    return Synthesis(out, seed, run.epoch, sample_rate, onset_s, offset_s, lead_in, len(window), rescale)
