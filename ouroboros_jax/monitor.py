"""`python -m ouroboros_jax.monitor`: one status line about a training run, or one per poll.

    python -m ouroboros_jax.monitor --run_dir=runs/blk445              # one poll (e.g. from cron)
    python -m ouroboros_jax.monitor --run_dir=runs/blk445 --watch=900  # poll every 15 minutes

Prints `status=<S> key=value ...` when there is something to report (the statuses are listed in
ouroboros_jax/training/monitoring.py and docs/cli.md), nothing otherwise. The state
kept between polls is a JSON file, by default in the run directory.
"""

import time

from absl import flags, logging

from ouroboros_jax import cli
from ouroboros_jax.errors import InputError, report_input_errors
from ouroboros_jax.training.monitoring import Limits, poll

FLAGS = cli.flag_set()
_RUN_DIR = flags.DEFINE_string("run_dir", None, "The training run's --out_dir.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seed id to watch (after culling, watch a kept one).", flag_values=FLAGS)
_WATCH = flags.DEFINE_float("watch", 0.0, "Poll every this many seconds until interrupted; 0: poll once.",
                            flag_values=FLAGS)
_STATE_PATH = flags.DEFINE_string("state_path", None, "State kept between polls; default <run_dir>/monitor_state.json.",
                                  flag_values=FLAGS)
_DEAD_AFTER = flags.DEFINE_float("dead_after", Limits.dead_after_s,
                                 "DEAD when the run has written no event for this many seconds.", flag_values=FLAGS)
_NAN_SPIKE = flags.DEFINE_integer("nan_spike", Limits.nan_spike,
                                  "NAN_SPIKE when more steps than this were skipped since the last poll.",
                                  flag_values=FLAGS)


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS, {"run_dir": "the --out_dir of the training run to watch"})
    if _WATCH.value < 0:
        raise InputError(f"--watch={_WATCH.value:g}: must be >= 0 seconds (0: poll once)")
    logging.set_verbosity(logging.WARNING)
    limits = Limits(dead_after_s=_DEAD_AFTER.value, nan_spike=_NAN_SPIKE.value)
    try:
        while True:
            line = poll(_RUN_DIR.value, _SEED.value, _STATE_PATH.value, limits)
            if line:
                print(line, flush=True)
            if not _WATCH.value:
                return
            time.sleep(_WATCH.value)
    except KeyboardInterrupt:
        pass  # Ctrl-C ends --watch; the state file holds the last complete poll (it is replaced atomically)


if __name__ == "__main__":
    cli.run(main, FLAGS)
