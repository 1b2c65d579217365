"""The inspect stage: what a run gets wrong, read from its out-of-fold predictions.

Every training image has an OOF prediction from a model that never saw it, which is what error analysis needs:

* the highest-loss images (multi-label: the worst false positives and false negatives of the classes with the
  most error; regression: the largest errors, with predicted against true and the residuals in a plot), as a
  gallery;
* the most confused class pairs, with examples of each direction;
* likely label errors by confident learning (Northcutt, Jiang & Chuang, "Confident Learning", JAIR 2021) with
  ``cleanlab.filter.find_label_issues``, ranked by cleanlab's self-confidence label quality, in
  ``label_issues.csv`` (id, given_label, suggested_label, label_quality) for review; ``data.label_fixes`` then
  drops or relabels the reviewed ids in a new experiment;
* near-duplicate images whose labels disagree (the folds stage's duplicate report, or the same perceptual hashes
  computed here when the folds stage did not look).

Outputs go to the run folder: ``inspect.json``, ``label_issues.csv`` and the pictures.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import write_csv, write_json
from kagglecv.core.predictions import read_aligned
from kagglecv.core.runs import RunDir, read_json
from kagglecv.data.decoding import preview_image
from kagglecv.data.duplicates import near_duplicate_pairs, perceptual_hashes
from kagglecv.data.inputs import load_run_table
from kagglecv.data.outcomes import Analysis
from kagglecv.data.table import ABSENT, CompetitionData, DataWarning
from kagglecv.presentation.plots import plot_gallery, plot_residuals

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] for the log loss of a row
THUMBNAIL = 128


def inspect_run(run_path: Path, *, top: int = 24, pairs: int = 6, pictures: bool = True) -> Analysis:
    """Analyse the OOF predictions of a run or ensemble; write ``inspect.json``, ``label_issues.csv`` and pictures."""
    run = RunDir(run_path)
    config, info = run.read_config(), run.read_info()
    if info.task == "heads":
        raise KagglecvError(f"{run.path}: inspect ranks one target's errors; a run of several heads is not analysed "
                            "yet (score.json has each head's classes' recall)")
    run.for_writing("inspect")
    data = load_run_table(run, config, info, with_images=True)
    probabilities = read_aligned(run.oof_path, data.ids, data.classes, data.source, oof=True, extra_word="unknown")
    if data.task == "multilabel":
        worst = multilabel_errors(data, probabilities, per_class=3, classes=max(1, top // 6))
        confused = []
    elif data.task == "regression":
        worst, confused = largest_errors(data, probabilities, top), []
    else:
        worst = worst_predictions(data, probabilities, top)
        confused = confused_pairs(data, probabilities, pairs, examples=3)
    issues = label_issues(data, probabilities, config.data.label_sep)
    write_csv(run.label_issues_path, issues, float_format="%.6g")
    conflicts, checked = duplicate_conflicts(data, config)
    analysis = Analysis(run.name, data.task, len(data), worst, confused, len(issues), run.label_issues_path,
                        conflicts, checked)
    if pictures and data.task == "regression":
        plot_residuals(data.targets, probabilities, data.classes, run.residuals_png, f"{run.name}: out-of-fold")
        analysis.pictures.append(run.residuals_png)
    if pictures and data.images is not None:
        analysis.pictures += draw_analysis(run, data, analysis)
    write_json(run.inspect_path, analysis.to_dict())
    return analysis


def inspect_stale_runs(runs_dir: Path) -> list[Path]:
    """``inspect`` on every finished run under ``runs_dir`` whose analysis is missing or older than its OOF
    predictions (what ``report --inspect`` and the demo do before the report reads them); returns those runs."""
    stale = [run.path for path in sorted(Path(runs_dir).iterdir() if Path(runs_dir).is_dir() else [])
             if not path.name.startswith(".") and not path.is_symlink()
             and (run := RunDir(path)).is_run() and not run.analysis_is_current() and run.read_info().task != "heads"]
    for path in stale:
        inspect_run(path)
    return stale


def _label(data: CompetitionData, row: int, sep: str = " ") -> str:
    if data.task == "regression":
        return " ".join(f"{value:.6g}" for value in data.targets[row])
    if data.task == "multilabel":
        return sep.join(name for name, value in zip(data.classes, data.targets[row]) if value != ABSENT)
    return data.classes[data.targets[row]]


def worst_predictions(data: CompetitionData, probabilities: np.ndarray, top: int) -> list[dict]:
    """The ``top`` rows of highest log loss: id, given and predicted class, the probabilities of both."""
    rows = np.arange(len(data))
    given = np.clip(probabilities[rows, data.targets], EPSILON, 1 - EPSILON)
    order = np.argsort(np.log(given), kind="stable")[:top]  # lowest probability of the given class first
    predicted = probabilities.argmax(axis=1)
    return [{"row": int(row), "id": str(data.ids[row]), "given": data.classes[data.targets[row]],
             "predicted": data.classes[predicted[row]], "p_predicted": float(probabilities[row, predicted[row]]),
             "p_given": float(probabilities[row, data.targets[row]]), "loss": float(-np.log(given[row]))}
            for row in order]


def largest_errors(data: CompetitionData, values: np.ndarray, top: int) -> list[dict]:
    """The ``top`` rows of largest error (the root of the mean squared error over the targets): id, given and
    predicted values, the error."""
    error = np.sqrt(np.mean(np.square(values - data.targets), axis=1))
    order = np.argsort(-error, kind="stable")[:top]
    return [{"row": int(row), "id": str(data.ids[row]), "given": _label(data, int(row)),
             "predicted": " ".join(f"{value:.6g}" for value in values[row]), "error": float(error[row])}
            for row in order]


def multilabel_errors(data: CompetitionData, probabilities: np.ndarray, per_class: int, classes: int) -> list[dict]:
    """For the ``classes`` classes of largest summed BCE, the ``per_class`` worst false negatives (present, lowest
    probability) and false positives (absent, highest probability). Difficult labels count as neither."""
    clipped = np.clip(probabilities, EPSILON, 1 - EPSILON)
    present, absent = data.targets == 1, data.targets == ABSENT
    loss = np.where(present, -np.log(clipped), 0.0) + np.where(absent, -np.log(1 - clipped), 0.0)
    errors = []
    for column in np.argsort(-loss.sum(axis=0), kind="stable")[:classes]:
        negatives = np.flatnonzero(present[:, column] & (probabilities[:, column] < 0.5))
        positives = np.flatnonzero(absent[:, column] & (probabilities[:, column] >= 0.5))
        for kind, candidates, sign in (("false negative", negatives, 1), ("false positive", positives, -1)):
            for row in candidates[np.argsort(sign * probabilities[candidates, column], kind="stable")][:per_class]:
                errors.append({"row": int(row), "id": str(data.ids[row]), "class": data.classes[column], "kind": kind,
                               "probability": float(probabilities[row, column]), "loss": float(loss[row, column]),
                               "given": _label(data, int(row))})
    return errors


def confused_pairs(data: CompetitionData, probabilities: np.ndarray, pairs: int, examples: int) -> list[dict]:
    """The ``pairs`` unordered class pairs most often confused (both directions counted), each direction with the
    ``examples`` rows predicted most confidently as the other class."""
    predicted = probabilities.argmax(axis=1)
    n = len(data.classes)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (data.targets, predicted), 1)
    np.fill_diagonal(counts, 0)
    symmetric = np.triu(counts + counts.T, k=1)
    found = []
    for flat in np.argsort(-symmetric, axis=None, kind="stable")[:pairs]:
        a, b = np.unravel_index(flat, symmetric.shape)
        if symmetric[a, b] == 0:
            break
        directions = []
        for true, wrong in ((a, b), (b, a)):
            rows = np.flatnonzero((data.targets == true) & (predicted == wrong))
            rows = rows[np.argsort(-probabilities[rows, wrong], kind="stable")][:examples]
            directions.append({"true": data.classes[true], "predicted": data.classes[wrong],
                               "count": int(counts[true, wrong]),
                               "examples": [{"row": int(row), "id": str(data.ids[row]),
                                             "probability": float(probabilities[row, wrong])} for row in rows]})
        found.append({"classes": [data.classes[a], data.classes[b]], "count": int(symmetric[a, b]),
                      "directions": directions})
    return found


def label_issues(data: CompetitionData, probabilities: np.ndarray, label_sep: str = " ") -> pd.DataFrame:
    """cleanlab's likely label errors, most likely first: id, given_label, suggested_label, label_quality."""
    columns = ["id", "given_label", "suggested_label", "label_quality"]
    if data.task == "regression":  # confident learning ranks class labels; a value's largest errors are the worst
        return pd.DataFrame(columns=columns)
    if data.task == "multilabel":
        from cleanlab.multilabel_classification.filter import find_label_issues
        from cleanlab.multilabel_classification.rank import get_label_quality_scores

        labels = [list(np.flatnonzero(row != ABSENT)) for row in data.targets]
        pred_probs = np.clip(probabilities, 0.0, 1.0)
        suggested = [label_sep.join(np.asarray(data.classes)[row >= 0.5]) for row in pred_probs]
    else:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        labels = data.targets
        pred_probs = np.clip(probabilities, EPSILON, None)
        pred_probs = pred_probs / pred_probs.sum(axis=1, keepdims=True)  # rank blends are not probabilities
        suggested = list(np.asarray(data.classes)[pred_probs.argmax(axis=1)])
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            flagged = find_label_issues(labels, pred_probs, n_jobs=1)
            quality = get_label_quality_scores(labels, pred_probs)
    except (ValueError, TypeError) as exc:  # cleanlab refuses e.g. a class without a single example
        raise KagglecvError(f"cleanlab cannot rank label issues of {data.source}: {exc}") from None
    if caught:  # e.g. one line per rare class: said once, naming the table
        warnings.warn(f"cleanlab on {data.source}: {caught[0].message}" +
                      (f" (and {len(caught) - 1} more warnings)" if len(caught) > 1 else ""), DataWarning, stacklevel=2)
    rows = np.flatnonzero(flagged)
    rows = rows[np.argsort(quality[rows], kind="stable")]
    return pd.DataFrame({"id": data.ids[rows], "given_label": [_label(data, row, label_sep) for row in rows],
                         "suggested_label": [suggested[row] for row in rows],
                         "label_quality": quality[rows]}, columns=columns)


