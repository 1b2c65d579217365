"""Read a competition's tables into one validated form: string ids, image paths, encoded targets, groups.

Targets are encoded once, here, for every later stage:

* multiclass and binary: ``targets`` is an int64 vector of class indices into ``classes``;
* multilabel: ``targets`` is an int8 matrix (rows x classes) with ``1`` present, ``0`` absent and ``-1``
  "difficult" (present only as objects the PASCAL VOC protocol ignores when scoring).

A multi-label target comes as one column of separated label names (``"cat dog"``) or as several 0/1 columns.
Columns holding -1 are read in the VOC convention: -1 absent, 0 difficult, 1 present.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import MultiLabelBinarizer

from kagglecv.core.config import DataConfig
from kagglecv.data.pixels import PixelImages, pixel_columns, pixel_shape, read_pixels
from kagglecv.core.errors import DataError, summarize

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


@dataclass
class CompetitionData:
    """The validated training (or test) table.

    Attributes:
        ids: image ids, strings exactly as written in the CSV.
        images: image file per row, or the pixel rows of a pixel table (:class:`~kagglecv.data.pixels.PixelImages`),
            or None when no image folder is configured (folds need no images).
        task: ``multiclass``, ``multilabel`` or ``binary``.
        classes: class names in their fixed order (prediction columns follow it).
        targets: encoded targets (see the module docstring); None for a test table.
        groups: group id per row, or None.
        source: the CSV the table was read from.
        dropped_ids: ids the config's ``data.label_fixes`` dropped (the folds file still lists them).
        unfixed_hash: the content hash before ``data.label_fixes``, the identity the folds file was made from.
    """

    ids: np.ndarray
    images: list[Path] | PixelImages | None
    task: str
    classes: list[str]
    targets: np.ndarray | None
    groups: np.ndarray | None = None
    source: Path = field(default_factory=Path)
    dropped_ids: frozenset[str] = frozenset()
    unfixed_hash: str | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> "CompetitionData":
        """The rows where ``keep`` (a boolean mask) is true, images (files or pixel rows) and groups with them."""
        images = self.images
        if isinstance(images, PixelImages):
            images = PixelImages(images.pixels[keep], images.source)
        elif images is not None:
            images = [image for image, kept in zip(images, keep) if kept]
        return replace(self, ids=self.ids[keep], images=images,
                       targets=None if self.targets is None else self.targets[keep],
                       groups=None if self.groups is None else self.groups[keep])

    def positives(self) -> np.ndarray:
        """Rows x classes 0/1 matrix of present labels (difficult counts as present), for stratifying and counts."""
        if self.task == "multilabel":
            return (self.targets != ABSENT).astype(np.int8)
        onehot = np.zeros((len(self), len(self.classes)), dtype=np.int8)
        onehot[np.arange(len(self)), self.targets] = 1
        return onehot

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


def num_outputs(task: str, classes: list[str]) -> int:
    """Logits of a model for ``task``: one for binary, one per class otherwise."""
    return 1 if task == "binary" else len(classes)


def targets_for_loss(data: CompetitionData) -> np.ndarray:
    """Class indices (multiclass), or float 0/1 per output (binary, multi-label; VOC's "difficult" counts as 0)."""
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


def read_table_bytes(path: Path) -> bytes:
    """The bytes of a CSV or ``.csv.gz`` table, checked to be UTF-8 text (decompressed size bounded)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected a CSV file")
    try:
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


@dataclass
class Table:
    """A competition table: its cells as strings, and its images when it is a pixel table."""

    frame: pd.DataFrame
    pixels: PixelImages | None
    is_pixel_table: bool


def read_competition_table(path: Path, pixels: object | None, with_images: bool = True) -> Table:
    """A training or test table; a pixel table's ``pixel<i>`` columns become a :class:`PixelImages` (or are
    skipped when ``with_images`` is False) and only its other columns are read as strings."""
    path = Path(path)
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
    table = read_competition_table(source, config.pixels, with_images)
    frame = table.frame
    _require_rows(frame, source, "training")
    problems: list[str] = []
    target_columns = [config.target] if isinstance(config.target, str) else list(config.target)
    ids = _table_ids(frame, config, source, table.is_pixel_table, problems)
    _require_columns(frame, source, [*target_columns, *_optional(config.group_col, config.image_col)])
    task, classes, targets = encode_targets(frame, config, problems)
    groups = _read_groups(frame, config.group_col, source, problems)
    image_dir = config.image_dir if with_images else None
    images = _table_images(table, frame, ids, image_dir, config.image_col, source, problems)
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
    data = CompetitionData(ids, images, task, classes, targets, groups, source)
    if config.label_fixes is not None:
        from kagglecv.data.label_fixes import apply_label_fixes  # it builds on this module's table

        data = apply_label_fixes(data, config.label_fixes, config.label_sep)
    return data


def load_test(config: DataConfig, classes: list[str], task: str) -> CompetitionData:
    """Read the test table (ids, and images: under ``test_image_dir`` or ``image_dir``, or its pixel columns)."""
    if config.test_csv is None:
        raise DataError("data.test_csv is not set in the config")
    table = read_competition_table(config.test_csv, config.pixels)
    frame = table.frame
    _require_rows(frame, config.test_csv, "test")
    problems: list[str] = []
    ids = _table_ids(frame, config, config.test_csv, table.is_pixel_table, problems)
    _require_columns(frame, config.test_csv, _optional(config.image_col))
    images = _table_images(table, frame, ids, config.test_image_dir or config.image_dir, config.image_col,
                           config.test_csv, problems)
    if problems:
        raise DataError("\n".join(problems))
    return CompetitionData(ids, images, task, list(classes), None, None, config.test_csv)


def _table_ids(frame: pd.DataFrame, config: DataConfig, source: Path, pixel_table: bool,
               problems: list[str]) -> np.ndarray:
    """The id column; a pixel table without one (Digit Recognizer) is numbered by row from 1, as Kaggle does."""
    if pixel_table and config.id_col not in frame.columns:
        return np.asarray([str(row) for row in range(1, len(frame) + 1)], dtype=object)
    _require_columns(frame, source, [config.id_col])
    return _check_ids(frame, config.id_col, source, problems)


def _table_images(table: Table, frame: pd.DataFrame, ids: np.ndarray, image_dir: Path | None, image_col: str | None,
                  source: Path, problems: list[str]):
    if table.is_pixel_table:
        if image_dir is not None:
            problems.append(f"{source}: holds its images as pixel columns, but an image folder is set ({image_dir}); "
                            "remove data.image_dir / data.test_image_dir")
        return table.pixels
    return resolve_image_paths(frame, ids, image_dir, image_col, source, problems)


def encode_targets(frame: pd.DataFrame, config: DataConfig, problems: list[str]) -> tuple[str, list[str], np.ndarray]:
    """Infer the task when it is not given, fix the class order and encode the targets."""
    source = config.train_csv
    configured_classes = config.class_names()
    if isinstance(config.target, list):
        if configured_classes and configured_classes != list(config.target):
            raise DataError(f"{source}: data.classes must equal the data.target columns when targets are 0/1 columns")
        if config.task not in (None, "multilabel"):
            raise DataError(f"{source}: data.target lists columns, which is a multilabel target, got task {config.task!r}")
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
    image_dir: Path | None,
    image_col: str | None,
    source: Path,
    problems: list[str],
) -> list[Path] | None:
    """Find each row's image: ``<image_dir>/<image_col value>``, or ``<image_dir>/<id>.<any image extension>``.

    A path that resolves (symbolic links followed) outside ``image_dir`` is refused, as is a missing file.
    """
    if image_dir is None:
        return None
    root = Path(image_dir)
    if not root.is_dir():
        problems.append(f"{source}: image folder not found: {root}")
        return None
    root_resolved = root.resolve()
    if image_col:
        candidates = [root / name for name in frame[image_col].tolist()]
    else:
        by_stem = _index_images(root)
        candidates = [by_stem.get(image_id, root / f"{image_id}.*") for image_id in ids]
    missing, escaping = [], []
    for line, (image_id, path) in enumerate(zip(ids, candidates), start=2):
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # a symbolic-link loop
            missing.append(f"line {line} id {image_id!r}: {path} ({exc})")
            continue
        if not resolved.is_relative_to(root_resolved):
            escaping.append(f"line {line} id {image_id!r}: {path}")
        elif not resolved.is_file():
            missing.append(f"line {line} id {image_id!r}: {path}")
    if escaping:
        problems.append(f"{source}: {len(escaping)} image paths outside {root}: {summarize(escaping)}")
    if missing:
        problems.append(f"{source}: {len(missing)} image files not found: {summarize(missing)}")
    return candidates


def _index_images(root: Path) -> dict[str, Path]:
    by_stem: dict[str, Path] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DataError(f"{root}: cannot list the image folder: {exc.strerror or exc}") from None
    for path in entries:
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(path.stem, path)
    return by_stem


def _encode_indicator_columns(frame: pd.DataFrame, columns: list[str], source: Path, problems: list[str]) -> np.ndarray:
    values = frame[columns].apply(lambda column: column.str.strip())
    allowed = {"-1", "0", "1", "1.0", "0.0", "-1.0"}
    bad = ~values.isin(allowed)
    if bad.to_numpy().any():
        rows, cols = np.nonzero(bad.to_numpy())
        cells = [f"line {row + 2} column {columns[col]!r} = {values.iat[row, col]!r}" for row, col in zip(rows, cols)]
        problems.append(f"{source}: {len(cells)} label cells not in {{0, 1}} (or -1/0/1 VOC style): {summarize(cells)}")
        return np.zeros(values.shape, dtype=np.int8)
    numeric = values.astype(float).astype(np.int8).to_numpy()
    if (numeric == -1).any():  # VOC convention: -1 absent, 0 difficult, 1 present
        return np.select([numeric == 1, numeric == 0], [PRESENT, DIFFICULT], ABSENT).astype(np.int8)
    return numeric


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
    binarizer = MultiLabelBinarizer(classes=classes)
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
