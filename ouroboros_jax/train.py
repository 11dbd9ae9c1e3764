"""`python -m ouroboros_jax.train --flagfile=experiments/demo.flags`: the whole seed cross-validation.

One flag per setting of `training.config.RunConfig` (every flag of the reference's entry point,
in snake_case with its default, plus this project's), and the flags of the process:
the compilation cache and the multi-host coordinates. See docs/cli.md.
"""

import pathlib

from absl import flags, logging

from ouroboros_jax import cli
from ouroboros_jax.errors import Interrupted, report_input_errors
from ouroboros_jax.training.compilation import default_cache_dir, use_compilation_cache
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.run import resume_advice, train_and_evaluate
from ouroboros_jax.training.runtime import join_processes

FLAGS = cli.flag_set()
cli.define_settings(RunConfig, FLAGS)
# The process's flags: how this process runs, not what the run computes (not in the run's records).
flags.DEFINE_string("compilation_cache_dir", default_cache_dir(),
                    "Folder of JAX's persistent compilation cache, so a repeated or resumed run compiles nothing "
                    "it compiled before; empty: no cache.", flag_values=FLAGS)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, to run over several processes (hosts); "
                    "auto: from the cluster's environment (SLURM).", flag_values=FLAGS)
flags.DEFINE_integer("num_processes", None, "Number of processes (hosts) with --coordinator_address.",
                     flag_values=FLAGS)
flags.DEFINE_integer("process_id", None, "This process's index with --coordinator_address.", flag_values=FLAGS)


def config_from_flags() -> RunConfig:
    """The run's config from the parsed flags."""
    return cli.from_flags(RunConfig, FLAGS)


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS)
    if FLAGS.coordinator_address:
        join_processes(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    config = config_from_flags()
    use_compilation_cache(FLAGS.compilation_cache_dir)
    try:
        train_and_evaluate(config)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {resume_advice(pathlib.Path(config.out_dir).absolute())}") from None
    print("PIPELINE DONE")


if __name__ == "__main__":
    cli.run(main, FLAGS)
