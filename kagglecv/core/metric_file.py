"""The competition's own metric: a Python file with Kaggle's metric signature, as in Kaggle's published metric
notebooks::

    def score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float

``metric: path/to/metric.py`` (with ``metric_direction: maximize|minimize``) makes it the run's metric everywhere a
metric is used: best epoch, CV, TTA choice, ensembles and budgets. Each call turns the truth into a frame shaped
like the training table's target columns and the predictions into a frame shaped like the sample submission (the
submit stage's own shapes), both read back from CSV text as Kaggle's scorer reads the files, with the rows
numbered as ids. The file is code the user chose to run: it is said on stderr each time it is loaded.

Only a file the user names runs: ``--metric FILE`` on the command line, or ``metric:`` in the config they pass
(``name_metric_file``). A run folder, an ensemble or a bundle that names a metric file is matched by the file's
content: the code runs only when its sha256 is that of a file the user named in this process, else the command is
refused with the fix. A run folder from someone else can name ``/tmp/evil.py``; it cannot make it run.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import math
import numbers
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from kagglecv.core.errors import ConfigError, KagglecvError
from kagglecv.core.metrics import Metric
from kagglecv.core.shapes import shaped_columns

_LOADED: dict[str, Callable] = {}  # sha256 of a metric file -> its score function, run once per process
_NAMED_BY_USER: dict[str, str] = {}  # sha256 of a metric file the user named in this process -> the path named
SIGNATURE = "score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float"


@dataclass(frozen=True)
class FrameLayout:
    """How the competition's files look: the task and classes, the training table's id and target columns, and
    the sample submission's value columns and format."""

    task: str
    classes: list[str]
    id_col: str
    target: str | list[str]
    label_sep: str
    value_columns: list[str]
    format: str
    top_k: int = 5
    threshold: float = 0.5

    def solution(self, y_true: np.ndarray) -> pd.DataFrame:
        """The truth in the training table's target columns: class names, tag lists or 0/1 columns."""
        ids = {self.id_col: np.arange(len(y_true)).astype(str)}
        names = np.array(self.classes)
        y_true = np.asarray(y_true)
        if self.task == "regression":  # one value column per target, named as the training table names them
            targets = [self.target] if isinstance(self.target, str) else list(self.target)
            return pd.DataFrame(ids | {name: y_true.reshape(len(y_true), -1)[:, index]
                                       for index, name in enumerate(targets)})
        if self.task == "multilabel":
            present = y_true == 1
            if isinstance(self.target, list):
                return pd.DataFrame(ids | {name: present[:, index].astype(int) for index, name in enumerate(names)})
            return pd.DataFrame(ids | {self.target: [self.label_sep.join(names[row]) for row in present]})
        if isinstance(self.target, list):  # one-hot classes
            return pd.DataFrame(ids | {name: (y_true == index).astype(int) for index, name in enumerate(names)})
        return pd.DataFrame(ids | {self.target: names[y_true]})

    def submission(self, y_score: np.ndarray) -> pd.DataFrame:
        probabilities = np.asarray(y_score, dtype=np.float64)
        if self.task == "binary" and probabilities.ndim == 1:
            probabilities = np.column_stack([1 - probabilities, probabilities])
        thresholds = dict.fromkeys(self.classes, self.threshold)
        columns = shaped_columns(probabilities, self.classes, self.format, self.value_columns, self.top_k,
                                 thresholds, None, self.label_sep)
        return pd.DataFrame({self.id_col: np.arange(len(probabilities)).astype(str)} | columns)


def _as_kaggle_reads(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


def _digest(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"metric: metric file not found: {path}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def name_metric_file(path: str | Path) -> None:
    """The user named ``path`` as their metric (on the command line or in the config they passed): its content
    may run in this process. A missing file is left to the load, which names it."""
    if Path(path).is_file():
        _NAMED_BY_USER[_digest(Path(path))] = str(path)


def forget_named_metric_files() -> None:
    """A new command starts with no metric file named (``main`` calls it: in-process callers, tests, run several)."""
    _NAMED_BY_USER.clear()


def require_named(path: Path) -> str:
    """The sha256 of ``path``, a file of content the user named in this process; else the one error that says so."""
    digest = _digest(Path(path))
    if digest not in _NAMED_BY_USER:
        raise ConfigError(f"metric: {path} (sha256 {digest[:16]}) is named by a run folder or bundle, not by you; "
                          f"kagglecv runs metric code only from a file you name: pass --metric-file {path} "
                          "(--metric on score and ensemble)")
    return digest


def same_metric_file(one: str | Path, other: str | Path) -> bool:
    """Whether two metric file names are one file: the same name, or the same content."""
    if str(one) == str(other):
        return True
    return Path(one).is_file() and Path(other).is_file() and _digest(Path(one)) == _digest(Path(other))


def load_score_function(path: Path):
    """The file's ``score``, after checking it takes Kaggle's three arguments; every failure names the file.

    Raises:
        ConfigError: when no file of this content was named by the user (``name_metric_file``): the path came
            from a run folder, an ensemble or a bundle, whose code never runs on its own say-so.
    """
    path = Path(path)
    digest = require_named(path)
    if digest in _LOADED:
        return _LOADED[digest]
    # Printed, not warned: no interpreter setting may hide that code is running.
    print(f"notice: running metric code {path} (sha256 {digest[:16]})", file=sys.stderr, flush=True)
    try:
        namespace = runpy.run_path(str(path))
    except SyntaxError as exc:
        raise ConfigError(f"metric: {path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # the user's file: any failure is theirs, named in one line
        raise ConfigError(f"metric: {path}: running the file failed: {type(exc).__name__}: {exc}") from None
    function = namespace.get("score")
    if not callable(function):
        raise ConfigError(f"metric: {path} defines no function score; expected {SIGNATURE}")
    try:
        inspect.signature(function).bind(None, None, "id")
    except TypeError:
        raise ConfigError(f"metric: {path}: score{inspect.signature(function)} does not take Kaggle's three "
                          f"arguments; expected {SIGNATURE}") from None
    _LOADED[digest] = function
    return function


def call_score(function: Callable, path: str, solution: pd.DataFrame, submission: pd.DataFrame,
               id_col: str) -> float:
    """The metric file's score of the two frames; its failure, or anything but a finite number, is an error."""
    try:
        value = function(solution, submission, id_col)
    except BaseException as exc:  # noqa: BLE001  sys.exit, Ctrl-C inside the user's metric: theirs, one line
        raise KagglecvError(f"metric {path}: score(...) failed: {type(exc).__name__}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise KagglecvError(f"metric {path}: score(...) returned {value!r}; expected a number (a real number, not "
                            f"{type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise KagglecvError(f"metric {path}: score(...) returned {value}; expected a finite number")
    return value


def metric_file_metric(path: str, direction: str, layout: FrameLayout) -> Metric:
    """The metric file ``path`` as a metric of ``layout.task``: each score calls the file on frames shaped by
    ``layout``."""
    function = load_score_function(Path(path))

    def score_frames(y_true, y_score) -> float:
        solution, submission = _as_kaggle_reads(layout.solution(y_true)), _as_kaggle_reads(layout.submission(y_score))
        return call_score(function, path, solution, submission, layout.id_col)

    return Metric(path, score_frames, direction == "maximize", (layout.task,))
