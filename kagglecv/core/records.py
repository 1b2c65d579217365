"""The JSON files of a run, ensemble or bundle folder, read through schemas: once a folder is shared it is someone
else's input, so every record has only its expected keys, types and sizes, and a name it holds is a plain name.

A record that breaks its schema is one error naming the file and the first bad key. Paths are never read from a
record: an ensemble's members are paths relative to its own folder with a fingerprint (checked by ``run_dir``), a
refit's CV run and a student's teacher are the names of folders beside it, a bundle's members are
``members/<name>``, and ``inspect.json`` holds file names inside its run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from kagglecv.core.errors import KagglecvError

MAX_CLASSES = 100_000
Text = Annotated[str, StringConstraints(max_length=4096)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^/\\\x00]+$")]
ClassName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Sha = Annotated[str, StringConstraints(max_length=128)]
Number = Union[float, int, None]
Task = Literal["multiclass", "multilabel", "binary", "regression", "heads"]
Source = Literal["raw", "ema", "avg"]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _plain_name(value: str) -> str:
    if value in (".", "..") or "/" in value or "\\" in value:
        raise ValueError(f"expected a plain folder name, got {value!r}")
    return value


class ModelFile(_Record):
    path: Text
    name: Text
    sha256: Sha
    copy_: Name = Field(alias="copy")

    @field_validator("copy_")
    @classmethod
    def _the_run_copy(cls, value: str) -> str:
        if value != "model_code.py":
            raise ValueError(f"expected model_code.py, got {value!r}")
        return value


class MemberReference(_Record):
    path: Text
    fingerprint: Sha

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if Path(value).is_absolute() or not value:
            raise ValueError(f"expected a path relative to the ensemble's folder, got {value!r}")
        return value


class RunInfo(_Record):
    """``run.json``: a run's, an ensemble's, a refit's or a bundle's identity."""

    experiment: Name
    kind: Literal["run", "full", "ensemble", "stack"] = "run"
    created: Optional[Text] = None
    task: Task
    classes: list[ClassName] = Field(max_length=MAX_CLASSES)
    folds_file: Optional[Text] = None
    folds_sha256: Optional[Sha] = None
    n_folds: Optional[int] = Field(None, ge=1, le=1000)
    table_sha256: Optional[Sha] = None
    params: Optional[dict[Name, int]] = None
    model_file: Optional[ModelFile] = None
    label_fixes: Optional[dict[Name, Union[Text, int, None]]] = None
    versions: Optional[dict[Name, Text]] = None
    git_commit: Optional[Text] = None
    python: Optional[Text] = None
    amp: Optional[Literal["bf16", "fp16", "off"]] = None      # the autocast dtype train.amp chose on the device
    epochs: Optional[int] = Field(None, ge=1)                 # a full refit's plan
    cv_best_epochs: Optional[list[int]] = Field(None, max_length=1000)
    source: Optional[Source] = None
    cv_run: Optional[Name] = None
    members: Optional[list[MemberReference]] = Field(None, max_length=1000)  # an ensemble or a stack
    backbone: Optional[Text] = None
    bundle: Optional[int] = None                              # a bundle's copy
    format: Optional[Literal["torch", "onnx"]] = None         # a bundle's models: safetensors, or ONNX graphs
    bundle_members: Optional[list[Text]] = Field(None, max_length=1000)
    target_range: Optional[dict[ClassName, tuple[Finite, Finite]]] = Field(None, max_length=MAX_CLASSES)  # regression

    @field_validator("target_range")
    @classmethod
    def _ordered_range(cls, value: dict | None) -> dict | None:
        for name, (low, high) in (value or {}).items():
            if not low <= high:
                raise ValueError(f"the range of {name!r} is [{low}, {high}]; expected low <= high")
        return value

    @field_validator("cv_run")
    @classmethod
    def _cv_run_is_a_name(cls, value: str | None) -> str | None:
        return None if value is None else _plain_name(value)

    @field_validator("bundle_members")
    @classmethod
    def _inside_the_bundle(cls, value: list[str] | None) -> list[str] | None:
        for member in value or []:
            parts = member.split("/")
            if len(parts) != 2 or parts[0] != "members" or not parts[1] or parts[1] in (".", ".."):
                raise ValueError(f"expected members/<name>, got {member!r}")
        return value


class PseudoStats(_Record):
    labels: int = Field(ge=0)
    test_rows: int = Field(ge=0)
    teacher: Name

    @field_validator("teacher")
    @classmethod
    def _teacher_is_a_name(cls, value: str) -> str:
        return _plain_name(value)


class DoneRecord(_Record):
    """``fold<K>/done.json``: a finished fold."""

    fold: int = Field(ge=0, le=1000)
    best_epoch: int = Field(ge=0)
    best_score: Number = None
    full_fit: bool = False
    metric: Text
    source: Source = "raw"
    epochs_run: Optional[int] = None
    train_rows: Optional[int] = None
    valid_rows: Optional[int] = None
    seconds: Optional[float] = None
    pseudo: Optional[PseudoStats] = None
    distill: Optional[dict[Name, Union[Text, int, float, None]]] = None


class OutputScale(_Record):
    """How a regression model's outputs ``z`` become values in the target's units, per target: ``center + scale * z``
    (``standard``: the training rows' mean and std) or ``center + scale * sigmoid(z)`` (``range``: the low end and
    the width of the range, ``bce_scaled``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["standard", "range"]
    center: list[Finite] = Field(min_length=1, max_length=MAX_CLASSES)
    scale: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1, max_length=MAX_CLASSES)

    @field_validator("scale")
    @classmethod
    def _one_per_center(cls, value: list[float], info) -> list[float]:
        if len(value) != len(info.data.get("center", value)):
            raise ValueError("expected one scale per center")
        return value


