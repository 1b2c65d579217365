"""Loading a competition's training and test tables: ids, targets and classes encoded, images found, every
problem reported at once (one line per kind, naming the file, the lines and the values).

The training table becomes a :class:`~kagglecv.data.table.CompetitionData` (a label-fixes file applied last); the
test table the same, without targets.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.config import DataConfig, ReaderConfig
from kagglecv.core.errors import DataError, summarize
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.core.predictions import HEAD_SEPARATOR
from kagglecv.data.coco import is_coco_table, read_coco_table
from kagglecv.data.label_fixes import apply_label_fixes
from kagglecv.data.long import long_names, long_test_ids, widen
from kagglecv.data.pixels import PixelImages, pixel_columns, pixel_shape, read_pixels
from kagglecv.data.readers import (
    CONTAINER_KINDS,
    PER_ID_KINDS,
    container_source,
    per_id_source,
)
from kagglecv.data.readers.json_bands import read_json_bands
from kagglecv.data.sources import id_path
from kagglecv.data.table import (
    ABSENT,
    DIFFICULT,
    IMAGE_EXTENSIONS,
    MAX_CLASS_CHARS,
    MISSING_TOKENS,
    PRESENT,
    RESERVED_COLUMNS,
    Answers,
    Coarse,
    CompetitionData,
    DataWarning,
    _separator,
    _string_frame,
    read_table_bytes,
)

preprocessing = imported_on_first_use("sklearn.preprocessing")


@dataclass
class Table:
    """A competition table: its cells as strings, and its images when it is a pixel table."""

    frame: pd.DataFrame
    pixels: PixelImages | None
    is_pixel_table: bool


def read_competition_table(path: Path, pixels: object | None, with_images: bool = True,
                           coco_label: str = "category_id", reader: ReaderConfig | None = None) -> Table:
    """A training or test table; a pixel table's ``pixel<i>`` columns become a :class:`PixelImages` (or are
    skipped when ``with_images`` is False) and only its other columns are read as strings; a COCO label file
    (``.json``) gives ``id, image[, label]`` (:mod:`kagglecv.data.coco`); JSON bands (``data.reader.kind:
    json_bands``) their scalar fields as the table and their bands as the images."""
    path = Path(path)
    if reader is not None and reader.kind == "json_bands":
        frame, images = read_json_bands(path, reader.bands, reader.height, reader.width)
        return Table(frame, images, True)
    if is_coco_table(path):
        return Table(read_coco_table(path, coco_label), None, False)
    raw = read_table_bytes(path)
    sep = _separator(raw)
    header = [column.strip() for column in _string_frame(raw.split(b"\n", 1)[0] + b"\n", sep, path).columns]
    columns = pixel_columns(header, path)
    if not columns:
        return Table(_string_frame(raw, sep, path), None, False)
    others = [column for column in header if column not in set(columns)]
    images = None
    if with_images:
        images = PixelImages(read_pixels(raw, sep, columns, pixel_shape(len(columns), pixels, path), path), path)
    frame = _string_frame(raw, sep, path, usecols=others or columns[:1])
    return Table(frame[others], images, True)


def _require_rows(frame: pd.DataFrame, source: Path, what: str) -> None:
    if len(frame) == 0:
        raise DataError(f"{source}: the {what} table has a header but no rows")


def load_train(config: DataConfig, with_images: bool = True) -> CompetitionData:
    """Read and validate the training table named by ``config`` (its images too, unless ``with_images`` is False).

    Raises:
        DataError: every problem found (duplicate ids, missing images, bad labels, empty cells), one line per
            kind, each naming the file, the lines and the values, with the count when there are many.
    """
    source = config.train_csv
    table = read_competition_table(source, config.pixels, with_images, config.coco_label, config.reader)
    frame = table.frame
    _require_rows(frame, source, "training")
    if config.long_id is not None and isinstance(config.target, str):  # one row per (image, class): widened
        _require_columns(frame, source, [config.id_col, config.target])
        frame, classes = widen(frame, config.id_col, config.target, config.long_id, source, config.class_names())
        config = config.model_copy(update={"target": classes, "classes": None, "classes_file": None})
    scored_config = config
    if config.finer is not None:  # the network learns the finer column; scores read data.target through the map
        _require_columns(frame, source, [config.finer.column])
        config = config.model_copy(update={"target": config.finer.column, "task": "multiclass", "classes": None,
                                           "classes_file": None})
    problems: list[str] = []
    target_columns = [config.target] if isinstance(config.target, str) else list(config.target)
    ids = _table_ids(frame, config, source, table.is_pixel_table, problems)
    _require_columns(frame, source, [*target_columns, *_optional(config.group_col, config.image_col)])
    task, classes, targets = encode_targets(frame, config, problems)
    groups = _read_groups(frame, config.group_col, source, problems)
    image_dir = config.image_dir if with_images else None
    images = _table_images(table, frame, ids, image_dir, config, source, problems)
    unwritable = [name for name in classes if len(name) > MAX_CLASS_CHARS or "\n" in name or "\r" in name]
    if unwritable:
        problems.append(f"{source}: class names {summarize([name[:40] for name in unwritable], quote=True)} are longer "
                        f"than {MAX_CLASS_CHARS} characters or hold a line break; expected short one-line names")
    reserved = [name for name in classes if name in RESERVED_COLUMNS]
    if reserved:
        problems.append(f"{source}: class names {summarize(reserved, quote=True)} collide with the prediction files' "
                        f"own columns ({', '.join(RESERVED_COLUMNS)}); rename those classes")
    if problems:
        raise DataError("\n".join(problems))
    answers = _table_answers(frame, config, source, problems, targets)
    coarse = None if config.finer is None else coarse_target(frame, scored_config, classes, targets, problems)
    if problems:
        raise DataError("\n".join(problems))
    data = CompetitionData(ids, images, task, classes, targets, groups, source, answers=answers, coarse=coarse)
    if task == "regression":
        data = _without_missing_targets(data, config)
    if config.label_fixes is not None:
        data = apply_label_fixes(data, config.label_fixes, config.label_sep)
    return data


def load_test(config: DataConfig, classes: list[str], task: str) -> CompetitionData:
    """Read the test table (ids, and images: under ``test_image_dir`` or ``image_dir``, or its pixel columns)."""
    if config.test_csv is None:
        if config.test_image_dir is None:
            raise DataError("no test set: set data.test_csv, submit.sample or data.test_image_dir")
        return _folder_test(config.test_image_dirs(), classes, task)
    table = read_competition_table(config.test_csv, config.pixels, coco_label=config.coco_label, reader=config.reader)
    frame = table.frame
    _require_rows(frame, config.test_csv, "test")
    if config.long_id is not None:
        _require_columns(frame, config.test_csv, [config.id_col])
        frame = long_test_ids(frame, config.id_col, config.long_id, config.test_csv, long_names(list(classes), task))
    problems: list[str] = []
    ids = _table_ids(frame, config, config.test_csv, table.is_pixel_table, problems)
    _require_columns(frame, config.test_csv, _optional(config.image_col))
    images = _table_images(table, frame, ids, config.test_image_dirs() or config.image_dir, config, config.test_csv,
                           problems, test=True)
    answers = _table_answers(frame, config, config.test_csv, problems)
    if problems:
        raise DataError("\n".join(problems))
    return CompetitionData(ids, images, task, list(classes), None, None, config.test_csv, answers=answers)


def coarse_target(frame: pd.DataFrame, config: DataConfig, fine: list[str], targets: np.ndarray,
                  problems: list[str]) -> Coarse | None:
    """The competition's target over the finer trained classes (``data.finer``): every fine class mapped, and each
    row's target the map of its fine class (else a problem naming the rows)."""
    mapping, source = config.finer.to_target, config.train_csv
    try:
        coarse = coarse_of(config, fine)
    except DataError as exc:
        problems.append(f"{source}: {exc}")
        return None
    expected = np.array([mapping[fine[index]] for index in targets], dtype=object)
    given = frame[config.target].str.strip()
    given = normalize_numeric_labels(given, source, config.target).to_numpy(dtype=object)
    _report(problems, source, expected != given, pd.Series(given), f"target that is not the map of its "
            f"{config.finer.column!r} by data.finer.to_target")
    return coarse


