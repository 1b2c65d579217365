"""The folds stage: split the training table into folds that can be trusted, and record how.

``make_folds`` writes ``folds.file`` (``id,fold``) and beside it a JSON with the method, k, seed, the hash of the
table, per-fold counts per class and the duplicate report. Byte-identical images under different ids are put
into one group (so one fold); perceptual near-duplicates are reported, or grouped on request.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv import __version__
from kagglecv.core.config import Config, FoldsConfig
from kagglecv.core.errors import KagglecvError, summarize
from kagglecv.core.files import output_lock, sha256_file, write_csv, write_json
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.core.outputs import OutputRule, csv_header, is_folds_report
from kagglecv.data.duplicates import (
    exact_duplicate_clusters,
    near_duplicate_pairs,
    perceptual_hashes,
)
from kagglecv.data.inputs import read_folds
from kagglecv.data.load import load_train
from kagglecv.data.splitters import create_splitter, grouped_method
from kagglecv.data.table import CompetitionData

scipy_sparse = imported_on_first_use("scipy.sparse")
csgraph = imported_on_first_use("scipy.sparse.csgraph")

NEEDS_GROUPS = {"group", "stratified_group", "multilabel_group"}
MULTILABEL_METHODS = {"multilabel", "multilabel_group"}


@dataclass
class FoldsResult:
    """What ``make_folds`` produced: the fold of every row and the report written beside the CSV."""

    path: Path
    folds: np.ndarray
    report: dict
    written: bool = True
    warnings: list[str] = field(default_factory=list)


def _check_folds_output(config: Config, path: Path) -> None:
    """``folds.file`` and its report under the one output rule: never a table, image folder or run file the config
    names, and an existing CSV replaced only when it is a folds file (``id,fold``)."""

    data = config.data
    rule = OutputRule.of([data.train_csv, data.test_csv, data.image_dir, *data.test_image_dirs(), data.classes_file,
                          None if data.label_fixes is None else data.label_fixes.file])
    for output in (path, path.with_suffix(".json")):
        rule.own_files.add(output.resolve())
    rule.file(path, "folds.file", replace_if=lambda existing: csv_header(existing) == "id,fold")
    rule.file(path.with_suffix(".json"), "folds.file", replace_if=is_folds_report)


def make_folds(config: Config, *, force: bool = False, data: CompetitionData | None = None) -> FoldsResult:
    """Read the training table, split it, and write the folds CSV and JSON atomically.

    An existing folds file made from the same table with the same method, k and seed is kept as it is. One made
    otherwise is an error unless ``force``, since every experiment's OOF predictions depend on it. The CSV and the
    JSON are one output: the JSON, written last, records the CSV's sha256, and a pair that does not match (a killed
    writer) counts as absent. A lock beside them makes a second writer at the same time a clear error. ``data`` is
    the training table when the caller has read it already.
    """
    data = data if data is not None else load_train(config.data)
    path = Path(config.folds.file)
    if path.suffix.lower() != ".csv":
        raise KagglecvError(f"folds.file {str(path)!r}: expected a .csv file name (its report is written beside it as .json)")
    report_path = path.with_suffix(".json")
    _check_folds_output(config, path)
    settings = _settings(config.folds, config.data.group_col, data)
    with output_lock(path.with_name(f".{path.name}.lock"), str(path)):
        existing = _read_complete_report(path, report_path)
        if existing is not None:
            if {key: existing.get(key) for key in settings} == settings:
                return FoldsResult(path, read_folds(path, data), existing, written=False)
            if not force:
                changed = [key for key in settings if existing.get(key) != settings[key]]
                raise KagglecvError(
                    f"{path} exists and was made with other settings ({', '.join(changed)}); runs that used it "
                    "would no longer be comparable. Pass --force to overwrite it, or set folds.file to a new name")
        folds, report = assign_folds(data, config.folds)
        frame = pd.DataFrame({"id": data.ids, "fold": folds})
        write_csv(path, frame)
        report = {**settings, **report, "kagglecv_version": __version__, "folds_sha256": sha256_file(path)}
        write_json(report_path, report)
    return FoldsResult(path, folds, report, written=True, warnings=report["warnings"])


def assign_folds(data: CompetitionData, settings: FoldsConfig) -> tuple[np.ndarray, dict]:
    """The fold of every row, and a report (effective method, balance, duplicates, warnings)."""
    method = resolve_method(settings.method, data)
    _check_method_fits_task(method, data)
    if method in NEEDS_GROUPS and data.groups is None:
        raise KagglecvError(f"folds.method {method!r} needs data.group_col (a patient, video or track id)")
    notes: list[str] = []
    duplicates = _duplicate_report(data, settings, notes)
    leak_groups = duplicates["exact"] if settings.duplicates == "group" else []
    if settings.near_duplicates == "group":
        leak_groups = leak_groups + [[i, j] for i, j, _ in duplicates["near_pairs_rows"]]
    answer_groups = _answer_clusters(data)
    groups = _merge_groups(data.groups if method in NEEDS_GROUPS else None, leak_groups + answer_groups, len(data))
    effective = method
    if groups is not None and method not in NEEDS_GROUPS:
        effective = grouped_method(method)
        what = "the images of each answer (data.answer_id)" if answer_groups else "duplicate images"
        notes.append(f"{what} were grouped, so folds were made with {effective!r} instead of {method!r}")
    _check_fold_count(data, settings, groups)
    _check_rare_classes(data, settings, groups, notes)
    folds = _split(data, effective, settings, groups)
    positives = data.positives()
    report = {
        "effective_method": effective,
        "rows": len(data),
        "fold_sizes": np.bincount(folds, minlength=settings.n_splits).tolist(),
        "fold_groups": _groups_per_fold(groups, folds, settings.n_splits),
        "counts": {name: np.bincount(folds, weights=positives[:, c], minlength=settings.n_splits).astype(int).tolist()
                   for c, name in enumerate(_stratum_names(data))},
        "max_rate_deviation": label_rate_deviation(positives, folds),
        "duplicates": _public_duplicates(data, duplicates, folds),
        "warnings": notes,
    }
    return folds, report


def _answer_clusters(data: CompetitionData) -> list[list[int]]:
    """The rows of each answer of several images (``data.answer_id``): one answer is validated whole, in one fold."""
    if data.answers is None:
        return []
    rows = pd.Series(np.arange(len(data))).groupby(pd.Series(data.answers.keys, dtype=object)).agg(list)
    return [cluster for cluster in rows.tolist() if len(cluster) > 1]


def resolve_method(method: str, data: CompetitionData) -> str:
    """``auto`` becomes the stratified method of the task, grouped when the table has groups."""
    if method != "auto":
        return method
    chosen = "multilabel" if data.task in ("multilabel", "heads") else "stratified"
    return grouped_method(chosen) if data.groups is not None else chosen


def _stratum_names(data: CompetitionData) -> list[str]:
    """The names the folds count rows by: the classes, or a regression target's bins (named by their ranges)."""
    return data.classes if data.task in ("multilabel", "heads") else data.strata()[0]


