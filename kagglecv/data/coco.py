"""COCO-style label files as a competition table: ``metadata.json`` / ``annotations.json`` with ``images``,
``annotations`` and ``categories``, as Herbarium 2020-2022, iNaturalist 2019 and iWildCam ship their labels.

Each image becomes a row ``id, image, label``: the image's ``id`` (as a string), its ``file_name`` (relative to
the file's folder, checked like any image path of a table), and the ``category_id`` of its annotations (or the
category's ``name``: ``data.coco_label``), several distinct categories joined by a space (a multi-label row). A test
file (``images`` only) gives ``id, image``. The file is someone else's input: its size is bounded before it is
read, and every problem is one line naming the file, the list, the position and the value.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from kagglecv.core.errors import DataError, summarize
from kagglecv.data.readers.json_bands import is_json_records
from kagglecv.data.table import MAX_CELL_CHARS, MAX_TABLE_BYTES

COCO_SUFFIX = ".json"
COCO_NAMES = ("metadata.json", "annotations.json")  # what the competitions call the file
LABELS = ("category_id", "name")


def is_coco_table(path: Path) -> bool:
    """Whether ``path`` names a COCO label file rather than a CSV: a ``.json`` file that is not a list of records
    (those are JSON bands, :mod:`kagglecv.data.readers.json_bands`); reading it names any other problem."""
    return Path(path).suffix.lower() == COCO_SUFFIX and not is_json_records(Path(path))


def read_coco_table(path: Path, label: str = "category_id") -> pd.DataFrame:
    """The rows of a COCO label file: ``id, image, label`` when it holds annotations, else ``id, image``; every cell a
    string, in the order of ``images``."""
    path = Path(path)
    document = _read_json(path)
    images = _records(document, "images", path, required=("id", "file_name"))
    if not images:
        raise DataError(f"{path}: 'images' is empty; expected one record per image")
    ids = [_text(image["id"], path, "images", index, "id") for index, image in enumerate(images)]
    files = [_text(image["file_name"], path, "images", index, "file_name") for index, image in enumerate(images)]
    doubled = sorted(image_id for image_id, count in Counter(ids).items() if count > 1)
    if doubled:
        raise DataError(f"{path}: image ids {summarize(doubled, quote=True)} appear more than once in 'images'")
    frame = pd.DataFrame({"id": ids, "image": files})
    if "annotations" not in document:
        return frame
    frame["label"] = _labels_of(document, ids, path, label)
    return frame


def _read_json(path: Path) -> dict:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    if size > MAX_TABLE_BYTES:
        raise DataError(f"{path}: {size:,} bytes, more than the {MAX_TABLE_BYTES:,} a label file may have; refused")
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(f"{path}: not a JSON label file: {' '.join(str(exc).split())[:160]}") from None
    if not isinstance(document, dict):
        raise DataError(f"{path}: expected a JSON object with 'images' (COCO style), got a {type(document).__name__}")
    return document


def _records(document: dict, key: str, path: Path, required: tuple[str, ...]) -> list[dict]:
    records = document.get(key)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a list under {key!r}, got {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict) or any(name not in record for name in required):
            raise DataError(f"{path}: {key}[{index}] is {_shown(record)}; expected an object with "
                            f"{', '.join(repr(name) for name in required)}")
    return records


def _text(value: Any, path: Path, key: str, index: int, field: str) -> str:
    """An id, a file name or a category as a string: a whole number or a short one-line string."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{path}: {key}[{index}].{field} is {_shown(value)}; expected a whole number or a string")
    text = str(value)
    if not text or len(text) > MAX_CELL_CHARS or "\n" in text or "\r" in text:
        raise DataError(f"{path}: {key}[{index}].{field} is {_shown(value)}; expected a non-empty one-line value")
    return text


def _labels_of(document: dict, ids: list[str], path: Path, label: str) -> list[str]:
    """Each image's categories (ids or names), sorted and joined by a space; an image without one is an error."""
    if label not in LABELS:
        raise DataError(f"data.coco_label: expected one of {', '.join(LABELS)}, got {label!r}")
    annotations = _records(document, "annotations", path, required=("image_id", "category_id"))
    names = _category_names(document, path) if label == "name" else None
    known = set(ids)
    found: dict[str, set[str]] = {}
    for index, annotation in enumerate(annotations):
        image_id = _text(annotation["image_id"], path, "annotations", index, "image_id")
        if image_id not in known:
            raise DataError(f"{path}: annotations[{index}].image_id {image_id!r} is no image of 'images'")
        category = _text(annotation["category_id"], path, "annotations", index, "category_id")
        if names is not None:
            if category not in names:
                raise DataError(f"{path}: annotations[{index}].category_id {category!r} is no category of 'categories'")
            category = names[category]
        found.setdefault(image_id, set()).add(category)
    unlabelled = [image_id for image_id in ids if image_id not in found]
    if unlabelled:
        raise DataError(f"{path}: {len(unlabelled)} images have no annotation: {summarize(unlabelled, quote=True)}")
    return [" ".join(sorted(found[image_id], key=_natural)) for image_id in ids]


def _category_names(document: dict, path: Path) -> dict[str, str]:
    categories = _records(document, "categories", path, required=("id", "name"))
    names = {}
    for index, category in enumerate(categories):
        name = _text(category["name"], path, "categories", index, "name")
        if " " in name:
            raise DataError(f"{path}: categories[{index}].name {name!r} holds a space, which separates labels; use "
                            "data.coco_label: category_id")
        names[_text(category["id"], path, "categories", index, "id")] = name
    return names


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _shown(value: Any) -> str:
    shown = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool)) or value is None else repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
