"""Long tables: one row per (image, class) pair, the pair named in one id (RSNA Intracranial Hemorrhage's
``ID_12cadc6af_epidural,Label``), read into kagglecv's wide form (one row per image, one column per class) and
written back in the sample's long order.

``data.long_id`` is the id's template, ``{id}`` the image and ``{class}`` the class, e.g. ``{id}_{class}``. The
image part is the longest that leaves a class (so ``ID_12cadc6af`` keeps its own underscore); with the classes
known, the class part is one of them (Bengali's ``Test_0_grapheme_root``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.errors import DataError, summarize
from kagglecv.core.predictions import head_blocks


def long_pattern(template: str, classes: list[str] | None = None) -> re.Pattern:
    """The regular expression of ``template``: ``{id}`` any text, ``{class}`` one of ``classes`` (or text without
    the template's separators when they are not known yet)."""
    separators = "".join(sorted(set(re.sub(r"\{id\}|\{class\}", "", template)))) or "_"
    class_part = "|".join(map(re.escape, sorted(classes, key=len, reverse=True))) if classes else \
        f"[^{re.escape(separators)}]+"
    pieces = re.split(r"(\{id\}|\{class\})", template)
    parts = {"{id}": "(?P<id>.+)", "{class}": f"(?P<cls>{class_part})"}
    return re.compile("".join(parts.get(piece, re.escape(piece)) for piece in pieces))


def split_long_ids(ids: pd.Series, template: str, source: Path, classes: list[str] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each long id's image and class; an id that does not fit the template is an error naming its line. Without
    the classes, the class is the fewest separated words that make every image hold every class once (Bengali's
    ``Test_0_grapheme_root``: two words)."""
    parts = ids.str.extract(long_pattern(template, classes or _grid_classes(ids, template)))
    bad = np.flatnonzero(parts["id"].isna().to_numpy())
    if len(bad):
        shown = [f"line {row + 2} {ids.iat[row]!r}" for row in bad]
        raise DataError(f"{source}: {len(bad)} ids do not fit data.long_id {template!r}"
                        + (f" with classes {summarize(classes)}" if classes else "") + f": {summarize(shown)}")
    return parts["id"].to_numpy(dtype=object), parts["cls"].to_numpy(dtype=object)


def _grid_classes(ids: pd.Series, template: str, most_words: int = 4) -> list[str] | None:
    """The class names that split the ids into a complete grid of images x classes, the fewest words each."""
    separator = re.sub(r"\{id\}|\{class\}", "", template)[:1] or "_"
    if not template.endswith("{class}"):
        return None
    for words in range(1, most_words + 1):
        parts = ids.str.rsplit(separator, n=words)
        if parts.str.len().min() <= words:
            return None
        classes = parts.str[-words:].str.join(separator)
        images = parts.str[:-words].str.join(separator)
        if classes.nunique() > 1 and len(ids) == images.nunique() * classes.nunique() \
                and not pd.DataFrame({"i": images, "c": classes}).duplicated().any():
            return sorted(classes.unique())
    return None


def widen(frame: pd.DataFrame, id_col: str, value_col: str, template: str, source: Path,
          classes: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """A long table as one row per image (in order of first appearance) and one column per class, each cell the
    pair's value; a pair given twice, or an image without a row for every class, is an error naming them."""
    images, names = split_long_ids(frame[id_col].str.strip(), template, source, classes)
    pairs = pd.DataFrame({"image": images, "cls": names, "value": frame[value_col].to_numpy()})
    doubled = pairs.duplicated(["image", "cls"], keep=False)
    if doubled.any():
        shown = (pairs["image"] + " " + pairs["cls"])[doubled].unique().tolist()
        raise DataError(f"{source}: {len(shown)} (image, class) pairs given more than once: {summarize(shown, quote=True)}")
    found = classes or sorted(set(names))
    wide = pairs.pivot(index="image", columns="cls", values="value").reindex(
        index=pd.unique(images), columns=found)
    holes = wide.isna().to_numpy()
    if holes.any():
        rows, cols = np.nonzero(holes)
        shown = [f"{wide.index[row]} {found[col]}" for row, col in zip(rows, cols)]
        raise DataError(f"{source}: {len(shown)} (image, class) pairs have no row: {summarize(shown, quote=True)}; a "
                        "long table gives every image a row for every class")
    wide = wide.reset_index().rename(columns={"image": id_col})
    wide.columns.name = None
    return wide, list(found)


def long_test_ids(frame: pd.DataFrame, id_col: str, template: str, source: Path,
                  classes: list[str] | None = None) -> pd.DataFrame:
    """A long test table (or sample) as one row per image, in order of first appearance; a test table whose id
    column names the images already (Bengali's ``test.csv``: ``row_id,image_id,component``) by its distinct ids."""
    ids = frame[id_col].str.strip()
    if classes and not ids.str.fullmatch(long_pattern(template, classes)).all():
        return pd.DataFrame({id_col: pd.unique(ids)})
    images, _ = split_long_ids(ids, template, source, classes)
    return pd.DataFrame({id_col: pd.unique(images)})


def long_names(classes: list[str], task: str) -> list[str]:
    """What the class part of a long id names: the heads of several heads, else the classes."""
    return [head for head, _ in head_blocks(classes)] if task == "heads" else classes


def long_values(wide: pd.DataFrame, long_ids: pd.Series, template: str, classes: list[str], source: Path) -> np.ndarray:
    """The value of each long id (``wide``: id then one column per class) in the long table's order; an image the
    predictions lack is an error naming it."""
    images, names = split_long_ids(long_ids.str.strip(), template, source, classes)
    table = wide.set_index("id")[classes]
    missing = sorted(set(images) - set(table.index))
    if missing:
        raise DataError(f"{source}: no prediction for {len(missing)} images: {summarize(missing, quote=True)}")
    rows = table.index.get_indexer(images)
    columns = np.array([classes.index(name) for name in names])
    return table.to_numpy()[rows, columns]