def label_rate_deviation(positives: np.ndarray, folds: np.ndarray) -> float:
    """The largest |rate of a label in a fold - its overall rate|, over labels and folds."""
    overall = positives.mean(axis=0)
    return float(max(np.abs(positives[folds == fold].mean(axis=0) - overall).max() for fold in np.unique(folds)))


def _settings(settings: FoldsConfig, group_col: str | None, data: CompetitionData) -> dict:
    return {
        "method": settings.method,
        "n_splits": settings.n_splits,
        "seed": settings.seed,
        "group_col": group_col,
        "group_duplicates": settings.duplicates == "group",
        "group_near_duplicates": settings.near_duplicate_distance if settings.near_duplicates == "group" else None,
        "table_sha256": data.unfixed_hash or data.content_hash(),
        "source": str(data.source),
        "classes": data.classes,
        "task": data.task,
    }


def _check_method_fits_task(method: str, data: CompetitionData) -> None:
    if method in MULTILABEL_METHODS and data.task not in ("multilabel", "heads"):
        raise KagglecvError(f"folds.method {method!r} is for multi-label targets, but the task is {data.task!r}; "
                            "use stratified or stratified_group")
    if method in {"stratified", "stratified_group"} and data.task in ("multilabel", "heads"):
        raise KagglecvError(f"folds.method {method!r} needs one label per row, but the task is multilabel; "
                            "use multilabel or multilabel_group")


def _duplicate_report(data: CompetitionData, settings: FoldsConfig, notes: list[str]) -> dict:
    report: dict = {"checked": data.images is not None, "exact": [], "near_pairs_rows": []}
    if data.images is None:
        notes.append("no image folder configured: duplicate images were not checked")
        return report
    if settings.duplicates == "group":
        report["exact"] = exact_duplicate_clusters(data.images)
    if settings.near_duplicates != "off":
        hashes = perceptual_hashes(data.images)
        pairs = near_duplicate_pairs(hashes, settings.near_duplicate_distance)
        exact = {(cluster[0], row) for cluster in report["exact"] for row in cluster[1:]}
        report["near_pairs_rows"] = [pair for pair in pairs if (pair[0], pair[1]) not in exact]
    return report


