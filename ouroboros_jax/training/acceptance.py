"""The method's acceptance bar, item by item, judged on a finished run or an evaluation (docs/results.md).

The measurable items: the selected member's validation bounded_frac >= 0.9 by epoch 10 (at its
last epoch in a shorter run), its validation spec_corr >= 0.5 at the end, and its median
cold-start raw test autonomy > 0. The listening items (docs/method.md, "Listening metrics"): its
median lead-in level on the test vocalisations at least 30 dB below its syllable level, and its
median onset delay within 10 ms. `experiments/pass_rate.py` and the run report both judge by
these functions; the numbers come from what the run recorded (selected_model.json, TensorBoard),
never recomputed.
"""

import json
import math
import pathlib
from typing import NamedTuple

import numpy as np

from ouroboros_jax.training.events import read_scalars
from ouroboros_jax.training.run_dir import MANIFEST, RUN_INFO, member_folder

BOUNDED_EPOCH, MIN_BOUNDED, MIN_SPEC_CORR = 10, 0.9, 0.5
MAX_LEAD_IN_DB, MAX_ONSET_DELAY_MS = -30.0, 10.0


class Item(NamedTuple):
    """One item of the bar.

    Attributes:
      key: its name in `acceptance`'s record (e.g. "val_spec_corr").
      what: what is measured, for a reader.
      value: the measured number; NaN when it was not measured (it then fails).
      bar: the bar it must meet, for a reader (e.g. ">= 0.5").
      passed: whether it meets it.
      listening: a listening item (else a measurable one).
    """

    key: str
    what: str
    value: float
    bar: str
    passed: bool
    listening: bool = False


def number(value) -> float:
    """A recorded value as a float: NaN for an empty or null one (a CSV cell; JSON keeps NaN as null)."""
    if value is None or value == "":
        return math.nan
    return float(value)


def val_bounded_at(run_dir: pathlib.Path, info: dict, member: int, epoch: int) -> float:
    """The member's validation bounded_frac after `epoch` epochs (its last, if it trained fewer);
    NaN if its TensorBoard logs hold none."""
    scalars = read_scalars(pathlib.Path(run_dir) / member_folder(info, member)).get("Val/bounded_frac")
    if scalars is None:
        return math.nan
    steps, values = scalars
    at = min(epoch, len(values)) * info["batches_per_epoch"] - 1
    return float(values[steps <= at][-1])


def held_out_items(summary: dict) -> list[Item]:
    """The items judged on the held-out (test) vocalisations, from their `evaluation.autonomy_summary`
    (not named test_*: pytest would collect it wherever it is imported)."""
    median, lead_in, onset = (number(summary[k]) for k in ("median", "median_lead_in_db", "median_onset_delay_ms"))
    n = summary["n_vocalisations"]
    return [
        Item("test_autonomy_median", f"cold-start raw test autonomy, median over {n} vocalisations", median, "> 0",
             bool(median > 0)),
        Item("test_lead_in_db", f"lead-in level below the syllable, median over {n} vocalisations (dB)", lead_in,
             f"<= {MAX_LEAD_IN_DB:g} dB", bool(lead_in <= MAX_LEAD_IN_DB), listening=True),
        Item("test_onset_delay_ms", f"onset delay behind the target's, median over {n} vocalisations (ms)", onset,
             f"within ±{MAX_ONSET_DELAY_MS:g} ms", bool(abs(onset) <= MAX_ONSET_DELAY_MS), listening=True),
    ]


def run_items(run_dir: pathlib.Path, info: dict, manifest: dict) -> list[Item]:
    """Every item of a finished run (its run.json `info` and selected_model.json `manifest`), in the
    order of the bar: the two validation items, then `held_out_items`."""
    bounded = val_bounded_at(run_dir, info, manifest["selected_seed"], BOUNDED_EPOCH)
    spec_corr = number(manifest["selected_val_breakdown"]["spec_corr"])
    last = min(BOUNDED_EPOCH, info["n_epochs"])
    return [
        Item(f"val_bounded_epoch{BOUNDED_EPOCH}", f"validation bounded_frac at epoch {last}", bounded,
             f">= {MIN_BOUNDED:g}", bool(bounded >= MIN_BOUNDED)),
        Item("val_spec_corr", "validation spec_corr at the end", spec_corr, f">= {MIN_SPEC_CORR:g}",
             bool(spec_corr >= MIN_SPEC_CORR)),
        *held_out_items(manifest["selected_test_summary"]),
    ]


def passes(items: list[Item]) -> tuple[bool, bool]:
    """(the measurable items all pass, the listening items all pass)."""
    return (all(i.passed for i in items if not i.listening), all(i.passed for i in items if i.listening))


def acceptance(run_dir) -> dict:
    """The acceptance record of a finished run: its items' values, the context of its test score, and
    `passes` and `listening_passes` (`experiments/pass_rate.py` prints it)."""
    run_dir = pathlib.Path(run_dir)
    manifest = json.loads((run_dir / MANIFEST).read_text())
    info = json.loads((run_dir / RUN_INFO).read_text())
    items = run_items(run_dir, info, manifest)
    test, val = manifest["selected_test_summary"], manifest["selected_val_summary"]
    record = {
        "selected": manifest["selected_member"]["name"],
        "n_val_vocs": val["n_vocalisations"], "n_test_vocs": test["n_vocalisations"],
        **{i.key: i.value for i in items if i.key.startswith("val_")},
        "val_autonomy": manifest["selected_val_autonomy"],
        "test_autonomy_mean": test["mean"], "test_autonomy_median": test["median"],
        "test_frac_positive": test["frac_positive"], "test_mean_ci90": test["mean_ci90"],
        "test_lead_in_db": test["median_lead_in_db"], "test_onset_delay_ms": test["median_onset_delay_ms"],
    }
    record = {k: np.nan if v is None else v for k, v in record.items()}  # JSON keeps NaN as null
    record["passes"], record["listening_passes"] = passes(items)
    return record
