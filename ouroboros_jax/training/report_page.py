"""The report page (report.html): one self-contained HTML file to look at and listen to a model.

Pure functions from arrays, scores and tables to HTML text; no files. Figures are PNGs and audio
16-bit mono WAVs at the recording's rate, both embedded as base64 data URIs, so the page needs no
network, no script and no other file: it opens from disk in any browser and can be mailed as it
is. `training.run_report` gathers what a run or an evaluation shows and writes the page.

The vocalisation sections show what the scores measured: the target and the model's raw output
detrended (`evaluation.correct`) as the score detrends them, their spectrograms on one colour
range (`figures.spectrogram_pair_figure`), and the deployed generation rescaled to the target's
level (`evaluation.deployed`); the score components are those the run or evaluation recorded.
"""

import base64
import dataclasses
import html
import math

import numpy as np

from ouroboros_jax.scoring.evaluation import correct, deployed
from ouroboros_jax.training.acceptance import MAX_LEAD_IN_DB, MAX_ONSET_DELAY_MS, Item, number
from ouroboros_jax.training.figures import spectrogram_pair_figure
from ouroboros_jax.training.outputs import WAV_PEAK, png_bytes, wav_bytes

REPORT_DPI = 80
"""Resolution of the page's figures: readable on a screen, small in the file."""

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
div.wide { overflow-x: auto; } table.members td:nth-child(-n+2) { white-space: nowrap; }
.pass { background: #e3f4e1; } .fail { background: #fbe3e1; }
.verdict { font-weight: bold; }
img { max-width: 100%; height: auto; display: block; }
section.vocalisation { border-top: 1px solid #eee; padding-top: 0.5em; }
.players { display: flex; flex-wrap: wrap; gap: 1em; }
.players figure { margin: 0; } .players figcaption { font-size: 0.85em; color: #555; }
.missing { color: #a00; font-size: 0.9em; }
nav a { margin-right: 1em; }
"""

SCORE_COLUMNS = (  # (column of VOCALISATION_COLUMNS, heading, digits)
    ("score", "score", 3), ("bounded", "bounded", None), ("spec_corr", "spec_corr", 3), ("amp_pen", "amp_pen", 3),
    ("pitch_pen", "pitch_pen", 3), ("lead_in_db", "model lead-in (dB)", 1),
    ("target_lead_in_db", "target lead-in (dB)", 1), ("onset_delay_ms", "onset delay (ms)", 1),
)


def formatted(value, digits: int | None = 3) -> str:
    """A value for a reader: numbers to `digits` decimals, "n/a" where undefined, booleans yes/no."""
    if isinstance(value, (bool, np.bool_)) or value in ("True", "False"):
        return "yes" if value in (True, "True") else "no"
    try:
        x = number(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "n/a"
    return f"{x:.{digits}f}" if digits is not None else f"{x:g}"


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image(figure, alt: str, dpi: int = REPORT_DPI) -> str:
    """An <img> of a matplotlib `Figure`, embedded as a PNG."""
    return f'<img src="{data_uri("image/png", png_bytes(figure, dpi))}" alt="{html.escape(alt)}">'


def player(label: str, audio: np.ndarray, sample_rate: int) -> str:
    """An audio player of `audio` (n,) at its level (full scale 1.0), or a line saying why there is none."""
    audio = np.asarray(audio, dtype=np.float64)
    if not np.isfinite(audio).all():
        return f'<p class="missing">{html.escape(label)}: diverged (not finite), nothing to play</p>'
    peak = float(np.abs(audio).max())
    note = (" (silent)" if peak == 0 else
            f" (peak {peak:.2f} above full scale: scaled down to {WAV_PEAK})" if peak > 1.0 else "")
    source = data_uri("audio/wav", wav_bytes(audio, sample_rate, peak_normalise=False))
    return (f'<figure><figcaption>{html.escape(label + note)}</figcaption>'
            f'<audio controls preload="auto" src="{source}"></audio></figure>')


class Html(str):
    """Text that is HTML already (a `cell`), so `table` does not escape it."""


def cell(value, digits: int | None = 3, cls: str = "", key: str = "") -> Html:
    """A <td> of a value (`formatted`); numbers right-aligned, `key` and the raw value as data attributes."""
    try:
        number(value)
        cls = f"number {cls}".strip()
    except (TypeError, ValueError):
        pass
    attributes = f' class="{cls}"' if cls else ""
    if key:
        attributes += f' data-key="{html.escape(key)}" data-value="{html.escape(str(value))}"'
    return Html(f"<td{attributes}>{html.escape(formatted(value, digits))}</td>")


def table(columns, rows, cls: str = "") -> str:
    """A <table>: `columns` headings; each row a list of cells, each a `cell` or a value shown as text."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(c if isinstance(c, Html) else f"<td>{html.escape(str(c))}</td>" for c in row)
                   + "</tr>" for row in rows)
    attributes = f' class="{cls}"' if cls else ""
    return f'<div class="wide"><table{attributes}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def verdict_table(items: list[Item]) -> str:
    """The acceptance items, numbered, each with its value, its bar and pass/fail (its key, value and
    outcome also as data attributes of its row)."""
    rows = []
    for k, item in enumerate(items, 1):
        outcome = "pass" if item.passed else "fail"
        digits = 1 if item.what.endswith(("(dB)", "(ms)")) else 3
        what = item.what + (" (listening)" if item.listening else "")
        rows.append(f'<tr class="item {outcome}" data-key="{item.key}" data-value="{item.value!r}" '
                    f'data-passed="{str(item.passed).lower()}"><td>{k}</td><td>{html.escape(what)}</td>'
                    f'{cell(item.value, digits)}<td>{html.escape(item.bar)}</td>'
                    f'<td class="verdict">{outcome}</td></tr>')
    head = "".join(f"<th>{c}</th>" for c in ("#", "item", "value", "bar", "verdict"))
    return f'<table class="verdict-items"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


@dataclasses.dataclass(frozen=True)
class Heard:
    """One scored vocalisation, as the page shows it.

    Attributes:
      role: "validation" or "test".
      index: its index among the role's vocalisations.
      target: (n,) the raw window, lead-in included.
      output: (n,) the model's raw autonomous output on it (may be non-finite).
      row: its recorded scores, `records.VOCALISATION_COLUMNS` -> value (a CSV's strings or numbers).
    """

    role: str
    index: int
    target: np.ndarray
    output: np.ndarray
    row: dict


def vocalisation_section(heard: Heard, count: int, sample_rate: int) -> str:
    """A vocalisation's section: where it is from, the spectrograms, three players, its scores."""
    row = heard.row
    target = correct(heard.target)
    raw, rescaled = (deployed(heard.output[None], heard.target[None], rescale=r)[0] for r in (False, True))
    title = (f"{heard.role} {heard.index + 1} of {count}: {row['file']}, syllable at {formatted(row['onset_s'])}-"
             f"{formatted(row['offset_s'])} s, lead-in {formatted(row['lead_in_ms'], 1)} ms")
    figure = spectrogram_pair_figure(target, raw, sample_rate, names=("target", "model, raw autonomous output"))
    players = "".join(player(label, audio, sample_rate) for label, audio in (
        ("target", target), ("model, raw", raw), ("model, rescaled to the target's level", rescaled)))
    scores = [cell(row[c], digits, _listening_class(c, row[c]), key=c) for c, _, digits in SCORE_COLUMNS]
    return (f'<section class="vocalisation" id="{heard.role}-{heard.index + 1}" data-role="{heard.role}" '
            f'data-samples="{len(heard.target)}"><h3>{html.escape(title)}</h3>'
            f"{image(figure, f'spectrograms of {heard.role} vocalisation {heard.index + 1}')}"
            f'<div class="players">{players}</div>'
            f'{table([h for _, h, _ in SCORE_COLUMNS], [scores], "scores")}</section>')


def _listening_class(column: str, value) -> str:
    """pass/fail shading of a vocalisation's score, lead-in and onset against the bar's thresholds."""
    x = number(value) if column in ("score", "lead_in_db", "onset_delay_ms") else math.nan
    if math.isnan(x):
        return ""
    passed = {"score": x > 0, "lead_in_db": x <= MAX_LEAD_IN_DB, "onset_delay_ms": abs(x) <= MAX_ONSET_DELAY_MS}
    return "pass" if passed[column] else "fail"


def page(title: str, intro: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole page: `title`, an `intro` (HTML), a table of contents and the `sections`, each
    (id, heading, HTML body), in order."""
    nav = "".join(f'<a href="#{sid}">{html.escape(heading)}</a>' for sid, heading, _ in sections)
    body = "".join(f'<h2 id="{sid}">{html.escape(heading)}</h2>{content}' for sid, heading, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body><header>"
            f"<h1>{html.escape(title)}</h1>{intro}<nav>{nav}</nav></header>\n{body}\n</body></html>\n")
