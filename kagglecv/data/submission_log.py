"""``submissions/log.csv``: every submission written, its CV, and the leaderboard score the user read on Kaggle.

``submit`` appends a line (time, file, run, metric, cv, sha256); ``kagglecv lb NAME --public X`` (``stages/lb.py``)
fills in the public (and private) score of the latest line of that file. Nothing goes online: the user reads the score on
Kaggle and types it in. ``cv_vs_leaderboard`` turns the log into the report's CV-vs-public comparison.

A gap (public - CV) out of line with the others is flagged by the modified z-score of Iglewicz & Hoaglin
("How to Detect and Handle Outliers", 1993): 0.6745 (gap - median gap) / MAD above 3.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import output_lock, sha256_file, write_csv
from kagglecv.data.table import read_csv_strings

LOG_NAME = "log.csv"
COLUMNS = ["time", "file", "run", "metric", "cv", "sha256", "public", "private"]
OUTLIER_Z = 3.5
MIN_MAD = 1e-4     # identical gaps would make every other gap infinitely far
LOCK_SECONDS = 30


def log_path(submissions_dir: Path) -> Path:
    return Path(submissions_dir) / LOG_NAME


def append_submission(submission: Path, run_name: str, metric: str | None, cv: float | None) -> None:
    """Add a line for ``submission`` (written just now) to the log of its folder."""
    path = log_path(submission.parent)
    row = {"time": datetime.now().isoformat(timespec="seconds"), "file": submission.name, "run": run_name,
           "metric": metric or "", "cv": "" if cv is None else f"{cv:.6f}", "sha256": sha256_file(submission),
           "public": "", "private": ""}
    with log_lock(path):
        log = read_log(path)
        write_csv(path, pd.concat([log, pd.DataFrame([row], columns=COLUMNS)], ignore_index=True))


def read_log(path: Path) -> pd.DataFrame:
    """The log as strings (empty when there is none yet); a file that is not a log is an error naming it."""
    if not Path(path).is_file():
        return pd.DataFrame(columns=COLUMNS)
    log = read_csv_strings(path)
    missing = [column for column in COLUMNS if column not in log.columns]
    if missing:
        raise KagglecvError(f"{path}: not a kagglecv submission log (columns {', '.join(missing)} missing)")
    return log[COLUMNS]


@dataclass
class LeaderboardPoint:
    file: str
    run: str
    cv: float
    public: float
    gap: float
    flagged: bool


def cv_vs_leaderboard(log: pd.DataFrame) -> tuple[list[LeaderboardPoint], float | None]:
    """Submissions with both a CV and a public score, each flagged when its gap is out of line, and the Pearson
    correlation of CV and public score (None below 3 points or without spread)."""
    scored = log[(log["cv"] != "") & (log["public"] != "")]
    cv, public = scored["cv"].astype(float).to_numpy(), scored["public"].astype(float).to_numpy()
    gaps = public - cv
    flagged = np.zeros(len(gaps), dtype=bool)
    if len(gaps) >= 4:
        median = np.median(gaps)
        mad = max(float(np.median(np.abs(gaps - median))), MIN_MAD)
        flagged = np.abs(0.6745 * (gaps - median) / mad) > OUTLIER_Z
    correlation = None
    if len(cv) >= 3 and np.std(cv) > 0 and np.std(public) > 0:
        correlation = float(np.corrcoef(cv, public)[0, 1])
    points = [LeaderboardPoint(file, run, float(x), float(y), float(gap), bool(flag))
              for file, run, x, y, gap, flag in zip(scored["file"], scored["run"], cv, public, gaps, flagged)]
    return points, correlation


def latest_public_by_run(log: pd.DataFrame) -> dict[str, str]:
    """The public score of each run's latest submission that has one."""
    scored = log[log["public"] != ""]
    return dict(zip(scored["run"], scored["public"]))


def log_lock(path: Path):
    """The log's lock, waited for: submissions from parallel jobs take turns."""
    return output_lock(path.with_name(f".{path.name}.lock"), str(path), wait=LOCK_SECONDS)
