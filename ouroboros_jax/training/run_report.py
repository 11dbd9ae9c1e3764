"""The report page of a finished run, or of an evaluation: what it shows, gathered, and report.html written.

    write_run_report(run_dir, data, val_outputs, test_outputs)   # the end of a run (training/run.py)
    remake_run_report("runs/demo")                               # python -m ouroboros_jax.report
    write_evaluation_report(out_dir, scores)                     # python -m ouroboros_jax.evaluate

A run's page, in order (docs/figures.md, "The run report"): the verdict against the acceptance
bar (`training.acceptance`), every validation and test vocalisation of the selected member, the
members and their fates (seed_cv.csv), the training curves (TensorBoard), the data, and every
setting with the versions and device. The numbers are the ones the run recorded; only the
outputs to look at and listen to are integrated (by the run itself, or again from the newest
checkpoint for a run made before). `training.report_page` draws the HTML.
"""

import collections
import csv
import datetime
import html
import pathlib

import jax
import numpy as np

from ouroboros_jax import settings
from ouroboros_jax.data import TrainingData
from ouroboros_jax.data.syllable_labels import describe_counts
from ouroboros_jax.errors import InputError
from ouroboros_jax.training.acceptance import held_out_items, passes, run_items
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.figures import LOSS_PANELS, VALIDATION_PANELS, loss_panels_figure
from ouroboros_jax.training.outputs import SEED_CV_COLUMNS, write_text
from ouroboros_jax.training.preflight import describe_data
from ouroboros_jax.training.records import VOCALISATION_COLUMNS, versions, vocalisation_rows
from ouroboros_jax.training.report_page import (
    Heard,
    cell,
    formatted,
    image,
    page,
    table,
    verdict_table,
    vocalisation_section,
)
from ouroboros_jax.training.run_dir import (
    MANIFEST,
    REPORT,
    SEED_CV,
    TEST_SCORES,
    VAL_SCORES,
    member_folder,
    read_json_object,
    read_run_info,
)
from ouroboros_jax.training.run_figures import loss_curves
from ouroboros_jax.training.run_scores import RunScores, member_outputs
from ouroboros_jax.training.sweep import member_name
from ouroboros_jax.training.trained import load_run

_MEMBER_SCORES = {  # seed_cv.csv column -> heading (validation scores at the member's last epoch)
    "val_autonomy": "autonomy", "val_spec_corr": "spec_corr", "val_amp_pen": "amp_pen", "val_pitch_pen": "pitch_pen",
    "val_bounded_frac": "bounded_frac", "val_lead_in_db": "lead-in (dB)", "val_onset_delay_ms": "onset delay (ms)",
}


