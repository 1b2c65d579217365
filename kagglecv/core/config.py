"""The experiment config: pydantic models for the YAML file, ``--set`` overrides, loading and dumping.

The models are the single source of defaults; ``kagglecv config show`` prints them resolved. Relative paths are
read relative to the working directory, the folder the user runs kagglecv from (as timm's train.py does).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kagglecv.core.errors import ConfigError
from kagglecv.core.metric_file import name_metric_file
from kagglecv.core.metrics import (
    ALIASES,
    METRICS,
    get_metric,
    is_metric_file,
    known_metric,
)

Task = Literal["multiclass", "multilabel", "binary", "regression", "heads"]
FoldMethod = Literal["auto", "kfold", "stratified", "group", "stratified_group", "multilabel", "multilabel_group"]


TTA_VIEWS = ("none", "hflip", "vflip", "transpose", "rot90", "rot180", "rot270")
TTA_SCALE_RANGE = (0.25, 4.0)  # outside it a view is an empty or a many-gigabyte tensor, never a useful TTA


TTA_ROTATE_DEGREES = 180.0
TTA_SHIFT_PIXELS = 16


def check_tta_view(name: str) -> tuple[str, tuple[float, ...]] | None:
    """Check a TTA view name; returns ``(kind, numbers)`` for the parametrised views (None for the fixed ones):
    ``scale:F`` (resize by F), ``rotate:D`` (degrees, counter-clockwise), ``shift:DX:DY`` (whole pixels, right
    and down).

    Raises:
        ValueError: an unknown view, or a number outside its range (pydantic reports it under its key).
    """
    if name in TTA_VIEWS:
        return None
    kind, _, rest = str(name).partition(":")
    ranges = {"scale": (1, TTA_SCALE_RANGE, "scale:F with F"), "rotate": (1, (-TTA_ROTATE_DEGREES, TTA_ROTATE_DEGREES),
              "rotate:D with D degrees"), "shift": (2, (-TTA_SHIFT_PIXELS, TTA_SHIFT_PIXELS), "shift:DX:DY with pixels")}
    if kind not in ranges:
        raise ValueError(f"unknown view {name!r}; expected {', '.join(TTA_VIEWS)}, scale:F, rotate:D or shift:DX:DY")
    count, (low, high), form = ranges[kind]
    try:
        numbers = tuple(float(part) for part in rest.split(":"))
    except ValueError:
        numbers = ()
    valid = len(numbers) == count and all(low <= n <= high for n in numbers)  # False for NaN
    if valid and kind == "shift":
        valid = all(n.is_integer() for n in numbers)
    if not valid:
        whole = " (whole numbers)" if kind == "shift" else ""
        raise ValueError(f"view {name!r}: expected {form} between {low:g} and {high:g}{whole}")
    return kind, numbers


OWN_MODEL_NAME = re.compile(r"^(?P<file>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class OwnModelName:
    """``model.name`` written as ``path/to/nets.py:name``: an architecture in the user's own file."""

    file: Path
    name: str

    @classmethod
    def parse(cls, text: str) -> "OwnModelName | None":
        """The file and the name; None for a timm model name."""
        match = OWN_MODEL_NAME.match(text)
        return cls(Path(match["file"]), match["name"]) if match else None


class _Section(BaseModel):
    # inf and nan are never a setting: lr: inf trains until the loss is NaN and then says something else.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class PixelsConfig(_Section):
    """The image shape of a pixel table (columns pixel0..pixelN-1); a square grey image is inferred without it."""

    width: int = Field(ge=1)
    height: int = Field(ge=1)
    channels: Literal[1, 3] = 1
    layout: Literal["hwc", "chw"] = Field("hwc", description="Colour: pixels ordered (row, column, channel) or "
                                          "(channel, row, column).")


ReaderKind = Literal["npy", "dicom", "hdf5", "parquet", "json_bands"]
WindowName = Literal["file", "brain", "subdural", "bone", "soft_tissue", "lung"]
READER_PATHS = {"npy": "{id}.npy", "dicom": "{id}.dcm"}
ID_FIELD = re.compile(r"\{id(?:\[(\d{1,3})\])?\}")  # {id} or {id[N]}: the only fields a reader's path may name


class ReaderConfig(_Section):
    """How the images are read when they are not image files (``init`` writes it): ``.npy`` arrays, DICOM, HDF5,
    parquet pixel rows or JSON bands."""

    kind: ReaderKind = Field(description="npy | dicom | hdf5 | parquet | json_bands.")
    path: Optional[str] = Field(None, description="npy, dicom: a row's file under data.image_dir, from its id "
                                "('{id[0]}/{id}.npy'; {id}.npy / {id}.dcm by default); hdf5: the file under image_dir; "
                                "parquet: its files under image_dir (a glob, 'train_image_data_*.parquet').")
    test_path: Optional[str] = Field(None, description="The same under data.test_image_dir; path when omitted.")
    layout: Literal["chw", "hwc"] = Field("chw", description="npy, hdf5 arrays: a 3-D array is C x H x W or H x W x C.")
    windows: list[Union[WindowName, tuple[float, float]]] = Field(
        ["file"], min_length=1, max_length=16, description="dicom: one channel per window, in Hounsfield units: "
        "brain (40/80), subdural (80/200), bone (600/2800), soft_tissue, lung, [center, width], or file (the file's "
        "own VOI LUT or window).")
    bands: list[str] = Field([], max_length=64, description="json_bands: the record keys holding the bands, one "
                             "channel each (Statoil: [band_1, band_2]).")
    dataset: Optional[str] = Field(None, description="hdf5: one array dataset whose rows are the table's rows, "
                                   "instead of a dataset per id holding encoded bytes.")
    id_column: Optional[str] = Field(None, description="parquet: the files' id column; data.id_col when omitted.")
    height: Optional[int] = Field(None, ge=1, description="parquet, json_bands: the image height when not square.")
    width: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> "ReaderConfig":
        if self.kind in ("hdf5", "parquet") and not self.path:
            raise ValueError(f"data.reader.path: the {self.kind} file{'s' if self.kind == 'parquet' else ''} under "
                             "data.image_dir must be named")
        if self.kind == "json_bands" and not self.bands:
            raise ValueError("data.reader.bands: name the record keys holding the bands")
        for pattern in (self.path, self.test_path):
            if pattern is not None and ("{" in ID_FIELD.sub("", pattern) or "}" in ID_FIELD.sub("", pattern)):
                raise ValueError(f"data.reader: {pattern!r} may name only {{id}} and {{id[N]}} (the id's N-th "
                                 "character)")
        for center, width in (window for window in self.windows if isinstance(window, tuple)):
            if not width > 0:
                raise ValueError(f"data.reader.windows: width must be positive, got [{center}, {width}]")
        return self

    def pattern(self, test: bool) -> str | None:
        """Where a row's image is, for the training or the test side."""
        return (self.test_path if test else None) or self.path or READER_PATHS.get(self.kind)