class NormalizationRecord(_Record):
    """``fold<K>/normalization.json``: how the fold's inputs were normalised, ``(x - mean * max_pixel_value) /
    (std * max_pixel_value)`` per channel, or by each image's own statistics (``per_sample``); for a regression
    target, how its outputs become values (``output``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mean: list[float] = Field(min_length=1, max_length=1024)
    std: list[float] = Field(min_length=1, max_length=1024)
    max_pixel_value: float = Field(gt=0)
    per_sample: bool = False
    output: Optional[OutputScale] = None

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if min(value) <= 0:
            raise ValueError("every std must be positive")
        return value


class PredictRecord(_Record):
    """``predict.json``: the TTA views and space the predict stage chose."""

    tta: list[Annotated[str, StringConstraints(max_length=64)]] = Field(min_length=1, max_length=64)
    tta_space: Optional[Literal["prob", "logit"]] = None  # None: the config's predict.tta_space
    metric: Optional[Text] = None
    oof_score: Number = None
    candidate_scores: Optional[dict[Text, Number]] = None
    auto: bool = False
    full_fit: bool = False
    cv_run: Optional[Name] = None


class IdentityRecord(_Record):
    """``identities.json`` of a ``model.identity`` run: how its top-k predictions become a submission's lists."""

    top_k: int = Field(ge=1, le=1000)
    metric_k: int = Field(ge=1, le=100)
    new_label: Optional[ClassName] = None
    threshold: Optional[Finite] = None  # the new label goes before the first score under it; None: never placed
    oof_never: Optional[Finite] = None  # OOF MAP@k without the new label
    oof_tuned: Optional[Finite] = None  # with it, at the threshold tuned on the same OOF rows
    oof_nested: Optional[Finite] = None  # with it, each fold's rows at the threshold tuned on the other folds' rows
    new_rows: int = Field(0, ge=0)      # OOF rows whose identity their fold's training part lacks


class InspectRecord(_Record):
    """``inspect.json``: what ``kagglecv inspect`` found; its files are names inside the run folder."""

    run: Text
    task: Task
    rows: int = Field(ge=0)
    worst: list[dict[str, Any]] = Field(max_length=10_000)
    confused_pairs: list[dict[str, Any]] = Field(max_length=10_000)
    label_issues: int = Field(ge=0)
    label_issues_file: Literal["label_issues.csv"]
    duplicate_conflicts: list[dict[str, Any]] = Field(max_length=10_000)
    duplicates_checked: Text
    pictures: list[Literal["errors.png", "confused_pairs.png", "duplicate_conflicts.png", "residuals.png"]] = Field(
        max_length=4)


Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class BlendRecipe(_Record):
    """``weights.json``: the blend ``infer`` replays (method, weights per member, exponent, stacking model)."""

    method: Literal["mean", "weighted", "rank", "geometric", "power", "logit", "hill", "optimize", "stack"]
    metric: Optional[Text] = None
    weights: dict[Text, Union[Weight, dict[ClassName, Weight], Text]] = Field(max_length=1000)
    power: float = Field(2.0, gt=0, allow_inf_nan=False)
    stack_model: Optional[list[Any]] = Field(None, max_length=MAX_CLASSES)


class StackSettings(_Record):
    rounds: int = Field(300, ge=1, le=100_000)
    learning_rate: float = Field(0.05, gt=0, le=1)
    leaves: int = Field(15, ge=2, le=65_536)
    min_rows: int = Field(20, ge=1)
    alpha: float = Field(1.0, gt=0, allow_inf_nan=False)
    seed: int = 42


class StackRecipe(_Record):
    """``stack.json``: the second-stage model ``infer`` replays: its kind and settings, the design's columns (the
    members' prediction columns, the features, the group), the category levels of every training row (a test
    category outside them is refused) and of each fold's training rows (its model's encoding)."""

    model: Literal["lightgbm", "xgboost", "catboost", "ridge", "svr"]
    settings: StackSettings
    metric: Optional[Text] = None
    members: list[Name] = Field(min_length=1, max_length=1000)
    predictions: list[Text] = Field(min_length=1, max_length=MAX_CLASSES)
    numeric: list[Text] = Field([], max_length=10_000)
    categorical: list[Text] = Field([], max_length=10_000)
    group: Optional[Text] = None
    levels: dict[Text, list[Text]] = Field({}, max_length=10_000)
    fold_levels: list[dict[Text, list[Text]]] = Field(min_length=1, max_length=1000)
    blocks: int = Field(ge=1, le=MAX_CLASSES)
    embeddings: list[Text] = Field([], max_length=1_000_000)  # "<run>:e<i>": members' pre-logit features, last


R = TypeVar("R", bound=BaseModel)


def read_record(schema: type[R], raw: Any, path: Path) -> R:
    """``raw`` (a parsed JSON file) as a ``schema`` record; else one error naming the file, the key and what was
    wrong."""
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(the whole file)"
        raise KagglecvError(f"{path}: corrupt or not kagglecv's: {where}: {error['msg']}; re-create it with the "
                            "command that wrote it") from None


def record_json(schema: type[BaseModel], record: BaseModel | dict, path: Path) -> dict:
    """What a writer puts in a record's file: ``record`` (a record, or a dict checked against ``schema`` first: the
    writer checks what every reader checks) as the keys it sets."""
    checked = record if isinstance(record, schema) else read_record(schema, record, path)
    return checked.model_dump(exclude_unset=True, by_alias=True)