def coarse_of(config: DataConfig, fine: list[str]) -> Coarse:
    """The coarse target of ``data.finer`` over the fine classes: its classes (``data.classes``, else the mapped
    names sorted), its task, the coarse class of each fine class; a fine class without one is an error."""
    mapping = config.finer.to_target
    unmapped = [name for name in fine if name not in mapping]
    if unmapped:
        raise DataError(f"data.finer.to_target has no class for the fine classes {summarize(unmapped, quote=True)} "
                        f"of column {config.finer.column!r}")
    classes = config.class_names() or sort_class_names(sorted(set(mapping[name] for name in fine)))
    strange = sorted({mapping[name] for name in fine} - set(classes))
    if strange or not isinstance(config.target, str):
        raise DataError(f"data.finer maps to {summarize(strange, quote=True)}, not classes of {config.target!r}"
                        if strange else "data.finer needs one target column")
    task = config.task or ("binary" if len(classes) == 2 else "multiclass")
    return Coarse(classes, task, np.array([classes.index(mapping[name]) for name in fine]))


def test_answers(config: DataConfig) -> tuple[np.ndarray, Answers] | None:
    """The test table's ids and their answers (``data.answer_id``), read without its images; None without one."""
    if config.answer_id is None or config.test_csv is None:
        return None
    table = read_competition_table(config.test_csv, config.pixels, False, config.coco_label, config.reader)
    problems: list[str] = []
    ids = _table_ids(table.frame, config, config.test_csv, table.is_pixel_table, problems)
    if problems:
        raise DataError("\n".join(problems))
    return ids, Answers(answer_keys(table.frame, config.answer_id, config.test_csv), config.answer_aggregate)


