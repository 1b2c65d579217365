"""The submit stage: a submission file in the sample submission's exact shape, checked before it is written.

The sample decides the format:

* ``id,<one column of strings>`` (e.g. ``id,label``): a class name per row (multiclass), or separated labels
  (multi-label), the latter with per-class thresholds (0.5, a number, or tuned on OOF for F1);
* ``id,<class>,<class>...``: probability columns, mapped by class name, in the sample's column order;
* ``id,<one numeric column>`` for a binary task: the probability of the positive class;
* ``id,<one column of k names>`` for a multiclass task (MAP@k competitions): the k likeliest classes, most likely
  first.

A run's ``submit.format`` names the shape when the sample cannot tell (a sample of zeros fits a label and a
probability alike); ``kagglecv init`` writes it.

Ids keep the sample's spelling and order. A failing check writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import write_bytes
from kagglecv.core.outputs import OutputRule, csv_header, same_header
from kagglecv.core.predictions import (
    read_predictions,
)
from kagglecv.core.runs import RunDir, read_json
from kagglecv.core.topk import read_top_k
from kagglecv.data.load import test_answers
from kagglecv.data.scoring import run_score
from kagglecv.data.submission import (
    answer_predictions,
    build_submission,
    decide_submission,
    encode_submission,
    identity_submission,
    parse_threshold,
    scored_predictions,
)
from kagglecv.data.submission_log import COLUMNS as LOG_COLUMNS
from kagglecv.data.submission_log import LOG_NAME, append_submission, log_path


@dataclass
class Submission:
    path: Path
    format: str
    rows: int
    thresholds: dict[str, float] | None = None


def write_submission(run_path: Path, sample_path: Path, name: str | None = None, *,
                     threshold: str | float | None = None, out_dir: Path = Path("submissions"), compress: bool = False,
                     label_sep: str = " ") -> Submission:
    """Write ``out_dir/<name>.csv[.gz]`` from the run's ``test.csv`` in the shape of ``sample_path``.

    ``threshold``: the multi-label cut, a number or ``oof``; None takes the run's own ``submit.threshold`` (as
    ``run`` and ``infer`` do). The name is checked first: a plain name, whose file lies inside ``out_dir`` and is
    none of the inputs.
    """
    run, sample_path = RunDir(run_path), Path(sample_path)
    if threshold is not None:
        parse_threshold(threshold)  # a bad --threshold is refused before anything is read
    name = name or run.name
    path = OutputRule.of(_inputs(run, sample_path)).named(out_dir, name, "--name",
                                                          suffix=f".csv{'.gz' if compress else ''}")
    if path.name == LOG_NAME:
        raise KagglecvError(f"--name {name!r}: {path} is the submissions log; choose another name")
    check_submission_outputs(run, sample_path, path)
    info = run.read_info()
    if not run.test_path.is_file():
        raise KagglecvError(f"{run.path}: no {run.test_path.name}; set data.test_csv and train (or predict) first")
    classes, task = info.classes, info.task
    if run.identities_path.is_file():  # a model.identity run's top-k test file
        out = identity_submission(read_top_k(run.test_path), run.read_identity_record(), classes, sample_path,
                                  run.test_path, label_sep)
        write_bytes(path, encode_submission(out, compress))
        append_submission(path, run.name, *_recorded_cv(run))
        return Submission(path, "top_k", len(out))
    predictions, classes, task = _as_scored(run, _of_answers(run, read_predictions(run.test_path, classes)), classes,
                                            task)
    decisions = decide_submission(run, classes, task, threshold=threshold, label_sep=label_sep)
    out, fmt, thresholds = build_submission(predictions, run.test_path, sample_path, classes, task, decisions)
    write_bytes(path, encode_submission(out, compress))
    append_submission(path, run.name, *_recorded_cv(run))
    return Submission(path, fmt, len(out), thresholds)


def _as_scored(run: RunDir, predictions: pd.DataFrame, classes: list[str], task: str):
    """The run's test predictions of the competition's target (``data.finer``: the coarse classes)."""
    try:
        config = run.read_config()
    except KagglecvError:
        return predictions, classes, task
    return scored_predictions(predictions, classes, task, config.data)


def _of_answers(run: RunDir, predictions: pd.DataFrame) -> pd.DataFrame:
    """The run's test predictions, gathered to the answers of its test table when several images make one answer."""
    try:
        config = run.read_config()
    except KagglecvError:
        return predictions
    answered = test_answers(config.data)
    return predictions if answered is None else answer_predictions(predictions, *answered, config.data.test_csv)


def _recorded_cv(run: RunDir) -> tuple[str | None, float | None]:
    """The metric and OOF score of the run's ``score.json``, scored now in memory when the run has none (submit
    writes nothing into a run); unknown (None) when the training table it was scored on cannot be read here."""
    if not run.score_path.is_file():
        try:
            result = run_score(run)
        except KagglecvError:
            return None, None
        return result.metric, result.overall
    score = read_json(run.score_path, "a run's score")
    return score.get("metric"), score.get("overall")


def check_submission_outputs(run: RunDir, sample_path: Path, path: Path) -> None:
    """The submission and the log beside it under the one output rule: not in a run, folds or data folder, and an
    existing submission replaced only when it has the sample's header (an earlier submission of this competition)."""

    try:
        configs = [run.read_config()]
    except KagglecvError:
        configs = []
    rule = OutputRule.of(_inputs(run, sample_path), configs=configs)
    rule.file(path, "--name", replace_if=same_header(csv_header(sample_path) or ""))
    rule.file(log_path(path.parent), "the submissions log", replace_if=same_header(",".join(LOG_COLUMNS)))


def _inputs(run: RunDir, sample_path: Path) -> list[Path]:
    """Every file a submission is made from: the run's predictions and records, the sample, the training table."""
    inputs = [run.path, run.test_path, run.oof_path, run.config_path, run.info_path, sample_path]
    try:
        data = run.read_config().data
        inputs += [data.train_csv, data.test_csv, data.image_dir, *data.test_image_dirs(), data.classes_file]
    except KagglecvError:
        pass
    return inputs


