"""The competition table in its one validated form (string ids, images, encoded targets, groups), and the bounded
reading of a table file (size, columns and cells capped before pandas parses; gzip streamed).

Targets are encoded once (by :mod:`kagglecv.data.load`) for every later stage:

* multiclass and binary: ``targets`` is an int64 vector of class indices into ``classes``;
* multilabel: ``targets`` is an int8 matrix (rows x classes) with ``1`` present, ``0`` absent and ``-1``
  "difficult" (present only as objects the PASCAL VOC protocol ignores when scoring).

* regression: ``targets`` is a float64 matrix (rows x targets), ``classes`` the target columns' names.

A multi-label target comes as one column of separated label names (``"cat dog"``) or as several 0/1 columns.
Columns holding -1 are read in the VOC convention: -1 absent, 0 difficult, 1 present.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.errors import DataError, summarize
from kagglecv.core.predictions import head_blocks
from kagglecv.data.sources import ImageSource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".webp", ".tif", ".tiff", ".gif")
MISSING_TOKENS = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "null", "NULL", "None"})
PRESENT, ABSENT, DIFFICULT = 1, 0, -1
RESERVED_COLUMNS = ("id", "fold")
MAX_TABLE_BYTES = 1 << 30  # a table (a .csv.gz once decompressed) larger than this is refused before it fills memory
MAX_COLUMNS = 100_000      # a header with more columns is refused before pandas parses it
MAX_CELL_CHARS = 65_536    # one cell longer than this is refused (no id, label or path is that long)
MAX_CLASS_CHARS = 256      # a class name longer than this is refused


class DataWarning(UserWarning):
    """Degenerate but valid data: kagglecv went on, and says what it did."""


@dataclass(frozen=True)
class Answers:
    """Several images, one answer (``data.answer_id``): each row's answer key, and how an answer's rows' predictions
    become its prediction (``mean`` or ``max``)."""

    keys: np.ndarray
    how: str = "mean"

    def take(self, keep: np.ndarray) -> "Answers":
        return Answers(self.keys[keep], self.how)

    def gather(self, values: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``values`` of ``rows`` (all rows when None, in that order) per answer, in order of first appearance: the
        answer keys, their aggregated values, and the first row of each (where its target and fold are read)."""
        keys = self.keys if rows is None else self.keys[rows]
        codes, unique = pd.factorize(pd.Series(keys, dtype=object), sort=False)
        frame = pd.DataFrame(np.asarray(values, dtype=np.float64).reshape(len(keys), -1))
        gathered = frame.groupby(codes, sort=True).agg(self.how).to_numpy()
        first = pd.Series(np.arange(len(keys))).groupby(codes, sort=True).first().to_numpy()
        return np.asarray(unique, dtype=object), gathered, first


@dataclass(frozen=True)
class Coarse:
    """The competition's target over a finer trained label (``data.finer``): its classes and task, and the coarse
    class of each fine class."""

    classes: list[str]
    task: str
    of_fine: np.ndarray

    def probabilities(self, fine: np.ndarray) -> np.ndarray:
        """Each coarse class's probability: the sum of its fine classes'."""
        onehot = np.zeros((len(self.of_fine), len(self.classes)))
        onehot[np.arange(len(self.of_fine)), self.of_fine] = 1.0
        return np.asarray(fine, dtype=np.float64) @ onehot


@dataclass
class FeatureTable:
    """Feature columns of some rows, in the order of ``ids``: numbers (NaN where empty) and categories (None where
    empty), and the group of each row (``group`` names its column) for the group-relative features."""

    ids: np.ndarray
    numeric_names: list[str]
    numeric: np.ndarray          # rows x numeric columns, float64
    categorical_names: list[str]
    categorical: np.ndarray      # rows x categorical columns, object: str or None
    groups: np.ndarray | None    # rows, str
    source: Path

    def take(self, rows: np.ndarray) -> "FeatureTable":
        return FeatureTable(self.ids[rows], self.numeric_names, self.numeric[rows], self.categorical_names,
                            self.categorical[rows], None if self.groups is None else self.groups[rows], self.source)

    def levels(self) -> dict[str, list[str]]:
        """Each categorical column's categories among these rows, sorted: the encoding a fold fits."""
        return {name: sorted({value for value in self.categorical[:, index] if value is not None})
                for index, name in enumerate(self.categorical_names)}