def read_rows(path: pathlib.Path) -> list[dict]:
    """The rows of a CSV table a run wrote, column -> text."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def finished_run(run_dir) -> tuple[dict, dict]:
    """(run.json, selected_model.json) of a finished run that selected a member.

    Raises:
      InputError: not a run, a run still training or stopped before its end, or one whose every
        seed diverged (nothing to listen to).
    """
    run_dir = pathlib.Path(run_dir)
    info = read_run_info(run_dir)
    path = run_dir / MANIFEST
    try:
        manifest = json_object(path)
    except FileNotFoundError:
        raise InputError(f"--run_dir={run_dir}: no {MANIFEST} yet: the run has not finished; re-run its train "
                         "command to finish it, then make the report") from None
    if manifest.get("selected_seed") is None:
        raise InputError(f"--run_dir={run_dir}: every seed diverged and none was selected, so there is nothing to "
                         f"listen to; {run_dir / SEED_CV} has their scores")
    return info, manifest


def json_object(path: pathlib.Path) -> dict:
    """A JSON object file a run wrote. Raises FileNotFoundError, or InputError if it is damaged."""
    value = read_json_object(path)
    if value is None:
        raise InputError(f"{path} is damaged (not the file a run writes); re-run the run's train command to write it")
    return value


def heard(role: str, vocalisations, outputs: np.ndarray, rows: list[dict], where) -> list[Heard]:
    """The `Heard` of each vocalisation: its window, its output row of `outputs` (V, L) cut to it, and
    its recorded `rows`, which must list the same vocalisations in the same order.

    Raises:
      InputError: naming `where` (the table), if the rows are not those vocalisations.
    """
    same = len(rows) == len(vocalisations) and all(
        row["file"] == vocalisations.files[i].name and abs(float(row["onset_s"]) - vocalisations.onsets[i]) < 1e-5
        for i, row in enumerate(rows))
    if not same:
        raise InputError(f"{where} does not list the {len(vocalisations)} {role} vocalisations the run's data give "
                         "now: the recordings or their annotations changed since the run")
    return [Heard(role, i, vocalisations.window(i), outputs[i, : vocalisations.lengths[i]], row)
            for i, row in enumerate(rows)]


def write_run_report(run_dir, data: TrainingData, val_outputs: np.ndarray, test_outputs: np.ndarray,
                     out=None) -> pathlib.Path:
    """Writes a finished run's report.html (atomically).

    Args:
      run_dir: the run's --out_dir, with its run.json, selected_model.json, seed_cv.csv and score tables.
      data: the run's `TrainingData`.
      val_outputs, test_outputs: (V, L) the selected member's raw autonomous outputs on the data's
        validation and test vocalisations (`Vocalisations.integrate`).
      out: the page; None for `<run_dir>/report.html`.

    Returns:
      The page's path.
    """
    run_dir = pathlib.Path(run_dir)
    info, manifest = finished_run(run_dir)
    vocalisations = [*heard("validation", data.val_vocalisations, val_outputs, read_rows(run_dir / VAL_SCORES),
                            run_dir / VAL_SCORES),
                     *heard("test", data.test_vocalisations, test_outputs, read_rows(run_dir / TEST_SCORES),
                            run_dir / TEST_SCORES)]
    config = RunConfig.from_record(info["config"], str(run_dir), info["n_epochs"])
    selected = manifest["selected_member"]["name"]
    intro = (f"<p>The run {html.escape(str(run_dir))}: member <b>{html.escape(selected)}</b> selected after "
             f"{html.escape(manifest['selected_checkpoint'].split('/')[-1])} of {info['n_epochs']} epochs, judged on "
             f"{len(data.val_vocalisations)} validation and {len(data.test_vocalisations)} test vocalisations of "
             f"syllable types {html.escape(','.join(config.data.syllables) or 'all')}. {_written()}</p>")
    sections = [
        ("verdict", "Verdict against the acceptance bar", _run_verdict(run_dir, info, manifest)),
        ("vocalisations", f"Vocalisations of the selected member ({selected})",
         _vocalisations(vocalisations, int(info["sample_rate"]))),
        ("members", "Members", _members(run_dir, info, manifest)),
        ("training", "Training curves", _curves(run_dir, info)),
        ("data", "Data", _data(data)),
        ("settings", "Settings, versions and device", _settings(config, manifest["versions"], manifest["device"],
                                                                 info, manifest.get("command"))),
    ]
    path = pathlib.Path(out) if out else run_dir / REPORT
    write_text(path, page(f"Run report: {run_dir.name}", intro, sections))
    return path


def remake_run_report(run_dir, out=None) -> pathlib.Path:
    """Makes a finished run's report.html again, from its newest checkpoint (the selected member's
    last state) and its data as recorded in run.json (`write_run_report`).

    Raises:
      InputError: not a finished run (`finished_run`), a checkpoint that is not the selected one, its
        data missing or changed, or `out` in a directory that does not exist.
    """
    run_dir = pathlib.Path(run_dir)
    if out is not None and not pathlib.Path(out).parent.is_dir():
        raise InputError(f"--out={out}: the directory {pathlib.Path(out).parent} does not exist")
    _, manifest = finished_run(run_dir)
    run = load_run(run_dir)
    if f"checkpoints/{run.epoch}" != manifest["selected_checkpoint"]:
        raise InputError(f"--run_dir={run_dir}: the newest checkpoint is checkpoints/{run.epoch}, not the "
                         f"selected member's {manifest['selected_checkpoint']}; re-run its train command to finish it")
    data = run.data()
    member = manifest["selected_seed"]
    return write_run_report(run_dir, data, member_outputs(run, member, data.val_vocalisations),
                            member_outputs(run, member, data.test_vocalisations), out)


def write_evaluation_report(out_dir, scores: RunScores) -> pathlib.Path:
    """Writes the report.html of an evaluation (`run_scores.score_run`) into `out_dir`: each member's
    verdict on the items of the bar that test vocalisations measure, and the vocalisations as the
    run's selected member (else the first member scored) sang them.

    Returns:
      The page's path.
    """
    run, vocs = scores.run, scores.vocalisations
    names = list(scores.scores)
    selected = member_name(run.config, run.selected_seed)
    shown = selected if selected in names else names[0]
    rows = [dict(zip(VOCALISATION_COLUMNS, row)) for row in vocalisation_rows(vocs, scores.scores[shown],
                                                                               run.sample_rate)]
    vocalisations = [Heard("test", i, vocs.window(i), scores.outputs[shown][i, : vocs.lengths[i]], row)
                     for i, row in enumerate(rows)]
    summary = scores.summary()
    intro = (f"<p>The run {html.escape(str(run.run_dir))} at epoch {run.epoch}, scored on "
             f"{summary['n_vocalisations']} cold-start vocalisations from {summary['n_files']} files "
             f"({html.escape(scores.source)}), syllable types {html.escape(summary['syllables'] or 'all')}. "
             f"{_written()}</p>")
    verdicts = [f"<h3>{html.escape(name)}</h3>"
                f"{_verdict(held_out_items(result['summary']), result['summary'], 'Test autonomy item')}"
                for name, result in summary["members"].items()]
    note = ("<p>The validation items of the bar (bounded_frac by epoch 10, spec_corr at the end) are the "
            "run's own: see its report.html.</p>")
    per_file = collections.Counter(path.name for path in vocs.files)
    sections = [
        ("verdict", "Verdict on the items test vocalisations measure", note + "".join(verdicts)),
        ("vocalisations", f"Vocalisations of {shown}", _vocalisations(vocalisations, run.sample_rate)),
        *_run_sections(run.run_dir, run.info),
        ("data", "Data", table(["file", "vocalisations scored"], sorted(per_file.items()))),
        ("settings", "Settings of the run, versions and device of this evaluation",
         _settings(run.config, versions(), _devices(), run.info, None)),
    ]
    path = pathlib.Path(out_dir) / REPORT
    write_text(path, page(f"Evaluation report: {pathlib.Path(out_dir).name}", intro, sections))
    return path


def _written() -> str:
    return f"Written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC."


def _verdict(items, summary: dict, measured: str = "Measurable bar") -> str:
    """The outcome lines (`measured`: what the measurable items make up), the items' table and the
    test score's context."""
    measurable, listening = passes(items)
    outcome = " ".join(f'<span class="{"pass" if ok else "fail"}">{what}: {"pass" if ok else "fail"}</span>.'
                       for what, ok in ((measured, measurable), ("Listening items", listening)))
    low, high = summary["mean_ci90"]
    context = (f"<p>Test autonomy over {summary['n_vocalisations']} vocalisations: mean {formatted(summary['mean'])} "
               f"(90 % interval {formatted(low)} to {formatted(high)}), median {formatted(summary['median'])}, > 0 "
               f"on {round(summary['frac_positive'] * summary['n_vocalisations'])} of them.</p>")
    return f'<p class="verdict">{outcome}</p>{verdict_table(items)}{context}'


