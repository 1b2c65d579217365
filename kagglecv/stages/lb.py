"""``kagglecv lb NAME --public X [--private Y]``: the leaderboard score the user read on Kaggle, recorded beside the
submission's CV in ``submissions/log.csv`` (``kagglecv.data.submission_log``). Nothing goes online."""

from __future__ import annotations

import math
from pathlib import Path

from kagglecv.core.errors import KagglecvError, summarize
from kagglecv.core.files import write_csv
from kagglecv.data.submission_log import log_lock, log_path, read_log


def record_leaderboard(submissions_dir: Path, name: str, public: float | None, private: float | None) -> dict:
    """Fill in the leaderboard scores of the latest submission called ``name`` (file name, with or without
    ``.csv``/``.csv.gz``); returns the updated line."""
    if public is None and private is None:
        raise KagglecvError("give --public SCORE, --private SCORE or both")
    for option, value in (("--public", public), ("--private", private)):
        if value is not None and not math.isfinite(value):
            raise KagglecvError(f"{option} {value}: expected the finite score Kaggle showed")
    path = log_path(submissions_dir)
    with log_lock(path):
        log = read_log(path)
        wanted = Path(name).name
        matches = [row for row, file in enumerate(log["file"])
                   if wanted in (file, file.removesuffix(".gz"), file.removesuffix(".gz").removesuffix(".csv"))]
        if not matches:
            raise KagglecvError(f"{path}: no submission named {wanted!r}; logged are "
                                f"{summarize(sorted(set(log['file'])), quote=True)}")
        row = matches[-1]
        for column, value in (("public", public), ("private", private)):
            if value is not None:
                log.loc[row, column] = f"{value:.6f}"
        write_csv(path, log)
        return log.iloc[row].to_dict()