def answer_columns(template: str | None) -> list[str]:
    """The table columns ``data.answer_id`` names (``{patient_id}_{laterality}``: patient_id, laterality)."""
    return re.findall(r"\{([^{}]+)\}", template or "")


def answer_keys(frame: pd.DataFrame, template: str, source: Path) -> np.ndarray:
    """Each row's answer id, ``data.answer_id`` filled from its columns (``{patient_id}_{laterality}``)."""
    columns = answer_columns(template)
    _require_columns(frame, source, columns)
    pieces = re.split(r"\{[^{}]+\}", template)
    keys = pd.Series(pieces[0], index=frame.index)
    for column, after in zip(columns, pieces[1:]):
        keys = keys + frame[column].str.strip() + after
    return np.asarray(keys.tolist(), dtype=object)


def _table_answers(frame: pd.DataFrame, config: DataConfig, source: Path, problems: list[str],
                   targets: np.ndarray | None = None) -> Answers | None:
    """The rows' answers (``data.answer_id``); an answer whose rows disagree on the target is a problem naming it."""
    if config.answer_id is None:
        return None
    keys = answer_keys(frame, config.answer_id, source)
    if targets is not None:
        flat = pd.DataFrame(targets.reshape(len(keys), -1))
        spread = flat.groupby(keys).nunique(dropna=False).max(axis=1)
        split = spread.index[spread.to_numpy() > 1].tolist()
        if split:
            problems.append(f"{source}: {len(split)} answers ({config.answer_id}) whose images have different targets: "
                            f"{summarize(split, quote=True)}; one answer has one target")
    return Answers(keys, config.answer_aggregate)


def _table_ids(frame: pd.DataFrame, config: DataConfig, source: Path, pixel_table: bool,
               problems: list[str]) -> np.ndarray:
    """The id column; a pixel table without one (Digit Recognizer) is numbered by row from 1, as Kaggle does."""
    if pixel_table and config.id_col not in frame.columns:
        return np.asarray([str(row) for row in range(1, len(frame) + 1)], dtype=object)
    _require_columns(frame, source, [config.id_col])
    return _check_ids(frame, config.id_col, source, problems)


