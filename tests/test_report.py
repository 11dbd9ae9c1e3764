"""The report page (report.html) as a user sees it: the tiny run's own, made again by the report
command, and an evaluation's; in Chromium when it is installed (docs/figures.md, "The run report")."""

import base64
import csv
import html.parser
import io
import json
import logging
import math
import pathlib
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from matplotlib import image as mpimg

from ouroboros_jax import settings
from ouroboros_jax.data import load_training_data
from ouroboros_jax.errors import InputError
from ouroboros_jax.scoring.evaluation import correct
from ouroboros_jax.training import run as run_module
from ouroboros_jax.training.acceptance import acceptance
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.events import read_scalars
from ouroboros_jax.training.report_page import SCORE_COLUMNS
from ouroboros_jax.training.run_dir import member_folder
from ouroboros_jax.training.run_report import remake_run_report, write_evaluation_report
from ouroboros_jax.training.run_scores import score_run
from tests.test_run import REPO

CHROMIUM = pathlib.Path("/usr/bin/chromium")
SECTIONS = ["verdict", "vocalisations", "members", "training", "data", "settings"]
_VOID = {"img", "meta", "br", "hr", "input", "source", "link", "wbr"}


class Element:
    """A parsed HTML element: tag, attributes, children and its text."""

    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.children, self.own_text = tag, attrs, [], []

    @property
    def text(self) -> str:
        return "".join(self.own_text) + "".join(c.text for c in self.children)

    def all(self, tag: str, cls: str | None = None) -> list["Element"]:
        """Every descendant `tag` (with class `cls`), in document order."""
        found = []
        for child in self.children:
            if child.tag == tag and (cls is None or cls in child.attrs.get("class", "").split()):
                found.append(child)
            found.extend(child.all(tag, cls))
        return found


