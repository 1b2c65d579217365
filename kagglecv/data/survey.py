"""What a competition folder, as Kaggle ships it, says about the config: tables, ids, targets, task, images, test
ids and the submission's shape (``kagglecv init``).

Every inference is a :class:`Finding` (the key, the value, and why), so ``init`` can write each key with its reason
and print the table. What the folder cannot say is asked for: the metric whenever the sample's value type fits
more than one usual metric (a sample of zeros fits AUC, QWK and accuracy alike), and which file or folder is meant
when two fit. Nothing here writes a file.
"""

from __future__ import annotations

import functools
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from kagglecv.core.errors import DataError, KagglecvError, summarize
from kagglecv.core.metrics import ALIASES, fits_task, is_metric_file, resolve_metric
from kagglecv.core.shapes import cells_are_tags, sample_top_k
from kagglecv.core.topk import RESERVED_IDENTITY_NAMES
from kagglecv.data.coco import COCO_NAMES, COCO_SUFFIX, is_coco_table, read_coco_table
from kagglecv.data.decoding import open_image
from kagglecv.data.load import answer_columns
from kagglecv.data.long import long_test_ids, widen
from kagglecv.data.pixels import pixel_columns
from kagglecv.data.reader_survey import (
    HDF5_SUFFIXES,
    MAX_SIDE,
    SMALL_IMAGE,
    input_size,
    json_bands_table,
    survey_json_bands,
    survey_reader,
)
from kagglecv.data.readers.json_bands import is_json_records, read_json_bands
from kagglecv.data.table import (
    IMAGE_EXTENSIONS,
    MISSING_TOKENS,
    read_csv_head,
    read_csv_strings,
)

# The usual metrics of each (task, submission format); --metric picks one when there are several.
USUAL_METRICS = {
    ("multiclass", "label"): ["accuracy", "qwk", "qwk_thresholds", "f1_macro", "balanced_accuracy"],
    ("multiclass", "probabilities"): ["log_loss", "roc_auc_ovr", "roc_auc_macro"],
    ("binary", "positive"): ["roc_auc", "binary_log_loss"],
    ("binary", "label"): ["binary_accuracy", "binary_f1", "accuracy"],
    ("multilabel", "labels"): ["f2_samples", "fbeta:1:samples", "f1_samples"],
    ("multilabel", "probabilities"): ["roc_auc_macro", "map"],
    ("regression", "values"): ["rmse", "mae", "r2", "rmsle"],
}
MANY_VALUES = 10  # a column of whole numbers with more distinct values than this may be a count or a score
LABEL_METRICS_OF_BINARY = {"binary_accuracy", "binary_f1", "accuracy", "f1_macro", "qwk", "balanced_accuracy"}
TABLE_SUFFIXES = (".csv", ".csv.gz")
MIN_IDENTITIES, MAX_IMAGES_PER_IDENTITY = 50, 5  # a top-k target this wide and this thin is individuals
SAMPLE_ROWS = 10_000  # of the sample submission: its header and values say its shape; its ids are read by `run`


@dataclass(frozen=True)
class Finding:
    key: str
    value: object
    why: str


@dataclass
class Survey:
    folder: Path
    findings: list[Finding] = field(default_factory=list)

    def add(self, key: str, value: object, why: str) -> None:
        self.findings.append(Finding(key, value, why))

    def value(self, key: str, default=None):
        return next((finding.value for finding in self.findings if finding.key == key), default)


@dataclass
class _Tables:
    train: Path
    sample: Path
    test: Path | None