def duplicate_conflicts(data: CompetitionData, config) -> tuple[list[dict], str]:
    """Pairs of (near-)identical images with different labels, and where the pairs came from."""
    report_path = Path(config.folds.file).with_suffix(".json")
    pairs: list[tuple[str, str, int]] = []
    near_off = config.folds.near_duplicates == "off"
    if report_path.is_file():
        duplicates = read_json(report_path, "a folds report").get("duplicates", {})
        pairs = [(a, b, 0) for cluster in duplicates.get("exact_clusters", []) for a, b in zip(cluster, cluster[1:])]
        pairs += [(a, b, int(d)) for a, b, d in duplicates.get("near_pairs", [])]
        source = f"the folds report {report_path}" + (" (exact duplicates only: folds.near_duplicates is off)"
                                                      if near_off else "")
    elif near_off:  # hashing 60,000 images costs minutes: asked for, not assumed
        return [], "not checked (folds.near_duplicates is off)"
    elif data.images is not None:
        hashes = perceptual_hashes(data.images)
        pairs = [(data.ids[i], data.ids[j], d) for i, j, d in
                 near_duplicate_pairs(hashes, config.folds.near_duplicate_distance)]
        source = f"perceptual hashes within {config.folds.near_duplicate_distance} bits (no folds report)"
    else:
        return [], "not checked (no images)"
    row_of = {image_id: row for row, image_id in enumerate(data.ids)}
    conflicts = []
    for a, b, distance in pairs:
        if a not in row_of or b not in row_of:  # dropped by data.label_fixes
            continue
        label_a, label_b = _label(data, row_of[a]), _label(data, row_of[b])
        if label_a != label_b:
            conflicts.append({"ids": [str(a), str(b)], "rows": [row_of[a], row_of[b]], "labels": [label_a, label_b],
                              "distance": distance})
    return conflicts, source