def _folder_test(folders: list[Path], classes: list[str], task: str) -> CompetitionData:
    """A test set with no table: the image files of the folders, named by their file names without extension, in
    name order (folder by folder)."""
    files = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise DataError(f"data.test_image_dir: image folder not found: {folder}")
        files += sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file())
    where = ", ".join(map(str, folders))
    if not files:
        raise DataError(f"{where}: no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) to make the test set of")
    ids = np.array([path.stem for path in files], dtype=object)
    doubled = sorted(image_id for image_id, count in Counter(ids.tolist()).items() if count > 1)
    if doubled:
        raise DataError(f"{where}: several files share a name without extension, so the test ids are ambiguous: "
                        f"{summarize(doubled, quote=True)}")
    return CompetitionData(ids, files, task, list(classes), None, None, Path(folders[0]))


def _table_images(table: Table, frame: pd.DataFrame, ids: np.ndarray, image_dir: Path | list[Path] | None,
                  config: DataConfig, source: Path, problems: list[str], test: bool = False):
    """The rows' images: the table's own (pixel columns, JSON bands), a reader's, or image files."""
    reader = config.reader
    if table.is_pixel_table:
        if image_dir and reader is None:
            problems.append(f"{source}: holds its images as pixel columns, but an image folder is set ({image_dir}); "
                            "remove data.image_dir / data.test_image_dir")
        return table.pixels
    if reader is not None and reader.kind in PER_ID_KINDS:
        paths = resolve_image_paths(frame, ids, image_dir, None, source, problems, config.id_col,
                                    pattern=reader.pattern(test))
        return None if paths is None or problems else per_id_source(reader, paths, source)
    if reader is not None and reader.kind in CONTAINER_KINDS and image_dir and not problems:
        roots = [Path(folder) for folder in (image_dir if isinstance(image_dir, list) else [image_dir])]
        return container_source(reader, roots, ids, config.id_col, source, test)
    return resolve_image_paths(frame, ids, image_dir, config.image_col, source, problems, config.id_col)


def encode_targets(frame: pd.DataFrame, config: DataConfig, problems: list[str]) -> tuple[str, list[str], np.ndarray]:
    """Infer the task when it is not given, fix the class order and encode the targets."""
    source = config.train_csv
    configured_classes = config.class_names()
    target_columns = [config.target] if isinstance(config.target, str) else list(config.target)
    if config.task == "regression" or (config.task is None and _fractional_numbers(frame, target_columns)):
        return "regression", target_columns, _encode_values(frame, target_columns, config, problems)
    if config.task == "heads":
        classes, targets = _encode_heads(frame, target_columns, source, problems)
        return "heads", classes, targets
    if isinstance(config.target, list):
        if configured_classes and configured_classes != list(config.target):
            raise DataError(f"{source}: data.classes must equal the data.target columns when targets are 0/1 columns")
        if config.task == "multiclass":
            return "multiclass", list(config.target), _one_hot_classes(frame, config.target, source, problems)
        if config.task not in (None, "multilabel"):
            raise DataError(f"{source}: data.target lists columns: a multilabel target, or with task multiclass one-hot "
                            f"columns; got task {config.task!r}")
        return "multilabel", list(config.target), _encode_indicator_columns(frame, config.target, source, problems)
    column = normalize_numeric_labels(frame[config.target].str.strip(), source, config.target)
    is_multilabel = config.task == "multilabel" or (
        config.task is None and column.str.contains(re.escape(config.label_sep), regex=True).any()
    )
    if is_multilabel:
        classes, matrix = _encode_label_strings(column, configured_classes, config, source, problems)
        return "multilabel", classes, matrix
    missing = column.isin(MISSING_TOKENS).to_numpy()
    _report(problems, source, missing, column, f"empty or NaN value in column {config.target!r}")
    present = column[~missing]
    classes = configured_classes or sort_class_names(present.unique().tolist())
    task = config.task or ("binary" if len(classes) == 2 else "multiclass")
    if task == "binary" and len(classes) != 2:
        problems.append(f"{source}: task binary expects 2 classes in column {config.target!r}, got {len(classes)}: {summarize(classes)}")
    index = {name: position for position, name in enumerate(classes)}
    unknown = (~missing) & ~column.isin(index).to_numpy()
    _report(problems, source, unknown, column, f"label not in data.classes ({summarize(classes)})")
    targets = column.map(index).fillna(-1).astype(np.int64).to_numpy()
    return task, classes, targets


