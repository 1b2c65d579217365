"""A competition's metric file in Kaggle's signature: the frames it is handed, its direction, and every way the file
can be wrong as one line naming it."""

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import fbeta_score, roc_auc_score

from kagglecv.core import metric_file
from kagglecv.core.config import validate_config
from kagglecv.core.errors import ConfigError, KagglecvError
from kagglecv.core.metric_file import FrameLayout, name_metric_file
from kagglecv.core.metrics import score

SEEN = '''
import pandas as pd


def score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float:
    return {value}
'''


def named_metric_file(path: str, direction: str, frame_layout: FrameLayout):
    """The file bound as one the user named (``--metric FILE``, or ``metric:`` in their own config)."""
    name_metric_file(path)
    return metric_file.metric_file_metric(path, direction, frame_layout)


def layout(**changes) -> FrameLayout:
    base = dict(task="multilabel", classes=["clear", "road", "water"], id_col="image_name", target="tags",
                label_sep=" ", value_columns=["tags"], format="labels")
    return FrameLayout(**(base | changes))


def test_a_tag_competition_gets_kaggle_shaped_frames_and_its_score_is_the_files(tmp_path):
    path = tmp_path / "f2.py"
    path.write_text('''
from sklearn.metrics import fbeta_score
from sklearn.preprocessing import MultiLabelBinarizer

def score(solution, submission, row_id_column_name):
    assert list(solution[row_id_column_name]) == list(submission[row_id_column_name])
    binarizer = MultiLabelBinarizer()
    truth = binarizer.fit_transform(solution["tags"].fillna("").str.split())
    predicted = binarizer.transform(submission["tags"].fillna("").str.split())
    return fbeta_score(truth, predicted, beta=2, average="samples", zero_division=0)
''')
    rng = np.random.default_rng(0)
    truth = (rng.random((40, 3)) < 0.5).astype(int)
    scores = np.clip(truth * 0.4 + rng.random((40, 3)) * 0.7, 0, 1)
    metric = named_metric_file(str(path), "maximize", layout())
    assert metric.higher_is_better and metric.tasks == ("multilabel",)
    expected = fbeta_score(truth, (scores >= 0.5).astype(int), beta=2, average="samples", zero_division=0)
    assert metric.score(truth, scores) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="scores through the table and sample submission"):
        score(str(path), "multilabel", truth, scores)  # the metric travels as an object: no process-wide registry


def test_the_file_gets_frames_read_back_from_csv_and_its_direction(tmp_path):
    path = tmp_path / "seen.py"
    path.write_text('''
from pathlib import Path

def score(solution, submission, row_id_column_name):
    folder = Path(__file__).parent
    solution.to_pickle(folder / "solution.pkl")
    submission.to_pickle(folder / "submission.pkl")
    return 0.25
''')
    one_hot = layout(task="multiclass", classes=["healthy", "rust", "scab"], id_col="image_id",
                     target=["healthy", "rust", "scab"], value_columns=["scab", "healthy", "rust"],
                     format="probabilities")
    metric = named_metric_file(str(path), "minimize", one_hot)
    assert metric.fn(np.array([0, 2]), np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])) == 0.25
    assert not metric.higher_is_better
    solution, submission = pd.read_pickle(tmp_path / "solution.pkl"), pd.read_pickle(tmp_path / "submission.pkl")
    assert solution.to_dict("list") == {"image_id": [0, 1], "healthy": [1, 0], "rust": [0, 0], "scab": [0, 1]}
    assert submission.to_dict("list") == {"image_id": [0, 1], "scab": [0.1, 0.8], "healthy": [0.7, 0.1],
                                          "rust": [0.2, 0.1]}


def test_the_frames_match_the_training_table_and_the_sample():
    one_hot = layout(task="multiclass", classes=["healthy", "rust"], id_col="image_id", target=["healthy", "rust"],
                     value_columns=["rust", "healthy"], format="probabilities")
    solution = one_hot.solution(np.array([1, 0]))
    assert list(solution.columns) == ["image_id", "healthy", "rust"] and solution["rust"].tolist() == [1, 0]
    submission = one_hot.submission(np.array([[0.3, 0.7], [0.6, 0.4]]))
    assert list(submission.columns) == ["image_id", "rust", "healthy"] and submission["rust"].tolist() == [0.7, 0.4]
    tags = layout().solution(np.array([[1, 0, 1], [0, 0, 0]]))
    assert tags["tags"].tolist() == ["clear water", ""]
    binary = layout(task="binary", classes=["0", "1"], id_col="id", target="label", value_columns=["label"],
                    format="positive")
    auc_truth, auc_scores = np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.5])
    assert binary.submission(auc_scores)["label"].tolist() == auc_scores.tolist()
    assert roc_auc_score(binary.solution(auc_truth)["label"].astype(int), auc_scores) == 0.75