def _run_verdict(run_dir: pathlib.Path, info: dict, manifest: dict) -> str:
    rescaled = manifest.get("rescaled_test_autonomy")
    return (_verdict(run_items(run_dir, info, manifest), manifest["selected_test_summary"])
            + f"<p>Validation autonomy (the selection's score) {formatted(manifest['selected_val_autonomy'])}; "
              f"test autonomy rescaled to the targets' level {formatted(rescaled)}. The bar is docs/method.md's "
              "\"The acceptance bar\", judged as docs/results.md judges it.</p>")


def _vocalisations(vocalisations: list[Heard], sample_rate: int) -> str:
    counts = collections.Counter(h.role for h in vocalisations)
    note = ("<p>Each: the target and the model's raw autonomous output from the window's first sample, detrended as "
            "the score detrends them; their spectrograms share one colour scale. The rescaled output is the deployed "
            "generation at the target's level. Scores as recorded; shaded against the bar's thresholds.</p>")
    return note + "".join(vocalisation_section(h, counts[h.role], sample_rate) for h in vocalisations)


def _run_sections(run_dir: pathlib.Path, info: dict) -> list[tuple[str, str, str]]:
    """The members and training curves sections, if the run has finished (an evaluation's page shows its run's)."""
    if not (run_dir / SEED_CV).is_file() or not (run_dir / MANIFEST).is_file():
        return []
    manifest = json_object(run_dir / MANIFEST)
    return [("members", "Members of the run", _members(run_dir, info, manifest)),
            ("training", "Training curves of the run", _curves(run_dir, info))]