def _encode_heads(frame: pd.DataFrame, columns: list[str], source: Path, problems: list[str]
                  ) -> tuple[list[str], np.ndarray]:
    """Several multiclass heads (``task: heads``): each column's classes (sorted, numerically when whole numbers) as
    ``<column>=<class>``, and each row's class index per head; an empty cell, a head of one class or a column name
    holding ``=`` is a problem."""
    classes, targets = [], np.zeros((len(frame), len(columns)), dtype=np.int64)
    for index, column in enumerate(columns):
        cells = normalize_numeric_labels(frame[column].str.strip(), source, column)
        missing = cells.isin(MISSING_TOKENS).to_numpy()
        _report(problems, source, missing, cells, f"empty or NaN value in head {column!r}")
        names = sort_class_names(cells[~missing].unique().tolist())
        if HEAD_SEPARATOR in column or len(names) < 2:
            problems.append(f"{source}: head {column!r} " + (f"holds one class ({names[0]!r}): nothing to learn"
                            if len(names) == 1 else f"names a head with {HEAD_SEPARATOR!r}; rename the column"))
        classes += [f"{column}{HEAD_SEPARATOR}{name}" for name in names]
        targets[:, index] = cells.map({name: position for position, name in enumerate(names)}).fillna(0).to_numpy()
    return classes, targets


def _fractional_numbers(frame: pd.DataFrame, columns: list[str]) -> bool:
    """Every cell of the target columns a number (or empty), some not whole: a numeric target, not classes."""
    cells = frame[columns].apply(lambda column: column.str.strip())
    present = cells[~cells.isin(MISSING_TOKENS)].stack()
    numbers = pd.to_numeric(present, errors="coerce")
    return bool(len(numbers)) and bool(numbers.notna().all()) and bool((numbers % 1 != 0).any())


def _encode_values(frame: pd.DataFrame, columns: list[str], config: DataConfig, problems: list[str]) -> np.ndarray:
    """A regression target's columns as a float64 matrix: text and infinities are problems naming the cells; an
    empty or NaN cell is one too unless ``data.missing_targets: drop`` (the row stays NaN and is dropped)."""
    source = config.train_csv
    cells = frame[columns].apply(lambda column: column.str.strip())
    missing = cells.isin(MISSING_TOKENS).to_numpy()
    values = cells.apply(lambda column: pd.to_numeric(column, errors="coerce")).to_numpy(np.float64, copy=True)
    for what, bad in (("not a number", np.isnan(values) & ~missing), ("infinite", np.isinf(values))):
        rows, cols = np.nonzero(bad)
        if len(rows):
            cells_named = [f"line {row + 2} column {columns[col]!r} = {cells.iat[row, col]!r}"
                           for row, col in zip(rows, cols)]
            problems.append(f"{source}: {len(rows)} regression target cells {what}: {summarize(cells_named)}")
    if missing.any() and config.missing_targets == "refuse":
        rows = np.flatnonzero(missing.any(axis=1))
        problems.append(f"{source}: {len(rows)} rows with an empty or NaN target: "
                        f"{summarize([f'line {row + 2}' for row in rows])}; fill them, or set data.missing_targets: "
                        "drop to leave them out")
    values[missing] = np.nan
    return values