def survey_competition(folder: Path, metric: str | None = None, train: Path | None = None,
                       sample: Path | None = None) -> Survey:
    """Every config key the folder decides, with its reason; an ambiguity is one error naming the choices and the
    flag that settles it (``--metric``, ``--train``, ``--sample``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KagglecvError(f"{folder}: not a folder; expected a competition folder as Kaggle ships it")
    survey = Survey(folder)
    tables = _find_tables(folder, train, sample)
    coco = is_coco_table(tables.train)
    survey.add("data.train_csv", tables.train, "the COCO label file of the training images (images, annotations, "
               "categories)" if coco else "the table that is neither the sample nor the test table")
    sample = read_csv_head(tables.sample, SAMPLE_ROWS)
    if sample.shape[1] < 2:
        raise DataError(f"{tables.sample}: expected an id column and at least one value column, got "
                        f"{list(sample.columns)}")
    if coco:
        return _coco_competition(survey, tables, sample, metric)
    bands = is_json_records(tables.train)
    if bands:  # Statoil: the training table is train.json, its bands the images
        train = read_json_bands(tables.train, survey_json_bands(survey.add, tables.train)[0])[0]
    else:
        train = read_csv_strings(tables.train)
    pixel_table = bool(pixel_columns(list(train.columns), tables.train))
    _ids(survey, train, sample, tables, pixel_table)
    if _is_long(train, sample):
        return _long_competition(survey, folder, train, sample, tables, metric)
    if survey.value("data.task") == "heads":
        return _heads_competition(survey, folder, train, sample, tables, metric)
    task, target, classes = _target(survey, train, sample, tables, metric)
    fmt = _submission_format(survey, task, classes, sample, tables.sample, metric)
    _metric(survey, task, fmt, metric, sample)
    if fmt == "top_k" and isinstance(target, str):
        _identities(survey, train[target].str.strip(), sample)
    if tables.test is not None:
        survey.add("data.test_csv", tables.test, "the test table")
        _features(survey, train, tables)
    survey.add("submit.sample", tables.sample, "the sample submission: its header, ids and order are the submission's"
               + ("; its rows are the test ids (no test table)" if tables.test is None else ""))
    if pixel_table:
        _pixel_images(survey, train, tables.train)
    elif not bands:
        _images(survey, folder, train, sample, tables)
    return survey


def _images(survey: Survey, folder: Path, train: pd.DataFrame, sample: pd.DataFrame, tables: _Tables) -> None:
    """Image files in folders, or a reader's files (:mod:`kagglecv.data.reader_survey`) when there are none or
    the test images exist only in an HDF5 file (ISIC 2024 ships JPEGs of the training images only)."""
    id_col = survey.value("data.id_col")
    train_ids, test_ids = train[id_col].astype(str).tolist()[:50], _test_ids(tables, sample, id_col)
    hdf5_test = any(path.suffix.lower() in HDF5_SUFFIXES and "test" in path.name.lower() for path in folder.iterdir())
    has_folders = any(path.is_dir() and _holds_images(path) for path in folder.iterdir())
    if (hdf5_test or not has_folders) and survey_reader(survey.add, folder, train_ids, test_ids):
        return
    _image_folders(survey, folder, train, sample, tables)


def _find_tables(folder: Path, train: Path | None, sample: Path | None) -> _Tables:
    tables = sorted(path for path in folder.iterdir() if path.is_file() and path.name.lower().endswith(TABLE_SUFFIXES))
    for flag, chosen in (("--train", train), ("--sample", sample)):
        if chosen is not None and not Path(chosen).is_file():
            raise KagglecvError(f"{flag} {chosen}: file not found")
    if not tables:
        archives = sorted(path.name for path in folder.iterdir() if path.suffix.lower() in (".zip", ".7z", ".tar"))
        hint = f"; unpack {summarize(archives, quote=True)} first" if archives else ""
        raise DataError(f"{folder}: no CSV tables (train.csv, sample_submission.csv){hint}")
    samples = [Path(sample)] if sample is not None else [path for path in tables if "sample" in path.name.lower()]
    if len(samples) != 1:
        raise KagglecvError(f"{folder}: {'no' if not samples else 'several'} sample submissions "
                            f"({summarize([path.name for path in samples] or ['sample_submission.csv'], quote=True)}); "
                            "kagglecv init needs exactly one to know the submission's shape: give --sample FILE")
    rest = [path for path in tables if path.resolve() not in {p.resolve() for p in samples}]
    tests = [path for path in rest if path.name.lower().startswith("test")]
    if len(tests) > 1:
        raise KagglecvError(f"{folder}: several test tables ({summarize([p.name for p in tests], quote=True)}); keep "
                            "the one whose rows are the test images")
    candidates = [Path(train)] if train is not None else [path for path in rest if path not in tests]
    coco_train, coco_test = _coco_files(folder)
    if not candidates and coco_train is not None:  # Herbarium, iNaturalist, iWildCam: the labels are COCO JSON
        return _Tables(coco_train, samples[0], coco_test)
    if not candidates and json_bands_table(folder, "train") is not None:  # Statoil: train.json and test.json
        return _Tables(json_bands_table(folder, "train"), samples[0], json_bands_table(folder, "test"))
    if len(candidates) > 1:
        named = [path for path in candidates if "train" in path.name.lower() or "label" in path.name.lower()]
        candidates = named if named else candidates
    if len(candidates) != 1:
        names = summarize([path.name for path in candidates] or ["train.csv"], quote=True)
        raise KagglecvError(f"{folder}: {'no training table' if not candidates else 'several training tables'} "
                            f"({names}); give --train FILE")
    return _Tables(candidates[0], samples[0], tests[0] if tests else None)


def _coco_files(folder: Path) -> tuple[Path | None, Path | None]:
    """The COCO label files of the training and the test images: ``train/metadata.json`` (or ``annotations.json``)
    and its ``test/`` twin, as Herbarium ships them, or ``train*.json`` / ``test*.json`` beside the sample
    (iNaturalist 2019)."""
    def first(split: str) -> Path | None:
        nested = [folder / split / name for name in COCO_NAMES]
        beside = [path for path in sorted(folder.glob(f"{split}*{COCO_SUFFIX}")) if is_coco_table(path)]
        return next((path for path in [*nested, *beside] if path.is_file()), None)
    return first("train"), first("test")


def _coco_competition(survey: Survey, tables: _Tables, sample: pd.DataFrame, metric: str | None) -> Survey:
    """A competition whose labels are a COCO label file: rows ``id, image, label`` read from it
    (:mod:`kagglecv.data.coco`), the images under its folder, the test images under the test file's."""
    numeric = bool(sample.iloc[:, 1].str.strip().str.fullmatch(r"\d+").all())
    label = "category_id" if numeric else "name"
    train = read_coco_table(tables.train, label)
    survey.add("data.coco_label", label, "the sample's labels are numbers: category ids" if numeric else
               "the sample's labels are not numbers: category names")
    survey.add("data.id_col", "id", f"images[].id of {tables.train.name} (the sample's {sample.columns[0]!r})")
    classes = sorted({label for cell in train["label"] for label in cell.split()})
    several = bool(train["label"].str.contains(" ").any())
    task = "multilabel" if several else "binary" if len(classes) == 2 else "multiclass"
    survey.add("data.target", "label", "the categories of each image's annotations")
    survey.add("data.task", task, "images with several categories" if several else
               f"{len(classes)} categories, one per image: " + summarize(classes, 6))
    fmt = _submission_format(survey, task, classes, sample, tables.sample, metric)
    _metric(survey, task, fmt, metric, sample)
    if tables.test is None:
        raise DataError(f"{tables.train.parent.parent}: no COCO label file of the test images (test/metadata.json); "
                        "give --set data.test_csv=FILE")
    survey.add("data.test_csv", tables.test, "the COCO label file of the test images")
    survey.add("submit.sample", tables.sample, "the sample submission: its header, ids and order are the submission's")
    survey.add("data.image_dir", tables.train.parent, "file_name in the label file is relative to its folder")
    survey.add("data.image_col", "image", "images[].file_name")
    survey.add("data.test_image_dir", tables.test.parent, "the test label file's folder")
    inside = [tables.train.parent / name for name in train["image"][:16]
              if (tables.train.parent / name).resolve().is_relative_to(tables.train.parent.resolve())]
    _image_look(survey, tables.train.parent, inside)
    return survey