@pytest.mark.parametrize("content, message", [
    (None, r"metric: metric file not found: .*absent\.py"),
    ("def score(:\n", r"metric: .*bad\.py:1: syntax error"),
    ("raise RuntimeError('needs a GPU')\n", r"bad\.py: running the file failed: RuntimeError: needs a GPU"),
    ("def metric(solution, submission, row_id):\n    return 1.0\n", r"bad\.py defines no function score"),
    ("def score(solution, submission):\n    return 1.0\n", r"score\(solution, submission\) does not take Kaggle's"),
])
def test_a_bad_metric_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / ("absent.py" if content is None else "bad.py")
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        named_metric_file(str(path), "maximize", layout())


@pytest.mark.parametrize("value, message", [("float('nan')", "returned nan; expected a finite number"),
                                            ("'high'", "returned 'high'; expected a number")])
def test_a_metric_that_returns_no_number_is_refused_never_used(tmp_path, value, message):
    path = tmp_path / "odd.py"
    path.write_text(SEEN.format(value=value))
    metric = named_metric_file(str(path), "maximize", layout())
    with pytest.raises(KagglecvError, match=message):
        metric.fn(np.array([[1, 0, 0]]), np.array([[0.9, 0.1, 0.2]]))


def test_running_the_file_is_said_and_the_config_needs_its_direction_and_sample(tmp_path, capsys):
    path = tmp_path / "said.py"
    path.write_text(SEEN.format(value="1.0"))
    named_metric_file(str(path), "maximize", layout())
    assert f"notice: running metric code {path} (sha256 " in capsys.readouterr().err
    raw = {"experiment": "x", "metric": str(path), "data": {"train_csv": "t.csv"}}
    with pytest.raises(ConfigError, match="metric_direction: maximize or minimize goes with a metric file"):
        validate_config(raw)
    with pytest.raises(ConfigError, match="a metric file scores frames shaped like the sample submission"):
        validate_config(raw | {"metric_direction": "maximize"})
    with pytest.raises(ConfigError, match="metric_direction"):
        validate_config({"experiment": "x", "metric": "accuracy", "metric_direction": "minimize",
                         "data": {"train_csv": "t.csv"}})


def test_a_metric_file_nobody_named_never_runs_and_naming_it_is_what_lets_it_run(tmp_path, monkeypatch):
    ran = tmp_path / "ran"
    path = tmp_path / "planted.py"
    path.write_text(f"open({str(ran)!r}, 'w').write('code ran')\n" + SEEN.format(value="1.0"))
    with pytest.raises(ConfigError, match=r"planted\.py .* is named by a run folder or bundle, not by you; .*"
                                          r"--metric-file"):
        metric_file.metric_file_metric(str(path), "maximize", layout())
    assert not ran.exists()
    monkeypatch.setattr(metric_file, "_NAMED_BY_USER", {metric_file._digest(path): "switched off"})
    metric_file.metric_file_metric(str(path), "maximize", layout())
    assert ran.read_text() == "code ran", "without the rule a run folder's metric file runs"


def test_a_named_file_is_matched_by_content_not_by_path(tmp_path):
    named, planted = tmp_path / "mine.py", tmp_path / "theirs.py"
    named.write_text(SEEN.format(value="0.5"))
    planted.write_text(SEEN.format(value="0.5"))
    name_metric_file(named)
    metric = metric_file.metric_file_metric(str(planted), "maximize", layout())  # the same bytes: the same code
    assert metric.fn(np.array([[1, 0, 0]]), np.array([[0.9, 0.1, 0.2]])) == 0.5
    planted.write_text(SEEN.format(value="0.5") + "# changed\n")
    with pytest.raises(ConfigError, match="not by you"):
        metric_file.metric_file_metric(str(planted), "maximize", layout())


@pytest.mark.parametrize("value, message", [("True", "returned True; expected a number"),
                                            ("'0.75'", "returned '0.75'; expected a number"),
                                            ("__import__('sys').exit(0)", "score(...) failed: SystemExit"),
                                            ("(_ for _ in ()).throw(KeyboardInterrupt())",
                                             "score(...) failed: KeyboardInterrupt")])
def test_a_metric_that_exits_or_returns_a_non_number_is_one_error(tmp_path, value, message):
    path = tmp_path / "odd.py"
    path.write_text(SEEN.format(value=value))
    metric = named_metric_file(str(path), "maximize", layout())
    with pytest.raises(KagglecvError, match=re.escape(message)):
        metric.fn(np.array([[1, 0, 0]]), np.array([[0.9, 0.1, 0.2]]))