def draw_analysis(run: RunDir, data: CompetitionData, analysis: Analysis) -> list[Path]:
    """The error gallery, the confused pairs and the conflicting duplicates, as PNGs in the run folder."""

    pictures = []
    if analysis.worst:
        rows = _chunks([_error_tile(data, item) for item in analysis.worst], 6)
        what = {"multilabel": "worst false negatives and false positives per class",
                "regression": "largest errors"}.get(data.task, "highest-loss images")
        plot_gallery(rows, run.errors_png, f"{run.name}: {what} (out-of-fold)")
        pictures.append(run.errors_png)
    if analysis.confused_pairs:
        rows, titles = [], []
        for pair in analysis.confused_pairs:
            rows.append([_tile(data, example["row"], f"{example['id']}\n{d['true']} -> {d['predicted']}\n"
                                                     f"p={example['probability']:.2f}", "C3")
                         for d in pair["directions"] for example in d["examples"]])
            titles.append(f"{pair['classes'][0]} / {pair['classes'][1]}: {pair['count']}")
        keep = [index for index, row in enumerate(rows) if row]
        plot_gallery([rows[i] for i in keep], run.confused_pairs_png, f"{run.name}: most confused class pairs "
                     "(true -> predicted)", [titles[i] for i in keep])
        pictures.append(run.confused_pairs_png)
    if analysis.duplicate_conflicts:
        tiles = [_tile(data, row, f"{image_id}\n{label[:24]}", "C3") for conflict in analysis.duplicate_conflicts[:12]
                 for row, image_id, label in zip(conflict["rows"], conflict["ids"], conflict["labels"])]
        plot_gallery(_chunks(tiles, 6), run.duplicate_conflicts_png,
                     f"{run.name}: near-duplicate images with different labels (side by side)")
        pictures.append(run.duplicate_conflicts_png)
    return pictures


def _error_tile(data: CompetitionData, item: dict) -> tuple:
    if "class" in item:
        caption = f"{item['id']}\n{item['kind']}\n{item['class'][:18]} p={item['probability']:.2f}"
    elif "error" in item:
        caption = f"{item['id']}\ntrue {item['given'][:14]}\npred {item['predicted'][:14]}"
    else:
        caption = (f"{item['id']}\ntrue {item['given'][:14]} ({item['p_given']:.2f})\n"
                   f"pred {item['predicted'][:14]} ({item['p_predicted']:.2f})")
    return _tile(data, item["row"], caption, "C3")


def _tile(data: CompetitionData, row: int, caption: str, colour: str) -> tuple:

    image = preview_image(data.images, row)  # eight-bit grey or RGB, whatever the source
    if max(image.shape[:2]) > THUMBNAIL:
        thumbnail = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        thumbnail.thumbnail((THUMBNAIL, THUMBNAIL))
        image = np.asarray(thumbnail).reshape(*thumbnail.size[::-1], -1)
    return image, caption, colour


def _chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]