def _column(frame: pd.DataFrame, name: str) -> str | None:
    """The frame's column called ``name``, ignoring case (Digit Recognizer: ``Label`` in the sample, ``label``)."""
    return next((column for column in frame.columns if column == name), None) or next(
        (column for column in frame.columns if column.lower() == name.lower()), None)


def _ids(survey: Survey, train: pd.DataFrame, sample: pd.DataFrame, tables: _Tables, pixel_table: bool) -> None:
    id_col = sample.columns[0]
    if id_col in train.columns:
        survey.add("data.id_col", id_col, f"the sample's first column, also in {tables.train.name}")
    elif pixel_table:
        survey.add("data.id_col", id_col, f"the sample's first column; {tables.train.name} has none, so rows are "
                   "numbered from 1, as Kaggle numbers them")
    elif not (_heads_of_images(survey, train, id_col, tables) or _answers_of_images(survey, train, id_col, tables)):
        raise DataError(f"{tables.train}: no column {id_col!r} (the sample's id column); its columns are "
                        f"{summarize(list(train.columns), quote=True)}")


LONG_CLASSES = 64  # a long table's ids end in one of at most this many class names


def _is_long(train: pd.DataFrame, sample: pd.DataFrame) -> bool:
    """A long table (RSNA ICH): the training table is the sample's two columns, and its ids are an image and one of
    a few class names after the last ``_``, every image with every class once."""
    if list(train.columns) != list(sample.columns) or train.shape[1] != 2:
        return False
    parts = train.iloc[:, 0].str.rsplit("_", n=1, expand=True)
    if parts.shape[1] != 2 or parts[1].isna().any():
        return False
    classes, images = parts[1].nunique(), parts[0].nunique()
    numbered = parts[1].str.fullmatch(r"\d+").all()  # train_0, train_1: ids numbered, not classes
    return 1 < classes <= LONG_CLASSES and images > 1 and len(train) == images * classes and not numbered \
        and not parts.duplicated().any()


