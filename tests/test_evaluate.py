"""Per-vocalisation scores of a run, and `python -m ouroboros_jax.evaluate` on its test files and others."""

import csv
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ouroboros_jax.data.example_data import example_data_dir
from ouroboros_jax.errors import InputError
from ouroboros_jax.training.events import read_scalars
from ouroboros_jax.training.records import VOCALISATION_COLUMNS
from ouroboros_jax.training.run_dir import member_folder
from ouroboros_jax.training.run_scores import COLUMNS, score_run
from tests.test_run import REPO


def rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def annotated_onsets(file_name):
    """The onsets of the bundled finch's annotation of `file_name`, seconds."""
    text = (example_data_dir() / file_name).with_suffix(".txt").read_text()
    return [float(line.split()[0]) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("role", ["val", "test"])
def test_a_run_writes_every_vocalisation_s_score(tiny_run, role):
    run_dir, manifest = tiny_run
    table = rows(run_dir / f"{role}_scores.csv")
    assert list(table[0]) == list(VOCALISATION_COLUMNS) and len(table) == 2  # --n_{role}_vocs=2
    scores = np.array([float(r["score"]) for r in table])
    summary = manifest[f"selected_{role}_summary"]
    np.testing.assert_allclose(scores.mean(), manifest[f"selected_{role}_autonomy"], rtol=1e-12)
    assert summary["mean"] == manifest[f"selected_{role}_autonomy"] and summary["n_vocalisations"] == 2
    np.testing.assert_allclose(summary["median"], np.median(scores), rtol=1e-12)
    assert summary["frac_positive"] == np.mean(scores > 0)
    assert summary["mean_ci90"][0] <= summary["mean"] <= summary["mean_ci90"][1]
    lead_in_db = [float(r["lead_in_db"]) for r in table]
    np.testing.assert_allclose(summary["median_lead_in_db"], np.median(lead_in_db), rtol=1e-12)
    for r in table:  # each a syllable of its file, with at most the 2000-sample lead-in
        assert float(r["onset_s"]) in annotated_onsets(r["file"])
        assert 20.0 <= float(r["lead_in_ms"]) <= 62.5 and float(r["onset_s"]) < float(r["offset_s"])


def test_evaluate_scores_the_run_s_test_files_as_the_run_does(tiny_run):
    run_dir, manifest = tiny_run
    scores = score_run(run_dir)
    run_rows = rows(run_dir / "test_scores.csv")
    assert scores.source == "the run's test files" and len(scores.vocalisations) >= len(run_rows)
    (name,) = scores.scores
    ours = [dict(zip(COLUMNS, map(str, row))) for row in scores.rows()][: len(run_rows)]
    for mine, theirs in zip(ours, run_rows):  # the run scores the first --n_test_vocs of the same order
        assert mine["member"] == name and (mine["file"], mine["onset_s"]) == (theirs["file"], theirs["onset_s"])
        np.testing.assert_allclose(float(mine["score"]), float(theirs["score"]), atol=1e-4)


def test_evaluate_on_other_recordings_scores_every_member(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    out = tmp_path / "day2"
    result = subprocess.run([sys.executable, "-m", "ouroboros_jax.evaluate", f"--run_dir={run_dir}",
                             f"--data_dir={example_data_dir()}", "--syllables=c", "--members=all",
                             f"--out_dir={out}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    table = rows(out / "scores.csv")
    # Every type-c syllable of the bundled finch has a lead-in of at least 20 ms: all 68.
    assert summary["n_vocalisations"] == 68 and summary["n_files"] == 13 and summary["syllables"] == "c"
    assert sorted(summary["members"]) == ["seed0", "seed1"] and len(table) == 2 * 68
    for member, result_ in summary["members"].items():
        scores = [float(r["score"]) for r in table if r["member"] == member]
        np.testing.assert_allclose(result_["summary"]["mean"], np.mean(scores), rtol=1e-12)
    assert f"wrote {out / 'scores.csv'}" in result.stdout
    page = (out / "report.html").read_text()  # every vocalisation scored, each member's verdict (tests/test_report.py)
    assert page.count('<section class="vocalisation"') == 68 and page.count('<tr class="item ') == 2 * 3


def test_evaluate_refuses_what_it_cannot_score(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    result = subprocess.run([sys.executable, "-m", "ouroboros_jax.evaluate", f"--run_dir={tmp_path}"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --run_dir={tmp_path}: no run.json")
    with pytest.raises(InputError, match=r"^--syllables=zz: the run's test files hold no cold-start vocalisation"):
        score_run(run_dir, syllables="zz")
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "a.wav", np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    (other / "a.txt").write_text("0.3 0.4 c\n")
    with pytest.raises(InputError, match=r"a\.wav: sampled at 16000 Hz but the run .* at 32000 Hz; resample"):
        score_run(run_dir, data_dir=str(other))
    with pytest.raises(InputError, match=r"^--members=some: must be one of selected, all"):
        score_run(run_dir, members="some")


def test_pass_rate_reads_a_run_s_acceptance_items(tiny_run):
    spec = importlib.util.spec_from_file_location("pass_rate", REPO / "experiments" / "pass_rate.py")
    pass_rate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pass_rate)
    run_dir, manifest = tiny_run
    items = pass_rate.acceptance(run_dir)
    test = manifest["selected_test_summary"]
    # The tiny run trained 2 epochs: its bounded fraction "by epoch 10" is its last epoch's.
    info = json.loads((run_dir / "run.json").read_text())
    steps, bounded = read_scalars(run_dir / member_folder(info, manifest["selected_seed"]))["Val/bounded_frac"]
    assert items["val_bounded_epoch10"] == bounded[steps == steps.max()][0]
    assert items["val_spec_corr"] == manifest["selected_val_breakdown"]["spec_corr"]
    assert (items["test_autonomy_median"], items["n_test_vocs"]) == (test["median"], 2)
    assert items["passes"] == (items["val_bounded_epoch10"] >= 0.9 and items["val_spec_corr"] >= 0.5
                               and test["median"] > 0)
    assert items["listening_passes"] == (test["median_lead_in_db"] <= -30 and abs(test["median_onset_delay_ms"]) <= 10)
