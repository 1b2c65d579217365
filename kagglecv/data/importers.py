"""``kagglecv data import``: turn an image-folder layout, PASCAL VOC annotations or a COCO label file into a
train.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from defusedxml import DefusedXmlException, ElementTree

from kagglecv.core.errors import DataError, summarize
from kagglecv.core.files import write_csv
from kagglecv.core.outputs import OutputRule, same_header
from kagglecv.data.coco import read_coco_table
from kagglecv.data.load import sort_class_names
from kagglecv.data.table import IMAGE_EXTENSIONS

# The 20 PASCAL VOC classes in the devkit's order (VOCdevkit/VOCcode/VOCinit.m).
VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]


def import_image_folder(root: Path, out: Path) -> pd.DataFrame:
    """Rows ``id, image, label`` for every image under ``root/<class>/``; ids are file stems.

    Raises:
        DataError: no class folders, or two images with the same stem (the id would not be unique).
    """
    _check_out(out)
    rows = []
    for class_dir in sorted(path for path in root.iterdir() if path.is_dir()):
        for image in sorted(class_dir.rglob("*")):
            if image.suffix.lower() in IMAGE_EXTENSIONS and image.is_file():
                rows.append((image.stem, image.relative_to(root).as_posix(), class_dir.name))
    if not rows:
        raise DataError(f"{root}: expected one sub-folder of images per class, found no images")
    frame = pd.DataFrame(rows, columns=["id", "image", "label"])
    clashes = frame.loc[frame["id"].duplicated(keep=False), "image"].tolist()
    if clashes:
        frame["id"] = frame["image"].str.rsplit(".", n=1).str[0].str.replace("/", "__")
    frame = frame.sort_values("id", kind="stable").reset_index(drop=True)
    _write_import(out, frame, root)
    return frame


def import_voc(root: Path, out: Path, image_set: str | None = None) -> pd.DataFrame:
    """Image-level labels from ``root/Annotations/*.xml``: 1 present, 0 only 'difficult' objects, -1 absent.

    This is the encoding of the VOC devkit's ``ImageSets/Main/<class>_<set>.txt`` files. Class columns follow
    the devkit's order, then any other class names found, sorted.
    """
    _check_out(out)
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise DataError(f"{root}: expected an Annotations/ folder of VOC XML files")
    ids = _image_set_ids(root, image_set) if image_set else sorted(path.stem for path in annotations.glob("*.xml"))
    objects: dict[str, dict[str, int]] = {}
    for image_id in ids:
        objects[image_id] = _image_labels(annotations / f"{image_id}.xml")
    names = {name for labels in objects.values() for name in labels}
    classes = [name for name in VOC_CLASSES if name in names] + sort_class_names(sorted(names - set(VOC_CLASSES)))
    frame = pd.DataFrame(
        [[image_id] + [labels.get(name, -1) for name in classes] for image_id, labels in objects.items()],
        columns=["id", *classes],
    )
    _write_import(out, frame, root)
    return frame


def _image_labels(xml_path: Path) -> dict[str, int]:
    """``{class: 1}`` when any object of the class is not difficult, ``{class: 0}`` when all are difficult."""
    if not xml_path.is_file():
        raise DataError(f"{xml_path}: annotation file not found")
    try:
        tree = ElementTree.parse(xml_path)
    except ElementTree.ParseError as exc:
        raise DataError(f"{xml_path}: not valid XML: {exc}") from None
    except DefusedXmlException as exc:  # entity expansion ("billion laughs"), external entities, DTDs
        raise DataError(f"{xml_path}: refused: {exc}") from None
    labels: dict[str, int] = {}
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{xml_path}: an <object> has no <name>")
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        labels[name] = max(labels.get(name, 0), 0 if difficult else 1)
    return labels


def import_coco(label_file: Path, out: Path, label: str = "category_id") -> pd.DataFrame:
    """Rows ``id, image, label`` of a COCO label file (``metadata.json``, ``annotations.json``); ``run`` and ``init``
    read the file itself (``data.train_csv: .../metadata.json``), this writes it as a CSV to edit or join."""
    _check_out(out)
    frame = read_coco_table(label_file, label)
    _write_import(out, frame, Path(label_file).parent)
    return frame


def _check_out(out: Path) -> None:
    """``--out`` is a CSV file name, so an import never writes over an image, an annotation or an image list."""
    if not Path(out).name.lower().endswith((".csv", ".csv.gz")):
        raise DataError(f"--out {str(out)!r}: expected a file name ending in .csv")
    if Path(out).is_dir():
        raise DataError(f"--out {str(out)!r}: is a folder; expected a .csv file name")


def _write_import(out: Path, frame: pd.DataFrame, root: Path) -> None:
    """``out`` under the one output rule: never inside the imported folder, and an existing file replaced only when it
    is an earlier import of the same shape (the same header), never a training table of another shape."""
    header = frame.head(0).to_csv(index=False).splitlines()[0]
    OutputRule.of([root]).file(Path(out), "--out", replace_if=same_header(header))
    write_csv(out, frame)


def _image_set_ids(root: Path, image_set: str) -> list[str]:
    listing = root / "ImageSets" / "Main" / f"{image_set}.txt"
    if not listing.is_file():
        raise DataError(f"{listing}: image set not found")
    try:
        ids = [line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{listing}: not UTF-8 text (byte {exc.start})") from None
    missing = [image_id for image_id in ids if not (root / "Annotations" / f"{image_id}.xml").is_file()]
    if missing:
        raise DataError(f"{listing}: {len(missing)} ids without an annotation: {summarize(missing, quote=True)}")
    return ids