def _without_missing_targets(data: CompetitionData, config: DataConfig) -> CompetitionData:
    """A regression table without its rows of missing targets (``data.missing_targets: drop``, said in a warning);
    a target column of one value left is an error (nothing to learn)."""
    missing = np.isnan(data.targets).any(axis=1)
    if missing.any():
        warnings.warn(f"{data.source}: left out {int(missing.sum())} rows with an empty or NaN target "
                      f"(data.missing_targets: drop): {summarize(data.ids[missing].tolist(), quote=True)}",
                      DataWarning, stacklevel=3)
        data = data.subset(~missing)
    if not len(data):
        raise DataError(f"{data.source}: every row's target is empty or NaN")
    constant = [name for name, column in zip(data.classes, data.targets.T) if np.ptp(column) == 0]
    if constant:
        raise DataError(f"{data.source}: regression target {summarize(constant, quote=True)} holds one value "
                        f"({data.targets[0, data.classes.index(constant[0])]:g}) in every row; nothing to learn")
    return data


def normalize_numeric_labels(column: pd.Series, source: Path, name: str) -> pd.Series:
    """When every label is a number and some are written two ways (``1`` and ``1.0``), write each as its integer
    (``1.0`` -> ``1``), warning with the spellings changed; otherwise the column is returned as it is."""
    present = column[~column.isin(MISSING_TOKENS)]
    numbers = pd.to_numeric(present, errors="coerce")
    if present.empty or numbers.isna().any() or not np.isfinite(numbers).all() or (numbers % 1 != 0).any():
        return column
    canonical = numbers.astype(np.int64).astype(str)
    if canonical.nunique() == present.nunique():
        return column
    changed = sorted(set(present[present != canonical]))
    warnings.warn(f"{source}: column {name!r} writes one class in several ways; read {summarize(changed, quote=True)} "
                  "as whole numbers (1.0 -> 1)", DataWarning, stacklevel=2)
    return column.where(column.isin(MISSING_TOKENS), column.map(dict(zip(present, canonical))))


def sort_class_names(names: list[str]) -> list[str]:
    """Sorted class names; numerically when every name is an integer (``2`` before ``10``)."""
    if names and all(re.fullmatch(r"-?\d+", name) for name in names):
        return sorted(names, key=int)
    return sorted(names)


def resolve_image_paths(
    frame: pd.DataFrame,
    ids: np.ndarray,
    image_dir: Path | list[Path] | None,
    image_col: str | None,
    source: Path,
    problems: list[str],
    id_col: str | None = None,
    pattern: str | None = None,
) -> list[Path] | None:
    """Find each row's image: ``<image_dir>/<image_col value>``, ``<image_dir>/<id>.<any image extension>``, or
    a reader's file named from the id by ``pattern`` (``{id[0]}/{id}.npy``).

    A name that leads outside ``image_dir`` (``..``, an absolute path) is refused, as is a missing file; symbolic
    links in the folder are followed for reading (Kaggle's ``/kaggle/input`` is made of them). When files are
    missing, the error says what the folder holds and which key fixes it.
    """
    roots = [Path(folder) for folder in (image_dir if isinstance(image_dir, list) else [image_dir]) if folder]
    if not roots:
        return None
    absent = [root for root in roots if not root.is_dir()]
    if absent:
        problems.append(f"{source}: image folder not found: {', '.join(map(str, absent))}")
        return None
    root = roots[0]
    if image_col or pattern:
        names = frame[image_col].tolist() if image_col else [id_path(pattern, str(image_id)) for image_id in ids]
        candidates = [next((folder / name for folder in roots if (folder / name).is_file()), root / name)
                      for name in names]
    else:
        by_stem = _index_folders(roots, source, problems)
        candidates = [by_stem.get(image_id, root / f"{image_id}.*") for image_id in ids]
    missing, escaping = _unreadable_candidates(ids, candidates, roots)
    if escaping:
        problems.append(f"{source}: {len(escaping)} image paths outside {', '.join(map(str, roots))}: "
                        f"{summarize(escaping)}")
    if missing:
        problems.append(f"{source}: {len(missing)} image files not found: {summarize(missing)}"
                        + ("" if pattern else _missing_images_hint(root, ids, image_col, id_col)))
    return candidates