class LabelFixesConfig(_Section):
    """Training rows to drop or relabel, listed by id in a file, e.g. the ``label_issues.csv`` of ``kagglecv inspect``
    after review. Loading the table says how many rows it changed, every time."""

    file: Path = Field(description="A CSV with an id column (and suggested_label, to relabel).")
    action: Literal["drop", "relabel"] = Field("drop", description="drop the listed rows, or give each its "
                                               "suggested_label.")


class FinerLabelConfig(_Section):
    """Train on a finer label than the competition scores (SIIM-ISIC 2020's 1st place: 9 diagnoses, P(melanoma)
    submitted): the network learns ``column``'s classes; every score and submission is of ``data.target``, each of
    its classes the sum of the probabilities of the fine classes ``to_target`` maps to it."""

    column: str = Field(description="The finer column of the training table (diagnosis).")
    to_target: dict[str, str] = Field(description="Each fine class -> the class of data.target it belongs to.")

    @field_validator("to_target", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        """YAML reads ``melanoma: 1`` as a number; class names are the table's text."""
        return {str(key): str(item) for key, item in value.items()} if isinstance(value, dict) else value


class FeaturesConfig(_Section):
    """The table beside the image: columns of both the training and the test table that a second-stage model
    (``kagglecv stack``) takes with the image runs' predictions. ``init`` proposes them and lists ``leaks``."""

    numeric: list[str] = Field([], max_length=10_000, description="Columns of numbers (an empty cell is missing).")
    categorical: list[str] = Field([], max_length=10_000, description="Columns of categories, encoded from the "
                                   "training rows of each fold only.")
    leaks: list[str] = Field([], max_length=10_000, description="Training-table columns the test table lacks (or "
                             "that restate the target): listed so that nothing uses them.")

    @model_validator(mode="after")
    def _each_column_once(self) -> "FeaturesConfig":
        named = [*self.numeric, *self.categorical]
        twice = sorted({name for name in named if named.count(name) > 1})
        leaked = sorted(set(named) & set(self.leaks))
        if twice or leaked:
            raise ValueError(f"columns {twice or leaked} are named twice" if twice else
                             f"columns {leaked} are listed as leaks and as features; a leak is never used")
        return self

    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class DataConfig(_Section):
    """Where the competition's table and images are, and what the target is."""

    train_csv: Path = Field(description="The training table, one row per image.")
    image_dir: Optional[Path] = Field(
        None, description="Images found as <image_dir>/<id>.<ext> (any common extension), or via image_col."
    )
    test_csv: Optional[Path] = Field(None, description="The test table (ids only is enough).")
    test_image_dir: Union[Path, list[Path], None] = Field(
        None, description="Test images (a folder, or a list of folders whose files together are the test images, as "
        "Planet's test-jpg and test-jpg-additional); defaults to image_dir. Without a test table (and no "
        "submit.sample), its image files are the test set, named by their file names without extension.")
    id_col: str = Field("id", description="Column of image ids, always read as strings.")
    image_col: Optional[str] = Field(None, description="Column of image paths relative to image_dir.")
    target: Union[str, list[str]] = Field(
        "label",
        description="A column of class names, a column of space-separated labels, or a list of 0/1 columns.",
    )
    task: Optional[Task] = Field(
        None, description="multiclass | multilabel | binary | regression | heads; inferred when omitted "
        "(regression: a target of numbers, some not whole). heads: each column of data.target a multiclass head of "
        "one backbone (Bengali.AI).")
    classes: Optional[list[str]] = Field(None, description="Class order; sorted names when omitted.")
    classes_file: Optional[Path] = Field(None, description="A text file with one class name per line, in order.")
    label_sep: str = Field(" ", description="Separator of labels in a multi-label string column.")
    coco_label: Literal["category_id", "name"] = Field(
        "category_id", description="A COCO label file as train_csv/test_csv (metadata.json, annotations.json: Herbarium, "
        "iNaturalist, iWildCam): label rows by the category's id (what those submissions want) or its name.")
    group_col: Optional[str] = Field(None, description="A patient, video or track id that folds keep whole.")
    pixels: Optional[PixelsConfig] = Field(None, description="Pixel tables: the image shape, when not a square "
                                           "grey image.")
    reader: Optional[ReaderConfig] = Field(None, description="Images that are not image files: .npy, DICOM, HDF5, "
                                           "parquet pixel rows, JSON bands.")
    cache: Literal["off", "memory", "disk"] = Field(
        "off", description="Decode every image once: memory (one uint8 array in RAM) or disk (a memory-mapped .npy "
        "under <runs_dir>/.cache/, keyed by the table's sha256 and each file's size and mtime); images of one size.")
    label_fixes: Optional[LabelFixesConfig] = Field(None, description="Drop or relabel reviewed label issues; folds "
                                                    "stay those of the whole table.")
    y_range: Optional[tuple[float, float]] = Field(
        None, description="Regression: the range of the target, [low, high]: what bce_scaled scales to [0, 1] and "
        "submissions are clipped to; the training rows' range when omitted.")
    finer: Optional[FinerLabelConfig] = Field(None, description="Train on a finer column than the target, mapped to "
                                              "it for every score and submission.")
    long_id: Optional[str] = Field(
        None, description="Long tables (RSNA ICH's ID_12cadc6af_epidural,Label): the id column names an image and a "
        "class, by this template of {id} and {class} (e.g. '{id}_{class}'); the table is read one row per image, one "
        "column per class (data.target: the value column), and the submission is written in the sample's long rows.")
    answer_id: Optional[str] = Field(
        None, description="Several images, one answer (RSNA Breast: '{patient_id}_{laterality}'): the submission's id "
        "built from table columns; the rows of one answer are predicted together (answer_aggregate), scored at that "
        "level and kept in one fold.")
    answer_aggregate: Literal["mean", "max"] = Field("mean", description="How the image predictions of one answer "
                                                     "become its prediction.")
    features: Optional[FeaturesConfig] = Field(
        None, description="The table beside the image (metadata): numeric and categorical columns for `kagglecv "
        "stack`, and the train-only columns that are leaks.")
    missing_targets: Literal["refuse", "drop"] = Field(
        "refuse", description="Regression: rows whose target is empty or NaN are an error naming them (refuse), or "
        "are left out of training and scoring (drop), as the loading says.")

    def test_image_dirs(self) -> list[Path]:
        """The test image folders (none, one, or several)."""
        if self.test_image_dir is None:
            return []
        return list(self.test_image_dir) if isinstance(self.test_image_dir, list) else [self.test_image_dir]

    def has_test(self) -> bool:
        """A test set is configured: a table, or a folder whose image files are the test set."""
        return self.test_csv is not None or self.test_image_dir is not None

    @model_validator(mode="after")
    def _one_class_source(self) -> "DataConfig":
        if self.classes and self.classes_file:
            raise ValueError("set data.classes or data.classes_file, not both")
        if self.y_range is not None and not (math.isfinite(self.y_range[0]) and math.isfinite(self.y_range[1])
                                             and self.y_range[0] < self.y_range[1]):
            raise ValueError(f"data.y_range: expected [low, high] with low < high, got {list(self.y_range)}")
        if self.long_id is not None and (self.long_id.count("{id}") != 1 or self.long_id.count("{class}") != 1):
            raise ValueError(f"data.long_id: expected {{id}} and {{class}} once each, e.g. '{{id}}_{{class}}', got "
                             f"{self.long_id!r}")
        if self.answer_id is not None and not re.fullmatch(r"([^{}]*\{[^{}]+\})+[^{}]*", self.answer_id):
            raise ValueError(f"data.answer_id: expected table columns in braces, e.g. '{{patient_id}}_{{laterality}}', "
                             f"got {self.answer_id!r}")
        if self.task == "regression" and (self.classes or self.classes_file):
            raise ValueError("data.classes: a regression target has no classes; its columns are data.target")
        return self

    def class_names(self) -> list[str] | None:
        """The configured class order, from ``classes`` or ``classes_file``, or None to infer it."""
        if self.classes_file is None:
            return self.classes
        if not self.classes_file.is_file():
            raise ConfigError(f"data.classes_file: file not found: {self.classes_file}")
        names = [line.strip() for line in self.classes_file.read_text(encoding="utf-8-sig").splitlines()]
        return [name for name in names if name]


class FoldsConfig(_Section):
    """How the training rows are split into folds."""

    method: FoldMethod = Field(
        "auto", description="auto: stratified (multiclass, binary) or multilabel, their _group variant with group_col.")
    n_splits: int = Field(5, ge=2, description="Number of folds.")
    seed: int = 42
    file: Optional[Path] = Field(
        None,
        description="The folds CSV, shared by every experiment on this data; "
        "folds/<data folder>-<method>-k<n_splits>-s<seed>.csv when omitted.",
    )
    allow_rare_classes: bool = Field(
        False,
        description="Allow classes (or labels) with fewer members than folds: they are then missing from "
        "some validation folds. Otherwise such a class is an error.",
    )
    duplicates: Literal["group", "ignore"] = Field(
        "group", description="Byte-identical images under different ids: keep them in one fold (group) or not."
    )
    near_duplicates: Literal["off", "warn", "group"] = Field(
        "warn", description="Perceptual-hash near-duplicates: skip the check, warn with the pairs, or group them."
    )
    near_duplicate_distance: int = Field(
        4, ge=0, le=16, description="Largest Hamming distance between 64-bit pHashes that counts as near-duplicate."
    )

    @field_validator("near_duplicates", mode="before")
    @classmethod
    def _yaml_off_is_false(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    def resolved_file(self, data: DataConfig) -> Path:
        if self.file is not None:
            return self.file
        name = data.train_csv.resolve().parent.name or "data"
        return Path("folds") / f"{name}-{self.method}-k{self.n_splits}-s{self.seed}.csv"


class HeadConfig(_Section):
    """An MLP between the backbone's pooled features and the classifier."""

    hidden: list[int] = Field(description="Widths of the hidden layers, e.g. [1024, 512].")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class FeaturesHeadConfig(_Section):
    """Fusion (PetFinder Pawpularity, bone age): the backbone's pooled features joined with a small MLP over
    ``data.features`` (normalised on each fold's training rows), one classifier over both, trained end to end."""

    hidden: int = Field(64, ge=1, le=4096, description="Width of the MLP over the features.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lr_scale: float = Field(10.0, gt=0, le=1000, description="The head (features MLP and classifier) trains at "
                            "train.lr times this: new layers beside a pretrained backbone.")


def _number_as_text(value: Any) -> Any:
    """YAML and --set read ``new_label: 0`` as a number; labels are the table's text."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


TextLabel = Annotated[str, BeforeValidator(_number_as_text)]


class IdentityHeadConfig(_Section):
    """Identities (Happywhale, Hotel-ID, landmarks): the backbone's feature map through a GeM + BatchNorm neck to an
    embedding, and a sub-center ArcFace head (Deng et al. 2020) over the identities; the run predicts by nearest
    neighbours of the embeddings (predict.identities)."""

    width: int = Field(512, ge=8, le=4096, description="Width of the embedding the neighbours are searched on.")
    subcenters: int = Field(2, ge=1, le=10, description="Sub-centers per identity (Happywhale 1st place: 2).")
    margin: float = Field(0.3, ge=0.0, lt=1.5, description="Additive angular margin, in radians.")
    scale: float = Field(30.0, gt=0.0, le=128.0, description="Scale of the cosine logits.")
    gem_p: float = Field(3.0, ge=1.0, le=16.0, description="Starting exponent of GeM pooling (learned).")
    lr_scale: float = Field(10.0, gt=0, le=1000, description="The neck and head train at train.lr times this.")


class ModelConfig(_Section):
    """The timm backbone and its head."""

    name: str = Field("resnet18", description="Any timm model name (timm.list_models()), or an architecture in "
                      "your own file as path/to/nets.py:name (the file runs when the model is built).")
    pretrained: Union[bool, Path] = Field(
        False,
        description="false; true (timm's own loading, from the local hub cache when offline); or a .safetensors/"
        ".pth/.pt file: timm weights or a kagglecv checkpoint, loaded with the classifier re-sized to the task.",
    )
    img_size: int = Field(224, ge=8, description="Square input size in pixels.")
    in_chans: int = Field(3, ge=1, le=1024, description="Input channels: 3 RGB, 1 grey, or an array reader's count "
                          "(six SETI panels, two radar bands, one channel per DICOM window).")
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classifier (timm drop_rate).")
    drop_path_rate: Optional[float] = Field(None, ge=0.0, lt=1.0, description="Stochastic depth (timm drop_path_rate).")
    head: Optional[HeadConfig] = None
    features_head: Optional[FeaturesHeadConfig] = Field(None, description="Fusion: the image features joined with an "
                                                        "MLP over data.features, trained end to end.")
    identity: Optional[IdentityHeadConfig] = Field(None, description="Identities: an embedding neck and a sub-center "
                                                   "ArcFace head; predictions by nearest neighbours.")
    freeze: Union[Literal["backbone"], int, None] = Field(
        None, description="'backbone' (all but the head), or a number of leading stages to freeze."
    )
    unfreeze_epoch: Optional[int] = Field(None, ge=1, description="Epoch (0-based) at which frozen layers train again.")
    layer_decay: Optional[float] = Field(None, gt=0.0, le=1.0, description="Layer-wise lr decay (timm layer_decay).")
    small_input: bool = Field(False, description="Stride-1 stem without max-pool (CIFAR style) for 28-64 px images; "
                              "timm ResNet family only.")
    max_params: Optional[int] = Field(None, ge=1, description="Refuse a model with more parameters before training.")

    @model_validator(mode="after")
    def _layer_decay_without_head(self) -> "ModelConfig":
        if self.layer_decay is not None and (self.head is not None or self.features_head is not None):
            raise ValueError("model.layer_decay cannot be combined with model.head or model.features_head (timm's "
                             "layer groups end at its own classifier)")
        heads = [key for key in ("head", "features_head", "identity") if getattr(self, key) is not None]
        if len(heads) > 1:
            raise ValueError(f"model.{heads[0]} and model.{heads[1]}: set one (each is its own classifier)")
        if self.layer_decay is not None and self.identity is not None:
            raise ValueError("model.layer_decay cannot be combined with model.identity (timm's layer groups end at "
                             "its own classifier)")
        return self


class AugmentConfig(_Section):
    """albumentations pipelines: a preset name, or a list of transforms in albumentations' serialized form."""

    train: Union[Literal["none", "light", "medium", "heavy"], list[dict[str, Any]]] = "light"
    eval: Union[Literal["none"], list[dict[str, Any]]] = "none"
    hflip: bool = Field(True, description="Presets flip at random; false for digits, text, traffic signs.")
    batch: Literal["none", "flip", "flip_translate"] = Field(
        "none", description="Augment whole batches on the device after the per-image pipeline: flip (when hflip) "
        "and translate by up to augment.translate px, as the CIFAR-10 speed runs do; usually with train: none.")
    translate: int = Field(2, ge=0, le=16, description="augment.batch flip_translate: the largest shift in pixels.")
    alternate_flip: bool = Field(False, description="augment.batch: flip each image on every other epoch, a fixed "
                                 "random half of them on the even epochs and the other half on the odd ones "
                                 "(airbench's alternating flip), instead of a coin per image and epoch.")
    rotate: float = Field(0.0, ge=0, le=45, description="augment.batch flip_translate: also rotate each image by up "
                          "to this many degrees (one bilinear warp with the shift, borders repeated); 0: exact shifts.")
    cutout: int = Field(0, ge=0, le=1024, description="A square of this side set to 0 in each training image, on "
                        "the batch (DeVries & Taylor 2017); 0 is off.")
    normalize: Literal["auto", "backbone", "dataset", "sample"] = Field(
        "auto", description="backbone: the pretrained statistics (or mean/std) on 0-255 values; dataset: each channel's "
        "mean and std over the fold's training images, in the images' own units (recorded per fold, reused by predict, "
        "infer, pack and ONNX); sample: each image's own channel statistics (SETI). auto: backbone for eight-bit "
        "images, dataset for 16-bit, float and N-channel arrays.")
    mean: Optional[list[float]] = Field(None, description="Normalization, one value per input channel: 0-1 units "
                                        "for eight-bit images, the images' own units otherwise; replaces the "
                                        "backbone's or the dataset's statistics.")
    std: Optional[list[float]] = None

    @model_validator(mode="after")
    def _mean_with_std(self) -> "AugmentConfig":
        if (self.mean is None) != (self.std is None) or (self.mean is not None and len(self.mean) != len(self.std)):
            raise ValueError("augment.mean and augment.std go together, one value each per input channel")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"augment.std must be positive, got {self.std}")
        return self


REGRESSION_LOSSES = ("mse", "l1", "huber", "bce_scaled")


class TrainConfig(_Section):
    """The per-fold training loop. Keys are named after the timm arguments they feed."""

    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(64, ge=1, le=1 << 20)
    opt: str = Field("adamw", description="timm.optim.create_optimizer_v2 name: sgd, adam, adamw, lamb, ...")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0)
    norm_lr_scale: Optional[float] = Field(
        None, gt=0, description="Learning-rate multiplier of the normalisation layers' parameters (BatchNorm, "
        "GroupNorm, LayerNorm scales and shifts), with their weight decay divided by it so the decay per step is "
        "that of the other weights; every parameter then has weight decay (airbench94's bias_scaler, 64). Omitted: "
        "timm's groups (1-D parameters without weight decay).")
    sched: Literal["cosine", "step", "multistep", "poly", "wsd", "plateau", "none"] = Field(
        "cosine", description="timm's schedulers; wsd (warmup, stable, decay over the last decay_epochs) with "
        "lr_decay_fn linear and decay_epochs = epochs - warmup_epochs is the triangular schedule of the CIFAR-10 "
        "speed runs; poly with decay_rate 1 decays linearly to min_lr from lr x (1 - warmup / epochs).")
    lr_decay_fn: Optional[Literal["linear", "1-sqrt", "cosine"]] = Field(
        None, description="wsd: the shape of the decay phase (timm's default: 1-sqrt).")
    warmup_epochs: int = Field(0, ge=0)
    warmup_lr: float = Field(1e-5, ge=0, description="Learning rate at the start of warmup.")
    min_lr: float = Field(1e-6, ge=0)
    decay_epochs: float = Field(30, gt=0, description="step: epochs between decays; wsd: epochs of the decay "
                                "phase (below 1: a fraction of the epochs after warmup).")
    decay_milestones: list[int] = Field([30, 60], description="multistep: epochs at which lr decays.")
    decay_rate: float = Field(0.1, gt=0, description="step, multistep, plateau: the factor of each decay; poly: the "
                              "power.")
    patience_epochs: int = Field(10, ge=0, description="plateau: epochs without improvement of the selection score "
                                 "before the rate is multiplied by decay_rate (timm's patience_epochs).")
    loss: Literal["auto", "ce", "bce", "focal", "asl", "mse", "l1", "huber", "bce_scaled"] = Field(
        "auto", description="auto: cross-entropy (multiclass), BCE-with-logits (multilabel, binary), mse "
        "(regression). Regression: mse, l1 and huber on the target standardised by the fold's training rows; "
        "bce_scaled: the target scaled to [0, 1] by data.y_range (else the training range), a sigmoid and BCE."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    head_weights: Optional[dict[str, float]] = Field(None, description="task heads: each head's weight in the loss "
                                                     "(by target column; the others weigh 1).")
    mixup: float = Field(0.0, ge=0, description="Mixup alpha (timm Mixup); 0 is off.")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha; 0 is off.")
    mixup_prob: float = Field(1.0, ge=0, le=1)
    accum_steps: int = Field(1, ge=1, description="Gradient accumulation steps.")
    clip_grad: Optional[float] = Field(None, gt=0, description="Clip gradient norm to this value.")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto", description="auto: by the GPU's compute capability, bf16 from sm_80, fp16 (grad scaler) below; off on CPU.")
    channels_last: bool = False
    compile: bool = False
    ema: bool = False
    ema_decay: float = Field(0.998, gt=0, lt=1)
    lookahead_every: int = Field(0, ge=0, description="With ema: every this many optimizer steps the EMA takes the "
                                 "weights in at decay ema_decay^k x progress^3 and the model restarts from it; the "
                                 "last step ends on the EMA (airbench94's Lookahead). 0: a plain EMA.")
    metric: str = Field(
        "auto", description="Picks the best epoch: auto (the competition metric), loss, or any metric name."
    )
    patience: Optional[int] = Field(None, ge=1, description="Stop after this many epochs without improvement.")
    sampler: Literal["shuffle", "balanced"] = Field("shuffle", description="balanced: class-balanced sampling.")
    class_weights: bool = Field(False, description="Weight the loss by inverse class frequency.")
    num_workers: Optional[int] = Field(None, ge=0, description="DataLoader workers; the available cores when omitted.")
    device: str = Field("auto", description="auto (cuda when available), cpu, cuda, cuda:1, ...")
    seed: int = 42
    seeds: int = Field(1, ge=1, description="Train the folds this many times with different seeds (train.seed + "
                       "1000 x i, as runs <experiment>-seed<i>) and average them in an ensemble.")
    avg_weights: Optional[Literal["last", "best"]] = Field(
        None, description="Also score the average of the weights of the last avg_count epochs, or of the avg_count "
        "best ones (timm's avg_checkpoints.py), each epoch beside the raw (and EMA) weights.")
    avg_count: int = Field(3, ge=2, description="How many epochs' weights avg_weights averages.")
    size_schedule: Optional[dict[int, int]] = Field(
        None, description="Progressive resizing: {epoch: training image size}, e.g. {0: 24, 8: 32}; epochs before "
        "the first key train at model.img_size. Validation and prediction are always at model.img_size.")

    @field_validator("size_schedule")
    @classmethod
    def _sizes_in_range(cls, schedule: Any) -> Any:
        for epoch, size in (schedule or {}).items():
            if epoch < 0 or size < 8:
                raise ValueError(f"expected epochs >= 0 and sizes >= 8 pixels, got {epoch}: {size}")
        return schedule

    @model_validator(mode="after")
    def _decay_fits_after_warmup(self) -> "TrainConfig":
        after_warmup = self.epochs - self.warmup_epochs
        if self.sched == "wsd" and (after_warmup < 1 or not (self.decay_epochs < 1 or self.decay_epochs <= after_warmup)):
            raise ValueError(f"sched wsd: decay_epochs ({self.decay_epochs:g}) must fit in the epochs after warmup "
                             f"(epochs {self.epochs} - warmup_epochs {self.warmup_epochs}); below 1 it is a fraction "
                             "of them")
        if self.sched == "wsd" and self.decay_epochs < 1 and self.decay_epochs * after_warmup < 1:
            raise ValueError(f"sched wsd: decay_epochs {self.decay_epochs:g} of the {after_warmup} epochs after warmup "
                             f"is {self.decay_epochs * after_warmup:.3g} epochs; the decay lasts at least one epoch "
                             "(timm rounds a shorter one to none)")
        if self.sched in ("step", "multistep", "plateau") and self.decay_rate >= 1:
            raise ValueError(f"train.decay_rate: {self.decay_rate:g} multiplies the rate at each {self.sched} decay; "
                             "expected a factor below 1")
        return self

    def size_at(self, epoch: int, final_size: int) -> int:
        """The training image size of ``epoch`` under ``size_schedule``."""
        started = [start for start in (self.size_schedule or {}) if start <= epoch]
        return self.size_schedule[max(started)] if started else final_size


class IdentitiesConfig(_Section):
    """How a model.identity run predicts: each row's identities ranked by its nearest training embeddings, blended
    with the ArcFace head's cosines, and the reserved label for an identity never seen, at a threshold tuned on
    OOF."""

    top_k: int = Field(20, ge=1, le=1000, description="Identities kept per row in oof.csv and test.csv (at least "
                       "the metric's and the submission's k).")
    neighbours: int = Field(100, ge=1, le=10000, description="Nearest training embeddings searched per row.")
    engine: Literal["auto", "sklearn", "faiss"] = Field(
        "auto", description="The neighbour search: scikit-learn's brute force, or faiss's exact index (the faiss "
        "extra); auto: faiss past a million gallery rows when it is installed.")
    logit_weight: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the head's cosine to an identity's "
                                "center against its nearest neighbour's cosine (0: neighbours only).")
    new_label: Optional[TextLabel] = Field(None, description="The label of an identity absent from training "
                                           "(new_whale, new_individual); when omitted, whichever of those the "
                                           "training table holds.")
    tune_new: bool = Field(True, description="Insert new_label below a score threshold tuned on OOF to maximise "
                           "MAP@k; false: never.")