class _Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.root = Element("document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].own_text.append(data)


def parsed(path: pathlib.Path) -> Element:
    parser = _Parser()
    parser.feed(path.read_text())
    parser.close()
    assert [e.tag for e in parser.stack] == ["document"], "unclosed elements"
    return parser.root


def embedded(src: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert src.startswith(prefix), src[:40]
    return base64.b64decode(src[len(prefix):], validate=True)


def decoded_image(src: str) -> np.ndarray:
    data = embedded(src, "image/png")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return mpimg.imread(io.BytesIO(data), format="png")


def decoded_audio(src: str) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(embedded(src, "audio/wav")), dtype="int16")
    assert audio.ndim == 1  # mono
    return audio, rate


def rows(path: pathlib.Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def number(text: str) -> float:
    return math.nan if text in ("", "None") else float(text)


@pytest.fixture(scope="module")
def run_page(tiny_run):
    run_dir, manifest = tiny_run
    return run_dir, manifest, parsed(run_dir / "report.html")


@pytest.fixture(scope="module")
def run_data(tiny_run):
    run_dir, _ = tiny_run
    info = json.loads((run_dir / "run.json").read_text())
    config = RunConfig.from_record(info["config"], str(run_dir), info["n_epochs"])
    return info, config, load_training_data(config.data, config.sampler, config.seed)


def test_the_run_s_page_is_one_file_with_everything_embedded(run_page):
    run_dir, _, page = run_page
    text = (run_dir / "report.html").read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert [h.attrs["id"] for h in page.all("h2")] == SECTIONS
    sources = [e.attrs["src"] for e in page.all("img") + page.all("audio")]
    assert sources and all(s.startswith("data:") for s in sources)
    for img in page.all("img"):
        height, width, _ = decoded_image(img.attrs["src"]).shape
        assert height > 100 and width > 300


def test_every_vocalisation_is_shown_with_its_audio_and_recorded_scores(run_page, run_data):
    run_dir, manifest, page = run_page
    info, _, data = run_data
    sections = page.all("section", "vocalisation")
    n_val, n_test = (manifest[f"selected_{r}_summary"]["n_vocalisations"] for r in ("val", "test"))
    assert [s.attrs["data-role"] for s in sections] == ["validation"] * n_val + ["test"] * n_test
    recorded = rows(run_dir / "val_scores.csv") + rows(run_dir / "test_scores.csv")
    windows = data.val_vocalisations.windows() + data.test_vocalisations.windows()
    rate = int(info["sample_rate"])
    for section, row, window in zip(sections, recorded, windows, strict=True):
        assert row["file"] in section.all("h3")[0].text
        (img,) = section.all("img")
        assert decoded_image(img.attrs["src"]).shape[0] > 100
        length = (round(float(row["offset_s"]) * rate) - round(float(row["onset_s"]) * rate)
                  + round(float(row["lead_in_ms"]) * rate / 1000))
        assert int(section.attrs["data-samples"]) == length == len(window)
        audios = [decoded_audio(a.attrs["src"]) for a in section.all("audio")]
        assert len(audios) + len(section.all("p", "missing")) == 3
        assert len(audios) == 3 or row["bounded"] == "False"
        for audio, audio_rate in audios:
            assert (len(audio), audio_rate) == (length, rate)
        target = correct(window)  # the target as scored, at its level (16-bit)
        np.testing.assert_allclose(audios[0][0] / 32767, target, atol=1.01 / 32767)
        cells = {td.attrs["data-key"]: td.attrs["data-value"] for td in section.all("td") if "data-key" in td.attrs}
        assert cells == {column: row[column] for column, _, _ in SCORE_COLUMNS}


def test_the_verdict_is_the_run_s_recorded_numbers_item_by_item(run_page):
    run_dir, manifest, page = run_page
    items = {tr.attrs["data-key"]: tr for tr in page.all("tr", "item")}
    assert list(items) == ["val_bounded_epoch10", "val_spec_corr", "test_autonomy_median", "test_lead_in_db",
                           "test_onset_delay_ms"]
    info = json.loads((run_dir / "run.json").read_text())
    steps, bounded = read_scalars(run_dir / member_folder(info, manifest["selected_seed"]))["Val/bounded_frac"]
    test = manifest["selected_test_summary"]
    expected = {"val_bounded_epoch10": bounded[steps == steps.max()][0],  # 2 epochs: "by epoch 10" is the last
                "val_spec_corr": manifest["selected_val_breakdown"]["spec_corr"],
                "test_autonomy_median": test["median"], "test_lead_in_db": test["median_lead_in_db"],
                "test_onset_delay_ms": test["median_onset_delay_ms"]}
    expected = {k: math.nan if v is None else v for k, v in expected.items()}
    bars = {"val_bounded_epoch10": lambda x: x >= 0.9, "val_spec_corr": lambda x: x >= 0.5,
            "test_autonomy_median": lambda x: x > 0, "test_lead_in_db": lambda x: x <= -30,
            "test_onset_delay_ms": lambda x: abs(x) <= 10}
    for key, tr in items.items():
        np.testing.assert_equal(float(tr.attrs["data-value"]), expected[key])
        passed = bool(bars[key](expected[key]))
        assert tr.attrs["data-passed"] == str(passed).lower()
        assert tr.all("td")[-1].text == ("pass" if passed else "fail")
    record = acceptance(run_dir)  # experiments/pass_rate.py judges by the same items
    measurable = all(bars[k](expected[k]) for k in list(bars)[:3])
    assert record["passes"] == measurable
    assert f"Measurable bar: {'pass' if measurable else 'fail'}" in page.all("p", "verdict")[0].text


def test_the_members_data_and_settings_are_the_run_s(run_page, run_data):
    run_dir, manifest, page = run_page
    info, config, data = run_data
    (members,) = page.all("table", "members")
    recorded = rows(run_dir / "seed_cv.csv")
    table = [[td.text for td in tr.all("td")] for tr in members.all("tbody")[0].all("tr")]
    assert len(table) == len(recorded) == len(info["seeds"])
    assert [r[0] for r in table if r[1] == "selected"] == [manifest["selected_member"]["name"]]
    values = [td.attrs["data-value"] for td in members.all("td") if td.attrs.get("data-key") == "val_autonomy"]
    assert values == [r["val_autonomy"] for r in recorded]
    (splits,) = page.all("table", "data")
    files = {tr.all("td")[0].text: int(tr.all("td")[1].text) for tr in splits.all("tbody")[0].all("tr")}
    assert files == {"training": manifest["n_train_files"], "validation": manifest["n_val_files"],
                     "test": manifest["n_test_files"]}
    assert f"c ({data.syllable_counts['val']['c']})" in splits.text
    (shown,) = page.all("table", "settings")
    flags = {tr.all("td")[0].text: tr.all("td")[1].text for tr in shown.all("tbody")[0].all("tr")}
    texts = {s.flag: s.text for s in settings.settings_of(RunConfig)}  # each as its flag takes it
    assert flags == {f"--{k}": str(texts[k](v) if texts[k] else v) for k, v in settings.flat(config).items()}
    assert (flags["--spec_configs"], flags["--n_val_vocs"]) == ("32,8;64,16", "2")
    (environment,) = page.all("table", "environment")
    rows_shown = {tr.all("td")[0].text: tr.all("td")[1].text for tr in environment.all("tbody")[0].all("tr")}
    assert rows_shown["version of jax"] == manifest["versions"]["jax"]
    assert rows_shown["sample rate (Hz)"] == str(info["sample_rate"])
    assert rows_shown["device platform"] == manifest["device"]["platform"]


def test_the_report_command_makes_the_same_page_again(run_page, tmp_path):
    run_dir, _, page = run_page
    out = remake_run_report(run_dir, out=tmp_path / "again.html")
    again = parsed(out)

    def numbers(p):
        return ([tr.attrs["data-value"] for tr in p.all("tr", "item")],
                [(s.attrs["data-samples"], [td.attrs.get("data-value") for td in s.all("td")])
                 for s in p.all("section", "vocalisation")])

    assert numbers(again) == numbers(page)
    def targets(p):  # each vocalisation's first player, the target
        return [s.all("audio")[0].attrs["src"] for s in p.all("section", "vocalisation")]

    assert targets(again) == targets(page)  # the same vocalisations, cut again from the run's data
    for audio in again.all("audio"):
        assert decoded_audio(audio.attrs["src"])[1] == 32000
    assert not (tmp_path / ".again.html.tmp").exists()


def test_the_report_command_refuses_what_is_not_a_finished_run(tiny_run, tmp_path):
    result = subprocess.run([sys.executable, "-m", "ouroboros_jax", "report", f"--run_dir={tmp_path}"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: --run_dir={tmp_path}: no run.json; pass the --out_dir of a training run"]
    assert result.stderr.strip().splitlines()[-1].startswith("error:")
    run_dir, _ = tiny_run
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run_dir / "run.json", unfinished)
    with pytest.raises(InputError, match=r"no selected_model\.json yet: the run has not finished"):
        remake_run_report(unfinished)
    with pytest.raises(InputError, match=r"^--out=.*: the directory .* does not exist$"):
        remake_run_report(run_dir, out=tmp_path / "no" / "report.html")
    assert list(unfinished.iterdir()) == [unfinished / "run.json"]


def test_a_report_that_fails_is_a_warning_and_leaves_the_run_s_outputs(tiny_run, monkeypatch, caplog):
    run_dir, _ = tiny_run
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}

    def broken(*args):
        raise ValueError("a bug")

    monkeypatch.setattr(run_module, "write_run_report", broken)
    with caplog.at_level(logging.WARNING):
        run_module._report(SimpleNamespace(out_dir=run_dir, data=None), np.zeros((2, 8)), np.zeros((2, 8)))
    (warning,) = [r.getMessage() for r in caplog.records if "run report" in r.getMessage()]
    assert "ValueError: a bug" in warning and f"python -m ouroboros_jax.report --run_dir={run_dir}" in warning
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_an_evaluation_s_page_shows_what_it_scored(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    scores = score_run(run_dir, syllables="c")  # the test files' type-c syllables: a few, to keep the test short
    page = parsed(write_evaluation_report(tmp_path, scores))
    (name,) = scores.scores
    summary = scores.summary()["members"][name]["summary"]
    sections = page.all("section", "vocalisation")
    assert len(sections) == len(scores.vocalisations) and page.all("h3")[0].text == name
    values = {tr.attrs["data-key"]: float(tr.attrs["data-value"]) for tr in page.all("tr", "item")}
    np.testing.assert_equal(values, {"test_autonomy_median": summary["median"],
                                     "test_lead_in_db": summary["median_lead_in_db"],
                                     "test_onset_delay_ms": summary["median_onset_delay_ms"]})
    for section, segment, length in zip(sections, scores.scores[name].segments, scores.vocalisations.lengths):
        assert number(section.all("td")[0].attrs["data-value"]) == pytest.approx(segment.score, nan_ok=True)
        for audio in section.all("audio"):
            assert decoded_audio(audio.attrs["src"])[0].shape == (length,)


_CHECKS = """<script>
window.addEventListener("load", async () => {
  const audios = await Promise.all([...document.querySelectorAll("audio")].map(a => new Promise(done => {
    const report = () => done({duration: a.duration, error: a.error ? a.error.code : null, ready: a.readyState});
    if (a.readyState >= 1 || a.error) report();
    else { a.addEventListener("loadedmetadata", report); a.addEventListener("error", report); }
  })));
  const images = [...document.images].map(i => ({complete: i.complete, width: i.naturalWidth}));
  const out = document.createElement("pre");
  out.id = "checks";
  out.textContent = JSON.stringify({images, audios});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed (apt-get install chromium)")
def test_the_page_loads_in_a_browser_with_every_image_and_sound(run_page, tmp_path):
    run_dir, _, page = run_page
    probe = tmp_path / "probe.html"  # a copy with a test-only script that writes its checks into the page
    probe.write_text((run_dir / "report.html").read_text().replace("</body>", _CHECKS + "</body>"))
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    consoled = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert result.returncode == 0 and consoled == []
    checks = parsed_checks(result.stdout)
    assert len(checks["images"]) == len(page.all("img")) and all(i["complete"] and i["width"] > 0
                                                                  for i in checks["images"])
    samples = [int(s.attrs["data-samples"]) for s in page.all("section", "vocalisation")
               for _ in s.all("audio")]
    assert len(checks["audios"]) == len(samples)
    for audio, n in zip(checks["audios"], samples):
        assert audio["error"] is None and audio["ready"] >= 1
        assert audio["duration"] == pytest.approx(n / 32000, abs=1e-3)


def parsed_checks(dom: str) -> dict:
    parser = _Parser()
    parser.feed(dom)
    (pre,) = [p for p in parser.root.all("pre") if p.attrs.get("id") == "checks"]
    return json.loads(pre.text)
