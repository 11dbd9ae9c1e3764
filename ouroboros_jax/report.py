"""`python -m ouroboros_jax.report`: makes a finished run's report.html again.

    python -m ouroboros_jax.report --run_dir=runs/demo
    python -m ouroboros_jax.report --run_dir=runs/demo --out=/tmp/demo_report.html

A run writes report.html when it ends; this makes it for a run made before the page existed, or
again after a change. One self-contained page (figures and audio embedded; no network, no script)
to open from disk in any browser and share: the verdict against the acceptance bar, every
validation and test vocalisation of the selected member (spectrograms on one colour scale,
target, raw and rescaled audio, scores), the members, the training curves, the data and every
setting (ouroboros_jax/training/run_report.py; docs/figures.md, "The run report").
"""

from absl import flags, logging

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.training.run_report import remake_run_report

FLAGS = cli.flag_set()
_RUN_DIR = flags.DEFINE_string("run_dir", None, "The run: the --out_dir of a finished train.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "The page to write; default <run_dir>/report.html.", flag_values=FLAGS)


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS, {"run_dir": "the run directory"})
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    print(f"wrote {remake_run_report(_RUN_DIR.value, _OUT.value)}")


if __name__ == "__main__":
    cli.run(main, FLAGS)