def _long_competition(survey: Survey, folder: Path, train: pd.DataFrame, sample: pd.DataFrame, tables: _Tables,
                      metric: str | None) -> Survey:
    """Keys of a long competition: ``data.long_id``, the value column as the target, the wide task."""
    id_col, value_col = train.columns
    wide, classes = widen(train, id_col, value_col, "{id}_{class}", tables.train)
    survey.add("data.long_id", "{id}_{class}", f"every id is an image and one of {len(classes)} classes "
               f"({summarize(classes, 6)}): one row per image and class")
    survey.add("data.target", value_col, "the sample's value column, one per image and class")
    values = set(wide[classes].stack().str.strip())
    task = "multilabel" if values <= {"0", "1", "0.0", "1.0"} else "regression"
    survey.add("data.task", task, "0/1 per image and class" if task == "multilabel" else "numbers per image and class")
    if metric is None:
        raise KagglecvError(f"--metric: a long submission of {task} values fits several metrics; give --metric, e.g. "
                            + ("weighted_log_loss:0=2 (RSNA ICH: the first class, any, weighs 2)"
                               if task == "multilabel" else "rmse"))
    _metric(survey, task, "", metric, sample)
    survey.add("submit.sample", tables.sample, "the sample submission: one row per test image and class, its ids "
               "name the test images" + ("; no test table" if tables.test is None else ""))
    if tables.test is not None:
        survey.add("data.test_csv", tables.test, "the test table")
    _images(survey, folder, wide, long_test_ids(sample, id_col, "{id}_{class}", tables.sample, classes), tables)
    return survey


def _heads_of_images(survey: Survey, train: pd.DataFrame, id_col: str, tables: _Tables) -> bool:
    """Several heads (Bengali.AI): the test table lists ``<id_col>, <image column>, <component>`` rows whose
    components are columns of the training table, one per head; the sample is long over them."""
    test = read_csv_strings(tables.test) if tables.test is not None else None
    if test is None or id_col not in test.columns:
        return False
    images = next((column for column in test.columns if column != id_col and column in train.columns), None)
    component = next((column for column in test.columns
                      if column not in (id_col, images) and set(test[column]) <= set(train.columns)), None)
    if images is None or component is None or test[component].nunique() < 2:
        return False
    heads = [column for column in train.columns if column in set(test[component])]
    survey.add("data.id_col", images, f"one row per image in {tables.train.name}; the test table names it per head")
    survey.add("data.target", heads, f"the test table's {component!r} values: one head each")
    survey.add("data.task", "heads", f"{len(heads)} heads of one backbone, each its own classes")
    survey.add("data.long_id", "{id}_{class}", f"the sample's {id_col} is <{images}>_<head>: one row per image and "
               "head")
    return True


def _heads_competition(survey: Survey, folder: Path, train: pd.DataFrame, sample: pd.DataFrame, tables: _Tables,
                       metric: str | None) -> Survey:
    """The rest of a several-heads competition's keys: the metric (asked), the tables, the images."""
    if metric is None:
        raise KagglecvError("--metric: several heads are scored per head and combined; give --metric, e.g. "
                            "heads:recall_macro:grapheme_root=2 (Bengali.AI: macro recall, the root weighing 2)")
    _metric(survey, "heads", "", metric, sample)
    survey.add("data.test_csv", tables.test, "the test table: its rows name each image once per head")
    survey.add("submit.sample", tables.sample, "the sample submission: one row per test image and head")
    test = read_csv_strings(tables.test)
    id_col = survey.value("data.id_col")
    _images(survey, folder, train, pd.DataFrame({id_col: pd.unique(test[id_col])}), tables)
    return survey