class PredictConfig(_Section):
    """Inference after training: which weights, which test-time augmentations, how they are averaged."""

    tta: Union[Literal["auto"], list[str]] = Field(
        ["none"], description="none, hflip, vflip, transpose, rot90, rot180, rot270, scale:F (e.g. scale:1.15), "
        "rotate:D, shift:DX:DY (border reflected), or views joined by + (hflip+shift:1:1); or auto: each candidate "
        "is kept only if it improves the OOF score.")
    tta_space: Literal["prob", "logit"] = Field("prob", description="Average TTA views as probabilities or logits.")
    weights: Literal["auto", "raw", "ema", "avg"] = Field("auto", description="auto: the weights that scored best on "
                                                          "the fold; raw, ema or avg (train.avg_weights).")
    batch_size: Optional[int] = Field(None, ge=1, description="Inference batch size; twice train.batch_size when omitted.")
    identities: IdentitiesConfig = IdentitiesConfig()

    @field_validator("tta")
    @classmethod
    def _known_views(cls, views: Any) -> Any:
        if isinstance(views, list):
            if not views:
                raise ValueError("expected at least one view, e.g. [none]")
            for name in views:
                for part in str(name).split("+"):
                    check_tta_view(part)
        return views


class SubmitConfig(_Section):
    """The submission ``kagglecv run`` writes when a sample submission is given."""

    sample: Optional[Path] = Field(None, description="The competition's sample_submission.csv; no submission when omitted.")
    threshold: Union[Literal["oof"], float] = Field(
        0.5, description="Multi-label labels format: a number in (0, 1), or oof (per-class, tuned for F1, or F-beta when the metric is fbeta).")
    gz: bool = Field(False, description="Write .csv.gz.")
    dir: Path = Field(Path("submissions"), description="Folder of the submission files.")
    format: Literal["auto", "label", "labels", "positive", "probabilities", "top_k", "values"] = Field(
        "auto", description="The values written: a class name or integer class (label), separated labels (labels), "
        "the positive class's probability (positive), one probability column per class (probabilities), the k "
        "likeliest classes, most likely first (top_k), a regression target's values clipped to its range (values); "
        "auto: read from the sample's header and values.")
    top_k: int = Field(5, ge=1, le=100, description="format top_k: how many classes per row (auto: the sample's).")
    other_label: Optional[TextLabel] = Field(
        None, description="format label: the answer for an image of a class absent from training (UBC-OCEAN's "
        "Other), written where the top probability is under a threshold tuned on OOF (each row's own class left "
        "out stands for an unseen one).")
    other_share: float = Field(0.1, gt=0.0, lt=1.0, description="other_label: the share of test images expected to "
                               "be of an unseen class, which the tuning weighs against the seen ones.")

    @field_validator("threshold")
    @classmethod
    def _in_unit_interval(cls, value: Any) -> Any:
        if value != "oof" and not 0 < value < 1:
            raise ValueError(f"expected a number in (0, 1) or oof, got {value}")
        return value