def _members(run_dir: pathlib.Path, info: dict, manifest: dict) -> str:
    """seed_cv.csv as a table: each member's name, fate, seed, swept settings and validation scores."""
    rows = read_rows(run_dir / SEED_CV)
    swept = [c for c in (rows[0] if rows else {}) if c not in SEED_CV_COLUMNS and c != "member"]
    body = []
    for row in rows:
        member = int(row.get("member") or row["seed"])
        fate = {"culled": f"culled at epoch {row['stopped_epoch']}",
                "diverged": f"diverged: stopped at epoch {row['stopped_epoch']}"}.get(
            row["status"], "selected" if member == manifest["selected_seed"] else "finished, not selected")
        body.append([member_folder(info, member), fate, row["seed"], *(row[c] for c in swept),
                     *(cell(row[c], 1 if c.endswith(("_db", "_ms")) else 3, key=c) for c in _MEMBER_SCORES),
                     row["skipped_steps"], row["ckpt"]])
    return ("<p>Validation scores (means over the validation vocalisations) at each member's last epoch; "
            "skipped steps: its non-finite training steps, each of which left it unchanged.</p>"
            + table(["member", "fate", "seed", *swept, *_MEMBER_SCORES.values(), "skipped steps", "checkpoint"],
                    body, "members"))


def _curves(run_dir: pathlib.Path, info: dict) -> str:
    """Every member's per-epoch losses, horizon, spec weight and validation scores, overlaid."""
    curves = {}
    for member in info["seeds"]:
        try:
            curves[member_folder(info, member)] = loss_curves(run_dir, member)
        except InputError:
            continue  # no scalars (TensorBoard folder removed): the others are still drawn
    if not curves:
        return "<p>No TensorBoard scalars in the run directory.</p>"
    return image(loss_panels_figure(curves, LOSS_PANELS + VALIDATION_PANELS), "training curves of every member")


def _data(data: TrainingData) -> str:
    """The console's lines about the data, and each split's files and syllables per type."""
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in describe_data(data))
    splits = [(role, len(files), ", ".join(p.name for p in files), describe_counts(data.syllable_counts.get(key, {})))
              for role, key, files in (("training", "train", data.files.train), ("validation", "val", data.files.val),
                                       ("test", "test", data.files.test))]
    return lines + table(["split", "files", "file names", "syllables per type"], splits, "data")


def _devices() -> dict:
    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices)}


def _settings(config: RunConfig, library_versions: dict, device: dict, info: dict, command) -> str:
    """Every setting by its flag's name, then the versions, device, kernels and command."""
    texts = {s.flag: s.text for s in settings.settings_of(type(config))}
    values = [(f"--{flag}", str(texts[flag](value) if texts.get(flag) else value))
              for flag, value in settings.flat(config).items()]
    environment = [*((f"version of {k}", v) for k, v in library_versions.items()),
                   *((f"device {k}", v) for k, v in device.items()),
                   *((f"kernel {k}", v) for k, v in info.get("kernels", {}).items()),
                   ("sample rate (Hz)", info["sample_rate"]), ("batches per epoch", info["batches_per_epoch"])]
    if command:
        environment.append(("command", " ".join(command)))
    return (table(["setting", "value"], values, "settings")
            + table(["", "value"], [(k, str(v)) for k, v in environment], "environment"))