def _answers_of_images(survey: Survey, train: pd.DataFrame, id_col: str, tables: _Tables) -> bool:
    """Several images, one answer (RSNA Breast): the sample's id is a column of the test table made of two columns
    of both tables (``{patient_id}_{laterality}``); the rows are images, named by a column unique in training."""
    test = read_csv_strings(tables.test) if tables.test is not None else None
    if test is None or id_col not in test.columns:
        return False
    shared = [column for column in test.columns if column in train.columns]
    template = next((f"{{{first}}}{sep}{{{second}}}" for first in shared for second in shared if first != second
                     for sep in ("_", "-") if (test[first] + sep + test[second]).equals(test[id_col])), None)
    image_ids = [column for column in shared if train[column].is_unique and test[column].is_unique]
    if template is None or not image_ids:
        return False
    image_id = next((column for column in image_ids if "image" in column.lower()), image_ids[0])
    patient = template[1:].split("}")[0]
    survey.add("data.id_col", image_id, f"one row per image: unique in {tables.train.name} and the test table")
    survey.add("data.answer_id", template, f"the sample's {id_col} is {template} of the test table: several images, "
               "one answer")
    survey.add("data.answer_aggregate", "mean", "an answer's prediction is the mean of its images'")
    survey.add("data.group_col", patient, "an answer's first column: its images stay in one fold")
    return True


GROUP_NAMES = re.compile(r"patient|subject|individual|participant|case_?id|study|user|owner", re.IGNORECASE)
MAX_CATEGORIES = 1000  # a text column with more distinct values (or one per row) is an identifier, not a category