class PseudoConfig(_Section):
    """Pseudo-labels: fold k also trains on test images labelled by the teacher's fold-k model only (its
    ``fold<k>/test.csv``), never by the fold-averaged predictions, which fold k's validation rows influenced."""

    teacher: Path = Field(description="A run or ensemble folder trained on the same folds file.")
    threshold: Optional[Union[float, dict[str, float]]] = Field(
        None, description="Keep a multiclass image whose top probability is at least this; multi-label: a label "
        "counts as present at p >= t and absent at p <= 1 - t, unsure labels are left out of the loss. A mapping "
        "gives each class its own threshold.")
    top_frac: Optional[float] = Field(None, gt=0, le=1, description="Instead of a threshold: the most confident "
                                      "fraction of the test images (multi-label: of each class's labels).")
    soft: bool = Field(False, description="Train on the teacher's probabilities instead of hard labels.")

    @model_validator(mode="after")
    def _one_rule(self) -> "PseudoConfig":
        if (self.threshold is None) == (self.top_frac is None):
            raise ValueError("pseudo: set threshold or top_frac (one of them)")
        values = self.threshold.values() if isinstance(self.threshold, dict) else [self.threshold]
        if self.threshold is not None and not all(0.5 <= value < 1 for value in values):
            raise ValueError(f"pseudo.threshold: expected numbers in [0.5, 1), got {self.threshold}")
        return self