def _unreadable_candidates(ids: np.ndarray, candidates: list[Path], roots: list[Path]) -> tuple[list[str], list[str]]:
    """The rows whose path is not a file (missing, a folder, a symbolic-link loop) and those whose name
    leads outside every root, each as ``line N id 'X': path``. On strings, not ``pathlib``: 50,000 rows in a
    fraction of a second rather than seconds."""
    insides = tuple(os.path.join(os.path.normpath(os.path.abspath(folder)), "") for folder in roots)
    missing, escaping = [], []
    for line, (image_id, path) in enumerate(zip(ids, candidates), start=2):
        text = os.fspath(path)
        if not os.path.normpath(os.path.abspath(text)).startswith(insides):
            escaping.append(f"line {line} id {image_id!r}: {path}")
        elif not os.path.isfile(text):
            missing.append(f"line {line} id {image_id!r}: {path}")
    return missing, escaping


def _missing_images_hint(root: Path, ids: np.ndarray, image_col: str | None, id_col: str | None) -> str:
    """What the folder holds, when ids and files do not match: ids that are file names already (the fix:
    ``data.image_col``), or a few of the names that are there."""
    if not image_col:
        plain = (str(image_id) for image_id in ids[:1000])
        named = next((name for name in plain if "/" not in name and "\\" not in name and name not in (".", "..")
                      and (root / name).is_file()), None)
        if named is not None:
            return (f"; the ids are file names ({named!r} is in {root}): set data.image_col: {id_col or 'id'} to "
                    "read each row's file by that name")
    present = sorted(path.name for path in itertools.islice(root.iterdir(), 1000) if path.is_file())
    if not present:
        return f"; {root} holds no files"
    return f"; {root} holds files such as {summarize(present, 3, quote=True)}"


def _index_folders(roots: list[Path], source: Path, problems: list[str]) -> dict[str, Path]:
    """Image files by name without extension across ``roots``; a name in two of the folders is a problem."""
    if len(roots) == 1:
        return _index_images(roots[0])
    merged: dict[str, Path] = {}
    clashes = []
    for root in roots:
        for stem, path in _index_images(root).items():
            if stem in merged:
                clashes.append(f"{stem!r} in {merged[stem].parent} and {root}")
            merged.setdefault(stem, path)
    if clashes:
        problems.append(f"{source}: {len(clashes)} image names are in more than one test folder: {summarize(clashes)}")
    return merged