def _features(survey: Survey, train: pd.DataFrame, tables: _Tables) -> None:
    """The table beside the image: columns of both tables (numbers, or text of few values), a patient-like column
    of both as the fold group, and the training table's columns the test lacks, listed as leaks."""
    test_columns = list(read_csv_head(tables.test, 1).columns)
    target = survey.value("data.target")
    used = {survey.value("data.id_col", "id"), survey.value("data.image_col"), survey.value("data.group_col"),
            *([target] if isinstance(target, str) else target or []), *answer_columns(survey.value("data.answer_id"))}
    shared = [column for column in train.columns if column in test_columns and column not in used]
    group = survey.value("data.group_col") or next(
        (column for column in shared if GROUP_NAMES.search(column) and train[column].nunique() < len(train)), None)
    if group is not None and survey.value("data.group_col") is None:
        survey.add("data.group_col", group, f"a {group} column in both tables, repeated across rows: a patient's "
                   "images stay in one fold, and the stack's group-relative features are per patient")
    numeric, categorical = [], []
    for column in (column for column in shared if column != group):
        cells = train[column].str.strip()
        filled = cells[~cells.isin(["", "nan", "NaN", "NA"])]
        if len(filled) and pd.to_numeric(filled, errors="coerce").notna().all():
            numeric.append(column)
        elif filled.nunique() <= min(MAX_CATEGORIES, len(train) // 2):
            categorical.append(column)
    leaks = [column for column in train.columns if column not in test_columns and column not in used]
    if numeric or categorical:
        survey.add("data.features.numeric", numeric, f"columns of numbers in both {tables.train.name} and the test "
                   "table: `kagglecv stack` feeds them to its second-stage model")
        survey.add("data.features.categorical", categorical, "columns of few text values in both tables, encoded "
                   "from each fold's training rows")
    if leaks:
        survey.add("data.features.leaks", leaks, f"in {tables.train.name} but not the test table: the hidden test "
                   "will not have them, so nothing uses them (a model fed them learns a leak)")


def _target(survey: Survey, train: pd.DataFrame, sample: pd.DataFrame, tables: _Tables, metric: str | None):
    """The target column(s), the task and the classes, from the sample's value columns and the training table."""
    values = list(sample.columns[1:])
    matched = [_column(train, name) for name in values]
    if all(matched) and _numeric_target(train[matched], metric, tables):
        survey.add("data.target", matched[0] if len(matched) == 1 else matched,
                   f"the sample's value column{'s' if len(matched) > 1 else ''}, numbers in {tables.train.name}")
        survey.add("data.task", "regression", "a numeric target: values, not classes")
        return "regression", matched, matched
    if all(matched) and len(matched) > 1:
        indicator = train[matched].apply(lambda column: column.str.strip())
        if not indicator.isin(["0", "1", "0.0", "1.0"]).all().all():
            raise DataError(f"{tables.train}: columns {summarize(matched, quote=True)} (the sample's) are not all 0/1")
        one_hot = (indicator.astype(float).sum(axis=1) == 1).all()
        task = "multiclass" if one_hot else "multilabel"
        survey.add("data.target", matched, "the sample's value columns, 0/1 in the training table")
        survey.add("data.task", task, "exactly one 1 per row: one-hot classes" if one_hot else "rows with several or "
                   "no 1s: labels that are present or not")
        return task, matched, matched
    if len(values) == 1 and matched[0]:
        return _one_column_target(survey, train, matched[0], tables)
    for column in train.columns:  # the sample's columns are the classes: a column of the table holds them
        names = set(train[column].str.strip())
        if set(values) == names:
            survey.add("data.target", column, f"its values are the sample's {len(values)} class columns")
            survey.add("data.task", "multiclass", "one class per row")
            return "multiclass", column, values
    raise DataError(f"{tables.sample}: value columns {summarize(values, quote=True)} are neither columns of "
                    f"{tables.train} nor the values of one of its columns; set data.target by hand")


def _numeric_target(columns: pd.DataFrame, metric: str | None, tables: _Tables) -> bool:
    """Whether the target columns are numbers to predict: some not whole, or whole numbers of many values scored by
    a regression metric; whole numbers of many values without a metric are a question for ``--metric``."""
    cells = columns.apply(lambda column: column.str.strip())
    numbers = cells[~cells.isin(MISSING_TOKENS)].stack()
    values = pd.to_numeric(numbers, errors="coerce")
    if not len(values) or values.isna().any() or set(values.unique()) <= {0, 1}:
        return False
    if (values % 1 != 0).any():
        return True
    if metric is not None and not is_metric_file(metric):
        return fits_task(metric, "regression")
    if values.nunique() > MANY_VALUES and metric is None:
        raise KagglecvError(f"--metric: {tables.train.name}'s column {summarize(list(columns.columns), quote=True)} "
                            f"holds {values.nunique()} distinct whole numbers: a count or a score to predict (give "
                            "--metric rmse, mae, r2 or rmsle) or classes (give --metric accuracy, qwk, f1_macro or "
                            "log_loss)")
    return False


def _one_column_target(survey: Survey, train: pd.DataFrame, column: str, tables: _Tables):
    cells = train[column].str.strip()
    if cells_are_tags(cells):
        classes = sorted({tag for cell in cells for tag in cell.split()})
        survey.add("data.target", column, "the sample's value column; its cells are space-separated tags")
        survey.add("data.task", "multilabel", f"{len(classes)} tags, several per row")
        return "multilabel", column, classes
    classes = sorted(set(cells))
    survey.add("data.target", column, f"the sample's value column, in {tables.train.name}")
    task = "binary" if len(classes) == 2 else "multiclass"
    survey.add("data.task", task, f"{len(classes)} classes: " + summarize(classes, 6))
    return task, column, classes


def _submission_format(survey: Survey, task: str, classes: list[str], sample: pd.DataFrame, sample_path: Path,
                       metric: str | None) -> str:
    values = list(sample.columns[1:])
    if task == "regression":
        fmt, why = "values", "a numeric target: its values, clipped to the training range"
    elif len(values) > 1:
        fmt, why = "probabilities", f"the sample has one column per class ({len(values)})"
    elif task == "multilabel":
        fmt, why = "labels", "one column of space-separated tags"
    elif task == "multiclass":
        k = sample_top_k(sample, classes)
        if k > 1:
            survey.add("submit.top_k", k, f"the sample lists {k} names per row")
            fmt, why = "top_k", f"the sample lists {k} names per row, most likely first"
        else:
            fmt, why = "label", "one column of class names"
    elif metric is not None and _canonical(metric, task) in LABEL_METRICS_OF_BINARY:
        fmt, why = "label", f"one column, scored by {metric} (a label metric)"
    elif metric is not None:
        fmt, why = "positive", f"one column, scored by {metric}: the positive class's probability"
    else:
        numbers = pd.to_numeric(sample.iloc[:, 1], errors="coerce")
        fractional = numbers.notna().all() and ((numbers % 1) != 0).any()
        fmt, why = ("positive", "the sample holds fractions: a probability") if fractional else ("", "")
    if fmt:
        survey.add("submit.format", fmt, why)
    return fmt


def _identities(survey: Survey, labels: pd.Series, sample: pd.DataFrame) -> None:
    """Individuals, not classes (the whale playground, Happywhale): a top-k submission over many identities of a
    few images each, or a reserved label for an unseen one. Then an ArcFace embedding with neighbours, and plain
    k-fold (an identity of one image cannot be stratified)."""
    reserved = [name for name in RESERVED_IDENTITY_NAMES if name in set(labels)]
    counts = labels[~labels.isin(reserved)].value_counts()
    listed = {name for cell in sample.iloc[:, 1].astype(str) for name in cell.split()}
    unseen = [name for name in RESERVED_IDENTITY_NAMES if name in listed and name not in set(labels)]
    if len(counts) < MIN_IDENTITIES or counts.median() > MAX_IMAGES_PER_IDENTITY and not reserved + unseen:
        return
    why = (f"{len(counts)} identities of a median {counts.median():g} images"
           + (f", and {(reserved + unseen)[0]} for an unseen one" if reserved + unseen else ""))
    survey.add("model.identity.width", 512, f"{why}: an ArcFace embedding, predicted by nearest neighbours")
    survey.add("folds.method", "kfold", "identities of one or two images cannot be stratified")
    if unseen:
        survey.add("predict.identities.new_label", unseen[0], "the sample lists it, the training table does not")


def _canonical(metric: str, task: str) -> str:
    return ALIASES.get((metric, task), metric)


def _metric(survey: Survey, task: str, fmt: str, metric: str | None, sample: pd.DataFrame) -> None:
    if is_metric_file(metric):
        if not Path(metric).is_file():
            raise KagglecvError(f"--metric {metric}: metric file not found")
        survey.add("metric", metric, "--metric: the competition's own metric file (Kaggle's signature); give "
                   "--set metric_direction=maximize or minimize")
        return
    if metric is not None:
        resolve_metric(metric, task, "--metric")
        survey.add("metric", metric, "--metric")
        return
    if fmt == "top_k":
        k = survey.value("submit.top_k")
        survey.add("metric", f"map@{k}", f"a top-{k} list is scored by MAP@{k}")
        return
    choices = USUAL_METRICS.get((task, fmt)) or [*USUAL_METRICS[(task, "positive")], *USUAL_METRICS[(task, "label")]]
    shape = {"": "one 0/1 column (a label or a probability)"}.get(fmt, f"{fmt} ({task})")
    raise KagglecvError(f"--metric: the sample's values ({shape}) fit several metrics and the folder does not say "
                        f"which scores it; give --metric, e.g. one of {', '.join(choices)}, or a metric file "
                        "(path/to/metric.py)")


def _pixel_images(survey: Survey, train: pd.DataFrame, source: Path) -> None:
    count = len(pixel_columns(list(train.columns), source))
    side = int(round(count ** 0.5))
    survey.add("model.img_size", side, f"{count} pixel columns: {side} x {side} grey images")
    survey.add("model.in_chans", 1, "grey pixels")
    survey.add("image.small_grey", True, "a pixel table")


def _image_folders(survey: Survey, folder: Path, train: pd.DataFrame, sample: pd.DataFrame, tables: _Tables) -> None:
    folders = [path for path in sorted(folder.iterdir()) if path.is_dir() and _holds_images(path)]
    folders += [inner for path in sorted(folder.iterdir()) if path.is_dir() and not _holds_images(path)
                for inner in sorted(path.iterdir()) if inner.is_dir() and _holds_images(inner)]  # train/train/
    if not folders:
        raise DataError(f"{folder}: no folder of images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...) beside the tables")
    trains = [path for path in folders if "train" in path.name.lower()]
    tests = [path for path in folders if "test" in path.name.lower()]
    if len(trains) > 1:
        raise KagglecvError(f"{folder}: several training image folders ({summarize([str(p) for p in trains])}); "
                            "keep one")
    if not trains:
        if len(folders) - len(tests) != 1:
            raise KagglecvError(f"{folder}: cannot tell which image folder holds the training images among "
                                f"{summarize([p.name for p in folders], quote=True)}")
        trains = [path for path in folders if path not in tests]
    train_dir = trains[0]
    survey.add("data.image_dir", train_dir, "the folder of training images")
    id_col = survey.value("data.id_col")
    # Listed at most once, and only when needed: a Kaggle training folder can hold 400,000 files.
    listing = functools.cache(lambda: _first_entries(train_dir, 100_000))
    _id_to_file(survey, train[id_col].tolist(), train_dir, id_col, listing)
    test_dirs = tests or [train_dir]
    if not tests:
        with_extension = survey.value("data.image_col") is not None
        _test_ids_in(train_dir, listing(), _test_ids(tables, sample, id_col), with_extension)
    survey.add("data.test_image_dir", test_dirs[0] if len(test_dirs) == 1 else test_dirs,
               "the folder(s) of test images" if tests else "one folder holds the training and the test images")
    _image_look(survey, train_dir, [e for e in _first_entries(train_dir) if e.suffix.lower() in IMAGE_EXTENSIONS])


def _test_ids(tables: _Tables, sample: pd.DataFrame, id_col: str) -> list[str]:
    """A few test ids: the test table's (its first rows), else the sample's."""
    if tables.test is not None:
        test = read_csv_head(tables.test, 50)
        if id_col in test.columns:
            return test[id_col].tolist()
    return sample.iloc[:50, 0].tolist()


def _test_ids_in(image_dir: Path, entries: list[Path], ids: list[str], with_extension: bool) -> None:
    """No test image folder beside the training one: the test ids must name images of the training folder, or init
    says what it could not match (ISIC 2024 ships its test images only in ``test-image.hdf5``)."""
    names = {entry.name if with_extension else entry.stem for entry in entries}
    if ids and not any(image_id in names for image_id in ids):
        raise DataError(f"{image_dir.parent}: no test image folder, and the test ids ({summarize(ids, 3, quote=True)}) "
                        f"name no image of {image_dir}; set data.test_image_dir (--set data.test_image_dir=FOLDER) "
                        "to the folder of the test images")


def _holds_images(path: Path) -> bool:
    return any(entry.suffix.lower() in IMAGE_EXTENSIONS for entry in _first_entries(path))


def _first_entries(path: Path, count: int = 200) -> list[Path]:
    entries = []
    for entry in path.iterdir():
        entries.append(entry)
        if len(entries) >= count:
            break
    return entries


def _id_to_file(survey: Survey, ids: list[str], image_dir: Path, id_col: str,
                listing: Callable[[], list[Path]]) -> None:
    """Ids that are file names (``0004be2c.jpg``) read through ``image_col``; else ``<id>.<ext>`` is looked up."""
    probe = ids[:50]
    if probe and all(Path(name).suffix.lower() in IMAGE_EXTENSIONS for name in probe):
        survey.add("data.image_col", id_col, f"ids carry the extension ({probe[0]!r}): each is its file's name")
        return
    suffix_of = {entry.stem: entry.suffix for entry in listing() if entry.suffix.lower() in IMAGE_EXTENSIONS}
    found = [name for name in probe if name in suffix_of]
    if not found:
        present = sorted(suffix_of)[:3]
        raise DataError(f"{image_dir}: no file is named after the ids ({summarize(probe, 3, quote=True)}); it holds "
                        f"{summarize(present, 3, quote=True)}; set data.image_col to a column of file names")
    survey.add("data.image_col", None, f"files are <id>{suffix_of[found[0]]} (any image extension is found)")


def _image_look(survey: Survey, image_dir: Path, candidates: list[Path]) -> None:
    """Size and colour of a few training images: the model's input size and channels, and whether flips suit."""
    sizes, grey = [], []
    regular = [entry for entry in candidates if entry.is_file()]
    for entry in regular[:16]:  # a FIFO or a device named like an image would block the read: never opened
        try:
            with open_image(entry) as image:  # the policy training decodes under: a bomb's header is refused
                sizes.append(min(image.size))
                grey.append(image.mode in ("L", "1", "I;16", "I"))
        except DataError:
            continue
    if not sizes:
        raise DataError(f"{image_dir}: none of its first images could be read")
    side = int(statistics.median(sizes))
    size = input_size(side)
    survey.add("model.img_size", size, f"the median shorter side of {len(sizes)} images is {side} px"
               + ("" if size == side else f", capped at {MAX_SIDE} and rounded to a multiple of 32"))
    all_grey = all(grey)
    if all_grey:
        survey.add("model.in_chans", 1, "the images are grey")
    survey.add("image.small_grey", side <= SMALL_IMAGE and all_grey, f"{'grey' if all_grey else 'colour'} images of "
               f"{side} px")