class DistillConfig(_Section):
    """Knowledge distillation from a teacher run or ensemble: the loss mixes the hard-label loss with a KL (BCE for
    multi-label) term to the teacher's probabilities. For the rows fold k trains on, only the teacher's fold-k
    model(s) predict, so fold k's validation rows never reach fold k's training."""

    teacher: Path = Field(description="A run or ensemble folder trained on the same folds file.")
    weight: float = Field(0.5, ge=0, le=1, description="Share of the distillation term: (1 - w) x hard + w x soft.")
    temperature: float = Field(2.0, gt=0, description="Softens both distributions; the term is scaled by T^2 "
                               "(Hinton et al. 2015).")


class TrackingConfig(_Section):
    """A mirror of finished runs in an experiment tracker; kagglecv's own files stay the source of truth."""

    backend: Literal["off", "mlflow"] = Field("off", description="mlflow: `kagglecv run`, `report` and `track sync` "
                                              "log the run (pip install kagglecv[mlflow]).")
    uri: Optional[str] = Field(None, description="MLflow tracking URI; sqlite:///<runs_dir>/mlflow.db when omitted.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """``tracking: mlflow`` (or off) stands for ``tracking: {backend: mlflow}``."""
        if value is None or value is False:
            return {"backend": "off"}
        return {"backend": value} if isinstance(value, str) else value


class Config(_Section):
    """One experiment."""

    experiment: str = Field(description="Run folder name under runs_dir.", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    runs_dir: Path = Path("runs")
    metric: Optional[str] = Field(
        None, description="The competition metric (kagglecv.core.metrics.METRICS); accuracy, roc_auc (binary) or map when omitted."
    )
    metric_direction: Optional[Literal["maximize", "minimize"]] = Field(
        None, description="With a metric file (metric: path/to/metric.py, Kaggle's score(solution, submission, "
        "row_id_column_name) signature): whether higher scores are better.")
    data: DataConfig
    folds: FoldsConfig = FoldsConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    submit: SubmitConfig = SubmitConfig()
    tracking: TrackingConfig = TrackingConfig()
    pseudo: Optional[PseudoConfig] = None
    distill: Optional[DistillConfig] = None
    notes: Optional[str] = Field(None, description="Why this experiment: the motivation shown in the report's journal.")

    @property
    def inference_batch_size(self) -> int:
        """Images per inference batch: ``predict.batch_size``, else twice ``train.batch_size``."""
        return self.predict.batch_size or 2 * self.train.batch_size

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.experiment

    @model_validator(mode="after")
    def _training_fits_the_task(self) -> "Config":
        multilabel = self.data.task == "multilabel" or (isinstance(self.data.target, list) and self.data.task is None)
        if multilabel and self.train.sampler == "balanced":
            raise ValueError("train.sampler: 'balanced' needs one label per row; the task is multilabel")
        if self.data.task == "multiclass" and self.train.class_weights and self.train.loss not in ("auto", "ce"):
            raise ValueError(f"train.class_weights: works with loss ce for multiclass, got loss {self.train.loss!r}")
        if self.train.norm_lr_scale is not None and self.model.layer_decay is not None:
            raise ValueError("train.norm_lr_scale and model.layer_decay both set each parameter group's rate; set one "
                             f"(got norm_lr_scale {self.train.norm_lr_scale:g}, layer_decay {self.model.layer_decay:g})")
        if self.train.lookahead_every and not self.train.ema:
            raise ValueError(f"train.lookahead_every: {self.train.lookahead_every} restarts the model from its EMA; "
                             "set train.ema: true")
        smallest = min([self.model.img_size, *(self.train.size_schedule or {}).values()])
        if self.augment.batch == "flip_translate" and self.augment.translate >= smallest:
            raise ValueError(f"augment.translate: {self.augment.translate} px shifts an image of {smallest} px "
                             "(model.img_size or train.size_schedule) out of itself; expected fewer pixels than its side")
        if self.augment.alternate_flip and (self.augment.batch == "none" or not self.augment.hflip):
            raise ValueError("augment.alternate_flip: flips whole batches; set augment.batch (flip or flip_translate) "
                             f"and augment.hflip: true (got batch {self.augment.batch!r}, hflip {self.augment.hflip})")
        self._loss_fits_the_target()
        self._fusion_fits()
        self._identity_fits()
        teacher = "pseudo" if self.pseudo is not None else "distill" if self.distill is not None else None
        if teacher and self.data.task in ("regression", "heads"):
            raise ValueError(f"{teacher}: teachers give one target's class probabilities; a {self.data.task} run "
                             "learns from its targets only (remove the section)")
        if teacher and self.train.loss not in ("auto", "ce", "bce"):
            raise ValueError(f"train.loss: a student of a teacher ({teacher}:) trains with cross-entropy (BCE for "
                             f"multi-label), got {self.train.loss!r}")
        return self

    def _fusion_fits(self) -> None:
        """A fusion head needs the table's features, and nothing that makes rows the table does not hold."""
        if self.model.features_head is None:
            return
        if self.data.features is None or not self.data.features.columns():
            raise ValueError("model.features_head: joins the image with data.features; name its numeric or "
                             "categorical columns (kagglecv init proposes them)")
        used = [key for key, value in {"train.mixup": self.train.mixup, "train.cutmix": self.train.cutmix,
                                       "pseudo": self.pseudo, "distill": self.distill,
                                       "train.norm_lr_scale": self.train.norm_lr_scale}.items() if value]
        if used:
            raise ValueError(f"model.features_head with {', '.join(used)}: mixed or pseudo-labelled images have no "
                             "table row, and the head sets its own learning rate; turn them off")

    def _identity_fits(self) -> None:
        """An identity head trains on one identity per row, on the images as they are."""
        if self.model.identity is None:
            return
        if self.data.task not in (None, "multiclass"):
            raise ValueError(f"model.identity: identities are one label per row (data.task multiclass), got "
                             f"{self.data.task}")
        used = [key for key, value in {"train.mixup": self.train.mixup, "train.cutmix": self.train.cutmix,
                                       "pseudo": self.pseudo, "distill": self.distill,
                                       "train.norm_lr_scale": self.train.norm_lr_scale,
                                       "train.loss": self.train.loss not in ("auto", "ce"),
                                       "predict.tta": self.predict.tta != ["none"]}.items() if value]
        if used:
            raise ValueError(f"model.identity with {', '.join(used)}: the ArcFace margin needs each image's one "
                             "identity and cross-entropy, the head sets its own learning rate, and the neighbours "
                             "search one view; turn them off")

    def _loss_fits_the_target(self) -> None:
        """Regression losses for a numeric target, class losses and class tools for the others."""
        regression, loss = self.data.task in ("regression", "heads"), self.train.loss
        if self.data.task == "heads" and loss not in ("auto", "ce"):
            raise ValueError(f"train.loss: {loss}; several heads train with cross-entropy per head (auto or ce)")
        if loss in REGRESSION_LOSSES and not regression:
            raise ValueError(f"train.loss: {loss} is a regression loss; set data.task: regression, or use ce, bce, "
                             "focal or asl")
        if not regression:
            return
        if self.data.task == "regression" and loss not in ("auto", *REGRESSION_LOSSES):
            raise ValueError(f"train.loss: {loss} is a classification loss; a regression target takes "
                             f"{', '.join(REGRESSION_LOSSES)}")
        tools = {"train.mixup": self.train.mixup, "train.cutmix": self.train.cutmix,
                 "train.label_smoothing": self.train.label_smoothing, "train.class_weights": self.train.class_weights,
                 "train.sampler: balanced": self.train.sampler == "balanced"}
        used = [key for key, value in tools.items() if value]
        if used:
            raise ValueError(f"{', '.join(used)}: mix or weigh classes of one target; a {self.data.task} target "
                             f"has {'none' if self.data.task == 'regression' else 'several'} (turn "
                             f"{'them' if len(used) > 1 else 'it'} off)")

    @model_validator(mode="after")
    def _known_metrics(self) -> "Config":
        file = is_metric_file(self.metric)
        if file != (self.metric_direction is not None):
            raise ValueError("metric_direction: maximize or minimize goes with a metric file (metric: path/to/"
                             "metric.py), and only with one")
        if file and self.submit.sample is None:
            raise ValueError("metric: a metric file scores frames shaped like the sample submission; set submit.sample")
        for key, name in (("metric", self.metric), ("train.metric", self.train.metric)):
            if name is None or (key == "train.metric" and name in ("auto", "loss")) or is_metric_file(name):
                continue
            if self.data.task is not None:
                try:
                    get_metric(name, self.data.task)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
            elif not known_metric(name):
                raise ValueError(f"{key}: unknown metric {name!r}; expected one of {', '.join(METRICS)}, an alias "
                                 f"({', '.join(sorted({alias for alias, _ in ALIASES}))}), fbeta:<beta>:<average> "
                                 "or map@<k>")
        return self

    @model_validator(mode="after")
    def _test_ids_from_the_sample(self) -> "Config":
        """No test table but a sample submission: the sample's rows are the test set (Kaggle ships many competitions
        so), which the written config says."""
        if self.data.test_csv is None and self.submit.sample is not None:
            self.data.test_csv = self.submit.sample
        return self

    @model_validator(mode="after")
    def _fill_folds_file(self) -> "Config":
        if self.folds.file is None:
            self.folds.file = self.folds.resolved_file(self.data)
        return self


# A config is a few hundred lines at most; these bounds stop a "billion laughs" of nested aliases before it is
# expanded (by validation or dumping), while leaving room for any honest config.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_NODES = 100_000
MAX_CONFIG_DEPTH = 32


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``section.key=value`` overrides, and validate it.

    This is the config the user passes: a metric file it names is one the user chose to run
    (``name_metric_file``); a run folder's recorded config is read by ``RunDir.read_config`` and names none.

    Raises:
        ConfigError: naming the file and the key for a missing file, bad YAML, an unknown key or a wrong type.
    """
    raw = read_config_file(path)
    for override in overrides or []:
        apply_override(raw, override)
    config = validate_config(raw, source=str(path))
    if is_metric_file(config.metric):
        name_metric_file(config.metric)
    return config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path``: bounded in size, aliases and depth, safe tags only."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected a YAML config file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = path.read_bytes()
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {len(data)} bytes; a config is at most {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(raw).__name__}")
    return raw


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` after checking that the document, aliases expanded, stays small and shallow."""
    try:
        loader = yaml.SafeLoader(text)  # what yaml.safe_load does, with the check between composing and constructing
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            _check_expanded_size(root, source)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML (safe subset only): {_one_line(exc)}") from None


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    """Count the nodes the document would have with every alias expanded, memoized per node (linear time)."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{source}: nested deeper than {MAX_CONFIG_DEPTH} levels; refused")
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in visiting:
            raise ConfigError(f"{source}: an alias refers to itself (line {node.start_mark.line + 1}); refused")
        visiting.add(id(node))
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else [])
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_CONFIG_NODES:
            raise ConfigError(f"{source}: expands to more than {MAX_CONFIG_NODES} values (nested aliases near line "
                              f"{node.start_mark.line + 1}?); a config is small; refused")
        visiting.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, 0)


def validate_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{source}: {line}" for line in _describe_errors(exc))) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``raw``; the value is parsed as YAML (``1e-3``, ``[a, b]``, ``null``)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected section.key=value")
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--set {key.strip()}: the value has {len(text)} characters; at most {MAX_CONFIG_BYTES}")
    value = parse_yaml(text, f"--set {key.strip()}")
    node = raw
    parts = key.strip().split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def dump_config(config: Config) -> str:
    """The fully resolved config as YAML, defaults filled in, in the models' field order."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _describe_errors(exc: ValidationError) -> list[str]:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif error["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        elif error["type"] == "value_error" or isinstance(error.get("input"), (dict, list)):
            message = error["msg"].removeprefix("Value error, ")
            lines.append(message if not error["loc"] or message.startswith(f"{key}") else f"{key}: {message}")
        else:
            lines.append(f"{key}: {error['msg']}, got {_short(error.get('input'))}")
    return lines


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