@dataclass
class CompetitionData:
    """The validated training (or test) table.

    Attributes:
        ids: image ids, strings exactly as written in the CSV.
        images: image file per row, or a reader's :class:`~kagglecv.data.sources.ImageSource` (pixel rows, arrays),
            or None when no image folder is configured (folds need no images).
        task: ``multiclass``, ``multilabel``, ``binary`` or ``regression``.
        classes: class names in their fixed order (prediction columns follow it); a regression task's target
            columns.
        targets: encoded targets (see the module docstring); None for a test table.
        groups: group id per row, or None.
        source: the CSV the table was read from.
        dropped_ids: ids the config's ``data.label_fixes`` dropped (the folds file still lists them).
        unfixed_hash: the content hash before ``data.label_fixes``, the identity the folds file was made from.
        answers: the answer each row belongs to, when several images make one answer (``data.answer_id``).
    """

    ids: np.ndarray
    images: list[Path] | ImageSource | None
    task: str
    classes: list[str]
    targets: np.ndarray | None
    groups: np.ndarray | None = None
    source: Path = field(default_factory=Path)
    dropped_ids: frozenset[str] = frozenset()
    unfixed_hash: str | None = None
    answers: Answers | None = None
    coarse: Coarse | None = None
    features: FeatureTable | None = None   # data.features' columns, read for a model that takes them

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> "CompetitionData":
        """The rows where ``keep`` (a boolean mask) is true, images (files or pixel rows) and groups with them."""
        images = self.images
        if isinstance(images, ImageSource):
            images = images.take(keep)
        elif images is not None:
            images = [image for image, kept in zip(images, keep) if kept]
        return replace(self, ids=self.ids[keep], images=images,
                       targets=None if self.targets is None else self.targets[keep],
                       groups=None if self.groups is None else self.groups[keep],
                       answers=None if self.answers is None else self.answers.take(keep),
                       features=None if self.features is None else self.features.take(np.flatnonzero(keep)))

    def score_of(self, metric, scores: np.ndarray, rows: np.ndarray | None = None) -> float:
        """``metric`` (a :class:`~kagglecv.core.metrics.Metric`) of ``scores`` for ``rows`` (all rows, in table order,
        when None), of their answers when several images make one answer; NaN where it cannot be computed."""
        if self.coarse is not None:
            return self.scored().score_of(metric, self.coarse.probabilities(scores), rows)
        targets, scores, _ = self.as_answers(scores, np.arange(len(self)) if rows is None else np.asarray(rows))
        return metric.score_or_nan(targets, scores)

    def as_answers(self, scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The targets and ``scores`` of ``rows``, of their answers when several images make one (with each answer's
        first position in ``rows``, where its fold is read), else as they are (and None)."""
        if self.answers is None:
            return self.targets[rows], scores, None
        _, scores, first = self.answers.gather(scores, rows)
        return self.targets[rows][first], scores, first

    @property
    def scored_task(self) -> str:
        """The task the competition scores: the coarse target's when training on a finer label."""
        return self.task if self.coarse is None else self.coarse.task

    def scored(self) -> "CompetitionData":
        """The table as the competition scores it: the coarse target (``data.finer``), else itself."""
        if self.coarse is None:
            return self
        return replace(self, task=self.coarse.task, classes=self.coarse.classes,
                       targets=self.coarse.of_fine[self.targets], coarse=None)

    def positives(self) -> np.ndarray:
        """Rows x classes 0/1 matrix of present labels (difficult counts as present), for stratifying and counts; a
        regression target's rows x bins (:meth:`strata`)."""
        if self.task == "multilabel":
            return (self.targets != ABSENT).astype(np.int8)
        if self.task == "heads":  # each head's one-hot, side by side
            offsets = np.cumsum([0] + [block.stop - block.start for _, block in head_blocks(self.classes)])[:-1]
            onehot = np.zeros((len(self), len(self.classes)), dtype=np.int8)
            onehot[np.arange(len(self))[:, None], self.targets + offsets] = 1
            return onehot
        names, labels = self.strata()
        onehot = np.zeros((len(self), len(names)), dtype=np.int8)
        onehot[np.arange(len(self)), labels] = 1
        return onehot

    def class_names(self) -> np.ndarray:
        """Each row's class name (a single-label table: multiclass or binary)."""
        return np.asarray(self.classes, dtype=object)[np.asarray(self.targets, dtype=int)]

    def strata(self) -> tuple[list[str], np.ndarray]:
        """What folds stratify on and count, a name and a label per row: the classes, or for a regression target the
        quantile bins of its first column (:func:`target_bins`)."""
        if self.task != "regression":
            return self.classes, self.targets
        return target_bins(self.targets[:, 0])

    def content_hash(self) -> str:
        """sha256 of the ids, targets and groups: the identity of the table a folds file was made from."""
        return self._content_hash

    @functools.cached_property
    def _content_hash(self) -> str:  # computed once per table, however many stages ask
        frame = pd.DataFrame({"id": self.ids})
        if self.targets is not None:
            encoded = self.targets if self.targets.ndim == 2 else self.targets[:, None]
            for column, values in zip(range(encoded.shape[1]), encoded.T):
                frame[f"t{column}"] = values
        if self.groups is not None:
            frame["group"] = self.groups
        digest = hashlib.sha256("\n".join(self.classes).encode())
        digest.update(frame.to_csv(index=False, lineterminator="\n").encode())
        return digest.hexdigest()


def target_bins(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Quantile bins of a numeric target, as Pawpularity's solutions stratified their folds: Sturges' count of bins
    (``1 + log2(rows)``), bins that the same value would split merged; each named by its range."""
    count = max(1, int(np.floor(1 + np.log2(max(len(values), 1)))))
    edges = np.unique(np.quantile(values, np.linspace(0, 1, count + 1)))
    labels = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, max(len(edges) - 2, 0))
    used = np.unique(labels)
    names = [f"[{edges[label]:.6g}, {edges[label + 1]:.6g}{']' if label + 2 == len(edges) else ')'}"
             if label + 1 < len(edges) else f"{edges[label]:.6g}" for label in used]
    return names, np.searchsorted(used, labels)


def num_outputs(task: str, classes: list[str]) -> int:
    """Logits of a model for ``task``: one for binary, one per class otherwise."""
    return 1 if task == "binary" else len(classes)


def targets_for_loss(data: CompetitionData) -> np.ndarray:
    """Class indices (multiclass), float 0/1 per output (binary, multi-label; VOC's "difficult" counts as 0), the
    values (regression), or each head's class index (heads)."""
    if data.task == "heads":
        return data.targets
    if data.task == "regression":
        return data.targets.astype(np.float32)
    if data.task == "multilabel":
        return (data.targets != 0).astype(np.float32)
    if data.task == "binary":
        return data.targets.astype(np.float32)[:, None]
    return data.targets


def read_csv_strings(path: Path) -> pd.DataFrame:
    """Read a CSV (or ``.csv.gz``) with every cell as a string: ids like ``000123`` stay as written, empty cells
    stay ``""``.

    Accepts a UTF-8 byte-order mark, Windows line ends, and ``;`` as separator (detected from the header line).
    Another encoding is an error naming the file and the first bad byte (convert it to UTF-8 first), since a
    guessed encoding would silently change ids and class names.
    """
    raw = read_table_bytes(path)
    return _string_frame(raw, _separator(raw), Path(path))


def read_csv_head(path: Path, rows: int) -> pd.DataFrame:
    """The header and the first ``rows`` rows of a CSV (or ``.csv.gz``), as :func:`read_csv_strings` reads them,
    without reading the rest: what a survey of a 900 MB sample submission needs."""
    raw = read_table_bytes(path, rows)
    return _string_frame(raw, _separator(raw), Path(path))


def read_table_bytes(path: Path, rows: int | None = None) -> bytes:
    """The bytes of a CSV or ``.csv.gz`` table (its header and first ``rows`` lines when given), checked to be UTF-8
    text (decompressed size bounded)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a CSV file")
    try:
        if rows is not None:
            raw = _head(path, rows)
        else:
            raw = _decompressed(path) if path.suffix.lower() == ".gz" else _bounded_read(path)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except OSError as exc:  # includes gzip.BadGzipFile
        raise DataError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text; expected UTF-8 (save it as UTF-8 CSV)")
    try:
        text = raw.decode("utf-8-sig", errors="strict")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8: byte {raw[exc.start:exc.start + 1]!r} on line {line}; "
                        "expected a UTF-8 CSV (e.g. re-save it as UTF-8)") from None
    if "\x00" in text:
        raise DataError(f"{path}: holds NUL bytes; expected a text CSV, not a binary file")
    header = raw.split(b"\n", 1)[0]
    if max(header.count(b","), header.count(b";")) >= MAX_COLUMNS:
        raise DataError(f"{path}: the header has more than {MAX_COLUMNS:,} columns; refused")
    return raw


def _head(path: Path, rows: int) -> bytes:
    """The first ``rows + 1`` lines, read line by line up to the table cap (a quoted line break may cut a row;
    the head is for looking at values, never for ids)."""
    lines, total = [], 0
    with (gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")) as stream:
        for line in stream:
            total += len(line)
            if total > MAX_TABLE_BYTES:
                raise DataError(f"{path}: its first {rows} rows are more than {MAX_TABLE_BYTES:,} bytes; refused")
            lines.append(line)
            if len(lines) > rows:
                break
    return b"".join(lines)


def _bounded_read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise DataError(f"{path}: {size:,} bytes, more than the {MAX_TABLE_BYTES:,} a table may have; refused")
    return path.read_bytes()


def _decompressed(path: Path) -> bytes:
    """The decompressed bytes, read in chunks that stop at the cap: a gzip bomb never gets past it in memory."""
    chunks, total = [], 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            total += len(chunk)
            if total > MAX_TABLE_BYTES:
                raise DataError(f"{path}: decompresses to more than {MAX_TABLE_BYTES:,} bytes; refused")
            chunks.append(chunk)
    return b"".join(chunks)


def _separator(raw: bytes) -> str:
    header = raw.split(b"\n", 1)[0]
    return ";" if header.count(b";") > header.count(b",") else ","


def _string_frame(raw: bytes, sep: str, path: Path, usecols: list[str] | None = None) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.BytesIO(raw), sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                            encoding="utf-8-sig", usecols=usecols)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV: {' '.join(str(exc).split())}") from None
    columns = [str(column).strip() for column in frame.columns]
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: columns {summarize(repeated, quote=True)} appear more than once (spaces around "
                        "a name are ignored); expected each column once")
    frame.columns = columns
    _check_cell_sizes(frame, path)
    return frame


def _check_cell_sizes(frame: pd.DataFrame, path: Path) -> None:
    for column in frame.columns:
        lengths = frame[column].str.len()
        if len(lengths) and lengths.max() > MAX_CELL_CHARS:
            row = int(lengths.to_numpy().argmax())
            raise DataError(f"{path}: line {row + 2}, column {column!r}: a cell of {int(lengths.max()):,} characters; "
                            f"expected at most {MAX_CELL_CHARS:,}")


def as_outputs(probabilities: np.ndarray, task: str) -> np.ndarray:
    """Probabilities as a prediction file holds them (a column per class) in the model's outputs: the positive
    class's column for binary (one logit), every column otherwise."""
    return np.asarray(probabilities[:, 1:] if task == "binary" else probabilities, dtype=np.float32)


def output_columns(classes: list[str], task: str) -> list[str]:
    """The class columns of :func:`as_outputs`, as ``pseudo.csv`` names them."""
    return classes[1:] if task == "binary" else classes