def _index_images(root: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        raise DataError(f"{root}: cannot list the image folder: {exc.strerror or exc}") from None
    for name in names:
        stem, extension = os.path.splitext(name)
        if extension.lower() in IMAGE_EXTENSIONS and stem not in by_stem:
            by_stem[stem] = root / name
    return by_stem


def _encode_indicator_columns(frame: pd.DataFrame, columns: list[str], source: Path, problems: list[str]) -> np.ndarray:
    values = frame[columns].apply(lambda column: column.str.strip())
    cells = _cells_outside(values, {"-1", "0", "1", "1.0", "0.0", "-1.0"}, columns)
    if cells:
        problems.append(f"{source}: {len(cells)} label cells not in {{0, 1}} (or -1/0/1 VOC style): {summarize(cells)}")
        return np.zeros(values.shape, dtype=np.int8)
    numeric = values.astype(float).astype(np.int8).to_numpy()
    if (numeric == -1).any():  # VOC convention: -1 absent, 0 difficult, 1 present
        return np.select([numeric == 1, numeric == 0], [PRESENT, DIFFICULT], ABSENT).astype(np.int8)
    return numeric


def _cells_outside(values: pd.DataFrame, allowed: set[str], columns: list[str]) -> list[str]:
    """``line L column C = V`` for every cell of ``values`` not in ``allowed``."""
    rows, cols = np.nonzero(~values.isin(allowed).to_numpy())
    return [f"line {row + 2} column {columns[col]!r} = {values.iat[row, col]!r}" for row, col in zip(rows, cols)]


def _one_hot_classes(frame: pd.DataFrame, columns: list[str], source: Path, problems: list[str]) -> np.ndarray:
    """One-hot 0/1 columns (``task: multiclass``, as Plant Pathology 2020 ships them): the index of each row's one
    1; a row with no 1 or several is reported with its line."""
    values = frame[columns].apply(lambda column: column.str.strip())
    cells = _cells_outside(values, {"0", "1", "0.0", "1.0"}, columns)
    if cells:
        problems.append(f"{source}: {len(cells)} one-hot cells not 0 or 1: {summarize(cells)}")
        return np.zeros(len(frame), dtype=np.int64)
    ones = values.astype(float).to_numpy() == 1
    wrong = ones.sum(axis=1) != 1
    if wrong.any():
        lines = [f"line {row + 2} ({int(ones[row].sum())} ones)" for row in np.flatnonzero(wrong)]
        problems.append(f"{source}: task multiclass with one-hot columns needs exactly one 1 per row; "
                        f"{int(wrong.sum())} rows differ: {summarize(lines)}")
    return ones.argmax(axis=1).astype(np.int64)


def _encode_label_strings(
    column: pd.Series, configured_classes: list[str] | None, config: DataConfig, source: Path, problems: list[str]
) -> tuple[list[str], np.ndarray]:
    nan_like = column.isin(MISSING_TOKENS - {""}).to_numpy()
    _report(problems, source, nan_like, column, f"NaN in label column {config.target!r} (leave the cell empty for no labels)")
    label_lists = [[] if bad else [label for label in text.split(config.label_sep) if label] for text, bad in zip(column, nan_like)]
    seen = sorted({label for labels in label_lists for label in labels})
    classes = configured_classes or sort_class_names(seen)
    known = set(classes)
    unknown = [f"line {row + 2} {label!r}" for row, labels in enumerate(label_lists) for label in labels
               if label not in known]
    if unknown:
        problems.append(f"{source}: {len(unknown)} labels not in data.classes: {summarize(unknown)}")
    binarizer = preprocessing.MultiLabelBinarizer(classes=classes)
    with warnings.catch_warnings():  # unknown labels are reported above, with their lines
        warnings.simplefilter("ignore", UserWarning)
        matrix = binarizer.fit_transform(label_lists)
    return classes, np.where(matrix == 1, PRESENT, ABSENT).astype(np.int8)


def _check_ids(frame: pd.DataFrame, id_col: str, source: Path, problems: list[str]) -> np.ndarray:
    ids = frame[id_col].str.strip()
    empty = ids.isin(MISSING_TOKENS).to_numpy()
    _report(problems, source, empty, ids, f"empty id in column {id_col!r}")
    duplicated = ids.duplicated(keep=False).to_numpy() & ~empty
    _report(problems, source, duplicated, ids, f"duplicate id in column {id_col!r}")
    return np.asarray(ids.tolist(), dtype=object)


def _read_groups(frame: pd.DataFrame, group_col: str | None, source: Path, problems: list[str]) -> np.ndarray | None:
    if group_col is None:
        return None
    groups = frame[group_col].str.strip()
    _report(problems, source, groups.isin(MISSING_TOKENS).to_numpy(), groups, f"empty group in column {group_col!r}")
    return np.asarray(groups.tolist(), dtype=object)


def _report(problems: list[str], source: Path, mask: np.ndarray, values: pd.Series, what: str) -> None:
    rows = np.flatnonzero(mask)
    if len(rows):
        cells = [f"line {row + 2} {values.iat[row]!r}" for row in rows]
        problems.append(f"{source}: {len(rows)} × {what}: {summarize(cells)}")


def _require_columns(frame: pd.DataFrame, source: Path, columns: list[str]) -> None:
    absent = [column for column in columns if column not in frame.columns]
    if absent:
        raise DataError(f"{source}: column(s) {', '.join(map(repr, absent))} not found; columns are: {', '.join(frame.columns)}")


def _optional(*names: str | None) -> list[str]:
    return [name for name in names if name]
