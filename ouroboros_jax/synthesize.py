"""`python -m ouroboros_jax.synthesize`: a trained run sings one syllable of any recording.

    python -m ouroboros_jax.synthesize --run_dir=runs/demo --audio=song.wav --txt=song.txt --row=2 --out=out.wav
    python -m ouroboros_jax.synthesize --run_dir=runs/demo --audio=song.wav --onset=1.01 --offset=1.07 --out=out.wav

Cuts [onset - lead-in, offset) from --audio, integrates it autonomously with the run's selected
seed (or --seed) and integrator, and writes the detrended output as an int16 WAV at the
recording's sample rate (ouroboros_jax/training/synthesis.py; docs/cli.md).
"""

from absl import flags, logging

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.training.synthesis import synthesize

FLAGS = cli.flag_set()
_RUN_DIR = flags.DEFINE_string("run_dir", None, "The run: the --out_dir of train (or of convert).", flag_values=FLAGS)
_AUDIO = flags.DEFINE_string("audio", None, "The recording (.wav or .flac) at the run's sample rate.",
                             flag_values=FLAGS)
_ONSET = flags.DEFINE_float("onset", None, "Onset of the syllable in seconds (with --offset).", flag_values=FLAGS)
_OFFSET = flags.DEFINE_float("offset", None, "Offset of the syllable in seconds (with --onset).", flag_values=FLAGS)
_TXT = flags.DEFINE_string("txt", None, "Annotation file naming the syllable instead (onset offset per row).",
                           flag_values=FLAGS)
_ROW = flags.DEFINE_integer("row", None, "Row of --txt, 0-based in onset order among the rows of --syllables; "
                            "default 0.", flag_values=FLAGS)
_SYLLABLES = flags.DEFINE_string("syllables", None, "Labels whose rows of --txt --row counts, comma-separated; "
                                 "default the run's --syllables; empty: every row.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "The WAV to write.", flag_values=FLAGS)
_RESCALE = flags.DEFINE_bool("rescale", True, "Scale the output to the syllable's level (off: the model's own).",
                             flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", None, "Seed id that sings; default the run's selected seed.", flag_values=FLAGS)
_EPOCH = flags.DEFINE_integer("epoch", None, "Checkpoint (completed epochs); default the newest.", flag_values=FLAGS)
_SILENCE_PAD = flags.DEFINE_integer("silence_pad_samples", None,
                                    "Lead-in before the onset, in samples; default the run's.", flag_values=FLAGS)
_CHANNEL = flags.DEFINE_integer("channel", None, "Channel of a multi-channel recording; default the run's.",
                                flag_values=FLAGS)


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS, {"run_dir": "the run directory", "audio": "a recording",
                                    "out": "the WAV to write"})
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    result = synthesize(_RUN_DIR.value, _AUDIO.value, _OUT.value, onset=_ONSET.value, offset=_OFFSET.value,
                        txt=_TXT.value, row=_ROW.value, rescale=_RESCALE.value, seed=_SEED.value, epoch=_EPOCH.value,
                        silence_pad_samples=_SILENCE_PAD.value, channel=_CHANNEL.value, syllables=_SYLLABLES.value)
    level = "rescaled to the syllable's level" if result.rescaled else "at the model's own amplitude"
    print(f"wrote {result.out}: {result.n_samples} samples at {result.sample_rate} Hz ({level}); seed {result.seed} "
          f"after epoch {result.epoch}, syllable {result.onset_s:.3f}-{result.offset_s:.3f} s with {result.lead_in} "
          "samples of lead-in")


if __name__ == "__main__":
    cli.run(main, FLAGS)
