"""``runs/report.html``: the report as one self-contained page (pictures inline as data URIs, no network, no server).

It opens from a Kaggle notebook's output or a laptop. The leaderboard sorts by any column on a click (a few lines of
inline JavaScript; each cell's ``data-sort`` holds the value it sorts by). Everything else is plain HTML: the
journal with config differences, each run's curves, fold scores, confusion matrix or per-class AP, error gallery,
confused pairs and likely label errors, and the CV-vs-leaderboard plot with the submissions behind it.
"""

from __future__ import annotations

import base64
from datetime import datetime
from html import escape
from pathlib import Path

import pandas as pd

from kagglecv import __version__
from kagglecv.data.outcomes import Entry
from kagglecv.presentation.tables import format_params

LABEL_ISSUES_SHOWN = 10

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1280px;
       padding: 0 16px; color: #1d2330; }
h1 { font-size: 24px; } h2 { font-size: 20px; border-bottom: 2px solid #dde3ee; padding-bottom: 4px; margin-top: 40px; }
h3 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #dde3ee; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f5fa; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th:hover { background: #e3e9f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td { background: #fde8e8; }
img { max-width: 100%; height: auto; margin: 6px 0; border: 1px solid #eef1f6; }
.muted { color: #667085; } .change { font-family: ui-monospace, monospace; font-size: 12px; }
details > summary { cursor: pointer; font-weight: 600; margin: 6px 0; }
"""

SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (header, column) {
    header.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var ascending = header.dataset.order !== "asc";
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.sort, y = b.cells[column].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      table.querySelectorAll("th").forEach(function (other) { delete other.dataset.order; });
      header.dataset.order = ascending ? "asc" : "desc";
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def render_html(ranked: dict[str, list[Entry]], competitions: dict[str, list[Entry]], points: list,
                correlation: float | None,
                lb_picture: Path | None, full_fits: list[dict] = ()) -> str:
    """The whole page: one section per competition, then CV against the leaderboard."""
    body = [f"<h1>kagglecv report</h1><p class='muted'>{escape(datetime.now().isoformat(timespec='seconds'))}, "
            f"kagglecv {escape(__version__)}</p>"]
    for name, leaderboard in ranked.items():
        body.append(f"<h2>{escape(name)}</h2>")
        body.append(_leaderboard(leaderboard))
        body.append(_journal(competitions[name]))
        body += [_run_section(entry) for entry in leaderboard]
    if full_fits:
        body.append(_full_fits(full_fits))
    body.append(_cv_vs_leaderboard(points, correlation, lb_picture))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>kagglecv report</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}<script>{SORT_SCRIPT}</script></body></html>\n")


def _cell(text, sort=None, numeric: bool = False) -> str:
    sort_value = text if sort is None else sort
    kind = " class='num'" if numeric else ""
    return f"<td{kind} data-sort='{escape(str(sort_value), quote=True)}'>{escape(str(text))}</td>"


def _leaderboard(leaderboard: list[Entry]) -> str:

    headers = ["#", "experiment", "kind", "backbone", "parameters", "size", "epochs", "CV", "folds mean", "folds std",
               "public LB", "train minutes"]
    rows = []
    for rank, entry in enumerate(leaderboard, start=1):
        score = entry.score
        rows.append("<tr>" + "".join([
            _cell(rank, numeric=True), _cell(entry.name), _cell(entry.kind), _cell(entry.backbone),
            _cell(format_params(entry.params), entry.params or 0, numeric=True),
            _cell(entry.img_size or "", entry.img_size or 0, numeric=True),
            _cell(entry.epochs or "", entry.epochs or 0, numeric=True),
            _cell(f"{score.metric} {score.overall:.4f}", score.overall, numeric=True),
            _cell(f"{score.fold_mean:.4f}", score.fold_mean, numeric=True),
            _cell(f"{score.fold_std:.4f}", score.fold_std, numeric=True),
            _cell(entry.public, entry.public or "", numeric=True),
            _cell(f"{entry.train_seconds / 60:.1f}" if entry.train_seconds else "", entry.train_seconds, numeric=True),
        ]) + "</tr>")
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    return (f"<h3>Leaderboard</h3><p class='muted'>Click a column to sort.</p><table class='sortable leaderboard'>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _journal(entries: list[Entry]) -> str:
    rows = []
    for entry in sorted(entries, key=lambda entry: entry.created):
        change = "<br>".join(escape(line) for line in entry.change)
        rows.append(f"<tr><td>{escape(entry.created[:16].replace('T', ' '))}</td><td>{escape(entry.name)}</td>"
                    f"<td>{escape(entry.notes or '')}</td><td class='change'>{change}</td>"
                    f"<td class='num'>{escape(entry.score.metric)} {entry.score.overall:.4f}</td>"
                    f"<td class='num'>{escape(entry.public)}</td></tr>")
    return ("<h3>Journal</h3><table class='journal'><thead><tr><th>date</th><th>experiment</th><th>motivation</th>"
            f"<th>change (config differences)</th><th>result</th><th>public LB</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _run_section(entry: Entry) -> str:
    score = entry.score
    others = ", ".join(f"{escape(name)} {value:.4f}" for name, value in list(score.other_metrics.items())[:8])
    parts = [f"<h3 id='run-{escape(entry.name, quote=True)}'>{escape(entry.name)}</h3>",
             f"<p>{escape(score.metric)} <b>{score.overall:.4f}</b> on {score.rows} OOF rows; also: {others}</p>"]
    if entry.teaching:
        parts.append("<p>Pseudo-labels:</p><ul>" + "".join(f"<li>{escape(line)}</li>" for line in entry.teaching)
                     + "</ul>")
    parts += [_image(picture, picture.stem) for picture in entry.pictures]
    parts.append(_analysis(entry))
    return "<section class='run'>" + "".join(parts) + "</section>"


def _full_fits(fits: list[dict]) -> str:
    """Full-data refits: listed without a CV score of their own, beside their CV run's."""
    header = "".join(f"<th>{name}</th>" for name in ("refit", "CV run", "CV run's score", "epochs", "weights",
                                                      "train seconds", "public LB"))
    rows = "".join("<tr>" + "".join(_cell(fit[key]) for key in ("name", "cv_run", "cv", "epochs", "source")) +
                   _cell(f"{fit['seconds']:.0f}", numeric=True) + _cell(fit["public"]) + "</tr>" for fit in fits)
    return ("<h2>Full-data refits (test predictions only, no CV score)</h2>"
            f"<table><thead><tr>{header}</tr></thead><tbody>{rows}</tbody></table>")


def _analysis(entry: Entry) -> str:
    if entry.analysis_error:
        return f"<p class='muted'>Error analysis unavailable: {escape(entry.analysis_error)}</p>"
    found = entry.analysis
    if not found:
        return ""
    parts = [f"<p>Error analysis: <b>{found['label_issues']}</b> likely label errors (cleanlab) in "
             f"<code>{escape(entry.name)}/{escape(found['label_issues_file'])}</code>; "
             f"{len(found['duplicate_conflicts'])} near-duplicate pairs with different labels "
             f"<span class='muted'>({escape(found['duplicates_checked'])})</span>.</p>"]
    parts += [_image(entry.path / name, Path(name).stem) for name in found["pictures"]]
    parts.append(_label_issue_rows(entry))
    return "".join(parts)


def _label_issue_rows(entry: Entry) -> str:

    path = entry.path / entry.analysis["label_issues_file"]
    if not path.is_file():
        return ""
    issues = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=LABEL_ISSUES_SHOWN)
    if issues.empty:
        return ""
    rows = "".join("<tr>" + "".join(f"<td>{escape(str(value))}</td>" for value in row) + "</tr>"
                   for row in issues.itertuples(index=False))
    head = "".join(f"<th>{escape(column)}</th>" for column in issues.columns)
    return (f"<details><summary>The {len(issues)} most likely label errors</summary><table class='label-issues'>"
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></details>")


def _cv_vs_leaderboard(points: list, correlation: float | None, picture: Path | None) -> str:
    if not points:
        return ("<h2>CV against the leaderboard</h2><p class='muted'>No leaderboard scores recorded yet: after a "
                "submission, <code>kagglecv lb NAME --public SCORE</code>.</p>")
    r = "n/a" if correlation is None else f"{correlation:.3f}"
    rows = "".join(f"<tr class='{'flagged' if point.flagged else ''}'><td>{escape(point.file)}</td>"
                   f"<td>{escape(point.run)}</td><td class='num'>{point.cv:.4f}</td><td class='num'>{point.public:.4f}"
                   f"</td><td class='num'>{point.gap:+.4f}</td><td>{'out of line' if point.flagged else ''}</td></tr>"
                   for point in points)
    return (f"<h2>CV against the leaderboard</h2><p>Pearson correlation of CV and public score: <b>{r}</b> over "
            f"{len(points)} submissions.</p>" + (_image(picture, "cv vs leaderboard") if picture else "") +
            "<table class='submissions'><thead><tr><th>file</th><th>run</th><th>CV</th><th>public</th>"
            f"<th>public - CV</th><th></th></tr></thead><tbody>{rows}</tbody></table>")


def _image(path: Path, alt: str) -> str:
    """A PNG inline as a data URI, so the page needs no other file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img alt='{escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"
