"""`python -m ouroboros_jax.evaluate`: scores a trained run on cold-start vocalisations of any recordings.

    python -m ouroboros_jax.evaluate --run_dir=runs/finch                        # the run's test files
    python -m ouroboros_jax.evaluate --run_dir=runs/finch --data_dir=day2/ --members=all

Every syllable of the chosen types with a lead-in is scored on its own samples, as the run scores
its test vocalisations (docs/method.md), by the run's selected member or every member of its
newest checkpoint; for example another day of the same bird. Writes `scores.csv` (one row per
member and vocalisation), `summary.json` (each member's mean, median, fraction > 0, bootstrap
interval and listening metrics) and `report.html` (the page to look at and listen to them:
the selected member's vocalisations, each member's verdict) into --out_dir
(ouroboros_jax/training/run_scores.py, training/run_report.py; docs/cli.md).
"""

import pathlib

from absl import flags, logging

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors
from ouroboros_jax.training.outputs import make_output_dir, write_json, write_table
from ouroboros_jax.training.run_report import write_evaluation_report
from ouroboros_jax.training.run_scores import COLUMNS, MEMBERS, score_run

FLAGS = cli.flag_set()
_RUN_DIR = flags.DEFINE_string("run_dir", None, "The run: the --out_dir of train.", flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Recordings to score on (<stem>.wav + annotations, at the run's "
                                "sample rate); default the run's test files.", flag_values=FLAGS)
_SYLLABLES = flags.DEFINE_string("syllables", None, "Syllable types to score, comma-separated; default the run's "
                                 "--syllables.", flag_values=FLAGS)
_MEMBERS = flags.DEFINE_enum("members", "selected", MEMBERS, "The run's selected member, or every member of its "
                             "newest checkpoint.", flag_values=FLAGS)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where scores.csv, summary.json and report.html go; default "
                               "<run_dir>/evaluation_<data_dir's name, or test>.", flag_values=FLAGS)


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS, {"run_dir": "the run directory"})
    logging.set_verbosity(logging.WARNING)  # keep the libraries' INFO chatter off the terminal
    scores = score_run(_RUN_DIR.value, _DATA_DIR.value, _SYLLABLES.value, _MEMBERS.value)
    name = pathlib.Path(_DATA_DIR.value).name if _DATA_DIR.value else "test"
    out_dir = pathlib.Path(_OUT_DIR.value or pathlib.Path(_RUN_DIR.value) / f"evaluation_{name}")
    make_output_dir(out_dir, "--out_dir")
    write_table(out_dir / "scores.csv", COLUMNS, scores.rows())
    summary = scores.summary()
    write_json(out_dir / "summary.json", summary)
    report = write_evaluation_report(out_dir, scores)
    print(f"{summary['n_vocalisations']} vocalisations from {summary['n_files']} files ({scores.source}):")
    for member, result in summary["members"].items():
        s = result["summary"]
        print(f"  {member}: autonomy mean {s['mean']:.3f} (90 % interval {s['mean_ci90'][0]:.3f} to "
              f"{s['mean_ci90'][1]:.3f}), median {s['median']:.3f}, > 0 on {s['frac_positive']:.0%}; lead-in "
              f"{s['median_lead_in_db']:.1f} dB, onset delay {s['median_onset_delay_ms']:.1f} ms (medians)")
    print(f"wrote {out_dir / 'scores.csv'}, {out_dir / 'summary.json'} and {report}")


if __name__ == "__main__":
    cli.run(main, FLAGS)