def _public_duplicates(data: CompetitionData, duplicates: dict, folds: np.ndarray) -> dict:
    """Duplicates by id for the JSON; near pairs that still straddle folds are the ones that can leak."""
    straddling = [(i, j, d) for i, j, d in duplicates["near_pairs_rows"] if folds[i] != folds[j]]
    return {
        "checked": duplicates["checked"],
        "exact_clusters": [[data.ids[row] for row in cluster] for cluster in duplicates["exact"]],
        "near_pairs": [[data.ids[i], data.ids[j], d] for i, j, d in duplicates["near_pairs_rows"]],
        "near_pairs_across_folds": [[data.ids[i], data.ids[j], d] for i, j, d in straddling],
    }


def _merge_groups(groups: np.ndarray | None, clusters: list[list[int]], n_rows: int) -> np.ndarray | None:
    """Connected components of "same group" and "duplicate of" links, as group labels; None when no links."""
    if groups is None and not clusters:
        return None
    rows, cols = [np.arange(n_rows)], [np.arange(n_rows)]
    if groups is not None:
        _, first_of_group = np.unique(groups, return_index=True)
        _, group_index = np.unique(groups, return_inverse=True)
        rows.append(np.arange(n_rows))
        cols.append(first_of_group[group_index])
    for cluster in clusters:
        rows.append(np.asarray(cluster[1:]))
        cols.append(np.full(len(cluster) - 1, cluster[0]))
    links = scipy_sparse.coo_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows), np.concatenate(cols))), shape=(n_rows, n_rows))
    _, labels = csgraph.connected_components(links, directed=False)
    return labels.astype(str)


def _check_fold_count(data: CompetitionData, settings: FoldsConfig, groups: np.ndarray | None) -> None:
    """Every fold needs at least one row (or group) to validate on."""
    if len(data) < settings.n_splits:
        raise KagglecvError(f"folds.n_splits={settings.n_splits}: expected at most the number of rows, "
                            f"{data.source} has {len(data)}")
    n_groups = len(np.unique(groups)) if groups is not None else None
    if n_groups is not None and n_groups < settings.n_splits:
        raise KagglecvError(f"folds.n_splits={settings.n_splits}: expected at most the number of groups "
                            f"(after joining duplicate images), got {n_groups}")


def _check_rare_classes(data: CompetitionData, settings: FoldsConfig, groups: np.ndarray | None, notes: list[str]) -> None:
    if resolve_method(settings.method, data) in {"kfold", "group"}:
        return
    positives = data.positives().astype(bool)
    if groups is None:
        support = positives.sum(axis=0)
        unit = "rows"
    else:
        support = np.array([len(np.unique(groups[positives[:, c]])) for c in range(positives.shape[1])])
        unit = "groups"
    rare = [f"{name!r}: {count}" for name, count in zip(_stratum_names(data), support) if count < settings.n_splits]
    if not rare:
        return
    message = (f"{len(rare)} classes have fewer {unit} than folds (n_splits={settings.n_splits}): {summarize(rare)}")
    if not settings.allow_rare_classes:
        raise KagglecvError(f"{message}; lower folds.n_splits, or set folds.allow_rare_classes=true to accept "
                            "that these classes are missing from some validation folds")
    notes.append(message + "; they are missing from some validation folds")


def _split(data: CompetitionData, method: str, settings: FoldsConfig, groups: np.ndarray | None) -> np.ndarray:
    splitter = create_splitter(method, settings.n_splits, seed=settings.seed)
    y = data.positives() if method in MULTILABEL_METHODS else data.strata()[1]
    folds = np.full(len(data), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        try:
            for fold, (_, valid) in enumerate(splitter.split(np.zeros(len(data)), y, groups)):
                folds[valid] = fold
        except ValueError as exc:  # scikit-learn's own refusal, e.g. every class smaller than n_splits
            raise KagglecvError(f"folds.n_splits={settings.n_splits} with method {method!r}: {exc}") from None
    assert (folds >= 0).all(), "every row must land in a fold"
    return folds


def _groups_per_fold(groups: np.ndarray | None, folds: np.ndarray, n_splits: int) -> list[int] | None:
    if groups is None:
        return None
    return [len(np.unique(groups[folds == fold])) for fold in range(n_splits)]


def _read_complete_report(path: Path, report_path: Path) -> dict | None:
    """The report of a complete folds output, or None when either file is missing, corrupt or they do not match."""
    if not (path.is_file() and report_path.is_file()):
        return None
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("folds_sha256") not in (None, sha256_file(path)):
        return None
    return report
