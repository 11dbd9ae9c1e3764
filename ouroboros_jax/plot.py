"""`python -m ouroboros_jax.plot <command> [flags]`: figures of a trained run (docs/figures.md), as PNGs.

    python -m ouroboros_jax.plot specgram --run_dir=runs/demo [--seed=K] [--epoch=E] [--voc_idx=I] [--rescale]
    python -m ouroboros_jax.plot losses --run=demo:runs/demo [--run=label:run_dir ...] [--seed=K]
    python -m ouroboros_jax.plot drives --run_dir=runs/demo --voc_idx=I [--seed=K] [--epoch=E]

Every command takes --out (the PNG; each has a default) and --dpi. The commands are the functions
`specgram`, `losses` and `drives` of `ouroboros_jax.training.run_figures`, which take the flags as
arguments. See docs/figures.md.
"""

from absl import flags, logging

from ouroboros_jax import cli
from ouroboros_jax.errors import InputError, report_input_errors
from ouroboros_jax.training.figures import DPI
from ouroboros_jax.training.run_figures import drives, losses, specgram

_COMMAND_FLAGS = {
    "specgram": {"run_dir", "seed", "epoch", "voc_idx", "rescale", "out", "dpi"},
    "losses": {"run", "seed", "out", "dpi"},
    "drives": {"run_dir", "seed", "epoch", "voc_idx", "out", "dpi"},
}


FLAGS = cli.flag_set()
flags.DEFINE_string("run_dir", None, "specgram, drives: the run's --out_dir.", flag_values=FLAGS)
flags.DEFINE_multi_string("run", [], "losses: label:run_dir, repeated once per run to overlay.", flag_values=FLAGS)
flags.DEFINE_integer("seed", None, "The seed (default: the run's selected seed; losses: 0).", flag_values=FLAGS)
flags.DEFINE_integer("epoch", None, "specgram, drives: the checkpoint, in completed epochs (default: newest).",
                     flag_values=FLAGS)
flags.DEFINE_integer("voc_idx", None, "specgram (default 0), drives (required): the validation vocalisation.",
                     flag_values=FLAGS)
flags.DEFINE_bool("rescale", False, "specgram: draw the rescaled deployed generation, not the raw output.",
                  flag_values=FLAGS)
flags.DEFINE_string("out", None, "The PNG (default: in the run directory; losses: losses.png here).", flag_values=FLAGS)
flags.DEFINE_integer("dpi", DPI, "Resolution of the PNG.", flag_values=FLAGS)


@report_input_errors
def main(argv):
    if len(argv) != 2 or argv[1] not in _COMMAND_FLAGS:
        raise InputError(f"expected one command, {' | '.join(_COMMAND_FLAGS)}, then --flags; got {argv[1:]}")
    command = argv[1]
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    f = FLAGS
    for name in sorted(set().union(*_COMMAND_FLAGS.values()) - _COMMAND_FLAGS[command]):
        if f[name].present:
            raise InputError(f"--{name} is not a flag of {command}; its flags: "
                             + ", ".join(f"--{n}" for n in sorted(_COMMAND_FLAGS[command])))
    if command in ("specgram", "drives") and not f.run_dir:
        raise InputError("--run_dir is required: the --out_dir of a training run")
    if command == "specgram":
        specgram(f.run_dir, f.seed, f.epoch, 0 if f.voc_idx is None else f.voc_idx, f.rescale, f.out, f.dpi)
    elif command == "losses":
        losses(f.run, 0 if f.seed is None else f.seed, f.out or "losses.png", f.dpi)
    else:
        if f.voc_idx is None:
            raise InputError("--voc_idx is required: the validation vocalisation whose drives to draw")
        drives(f.run_dir, f.voc_idx, f.seed, f.epoch, f.out, f.dpi)


if __name__ == "__main__":
    cli.run(main, FLAGS)
