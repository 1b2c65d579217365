"""What a student's fold k learns from a teacher, without leaking fold k's validation rows into it.

The rule: nothing fold k's validation rows influenced may reach fold k's training. A teacher's fold-k model was
trained on exactly the student's fold-k training rows (same folds file, checked by its sha256), so

* pseudo-labels for fold k come from the teacher's ``fold<k>/test.csv`` alone, never from its fold-averaged
  ``test.csv`` (the other folds' models trained on fold k's validation rows, and a test image close to one of them
  would carry its label into fold k's training);
* distillation targets for fold k's training rows are the teacher's fold-k model's predictions on those rows,
  never its OOF predictions (which the other folds' models made, having trained on fold k's validation rows).

An ensemble teacher is the blend of its members' fold-k models with the ensemble's recorded weights. The targets
of a fold are dense float rows ``[hard | teacher]`` (see :class:`kagglecv.nn.losses.TeacherLoss`): one-hot or 0/1
labels (NaN where a multi-label pseudo-label is unsure), then the teacher's probabilities when distilling. What a
fold used is written next to its weights: ``pseudo.csv`` and ``teacher.csv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kagglecv.core.config import Config, PseudoConfig
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import sha256_file
from kagglecv.core.predictions import (
    read_aligned,
    write_predictions,
    write_pseudo_labels,
)
from kagglecv.core.runs import FoldDir, RunDir
from kagglecv.data.pixels import PixelImages
from kagglecv.data.sources import ImageSource, JoinedImages
from kagglecv.data.table import (
    CompetitionData,
    as_outputs,
    num_outputs,
    output_columns,
    targets_for_loss,
)
from kagglecv.nn.recipe import load_recipe


@dataclass
class FoldTeaching:
    """What fold k trains on beyond its own rows: images (the table's, then the pseudo-labelled test images), dense
    targets for every image, and the rows to train on."""

    images: object
    targets: np.ndarray
    train_rows: np.ndarray
    stats: dict = field(default_factory=dict)


def uses_teacher(config: Config) -> bool:
    return config.pseudo is not None or config.distill is not None


def open_teacher(path: Path, config: Config, data: CompetitionData, what: str):
    """The teacher's recipe (run or ensemble), after checking it was trained on the student's folds and classes."""
    teacher = RunDir(path)
    info = teacher.read_info()
    if info.kind == "full":
        raise KagglecvError(f"{what}.teacher {path}: a full-data refit has no per-fold models; name the CV run "
                            f"{info.cv_run} instead")
    if info.classes != data.classes or info.task != data.task:
        raise KagglecvError(f"{what}.teacher {path}: classes or task differ from the student's table")
    folds_file = Path(config.folds.file)
    if info.folds_sha256 != sha256_file(folds_file):
        raise KagglecvError(f"{what}.teacher {path}: trained on other folds ({info.folds_file}) than "
                            f"{folds_file}; its fold-k model would have seen fold k's validation rows")
    return load_recipe(teacher.path)


def fold_teaching(config: Config, data: CompetitionData, test: CompetitionData | None, train_rows: np.ndarray,
                  folder: FoldDir, console: Console, full_fit: bool = False) -> FoldTeaching:
    """Fold ``folder.index``'s images, targets and rows, with its pseudo-labels and distillation targets.

    ``full_fit``: a refit on every row, which has no validation rows to protect: the teacher's fold-averaged test
    predictions label the test images, and its OOF predictions (each row predicted by a model that never saw it)
    are the distillation targets.
    """
    fold, width = folder.index, num_outputs(data.task, data.classes)
    hard = hard_targets(data, config.train.label_smoothing)
    images, rows, stats = data.images, train_rows, {}
    pseudo_teacher = None
    if config.pseudo is not None:
        if test is None:
            raise KagglecvError("pseudo: needs a test set (data.test_csv, submit.sample or data.test_image_dir: the images to pseudo-label)")
        recipe = open_teacher(config.pseudo.teacher, config, data, "pseudo")
        probabilities = _whole_run_predictions(config.pseudo.teacher, data, test.ids, "test") if full_fit \
            else recipe.fold_test_predictions(fold, test.ids)
        keep, pseudo_targets = select_pseudo_labels(probabilities, config.pseudo, data.task, data.classes)
        write_pseudo_labels(folder.pseudo_path, test.ids[keep], pseudo_targets, output_columns(data.classes, data.task))
        images = join_images(data.images, subset_images(test.images, keep))
        pseudo_teacher = as_outputs(probabilities[keep], data.task)
        rows = np.concatenate([train_rows, len(data) + np.arange(len(keep))])
        hard = np.vstack([hard, pseudo_targets])
        stats["pseudo"] = {"labels": int(len(keep)), "test_rows": len(test), "teacher": Path(config.pseudo.teacher).name}
        console.line(f"fold {fold}: {len(keep)} of {len(test)} test images pseudo-labelled by "
                     f"{config.pseudo.teacher} fold {fold}")
    if config.distill is None:
        return FoldTeaching(images, hard, rows, stats)
    teacher = np.full((len(hard), width), np.nan, dtype=np.float32)
    if full_fit:
        oof = _whole_run_predictions(config.distill.teacher, data, data.ids[train_rows], "oof")
        teacher[train_rows] = as_outputs(oof, data.task)
    else:
        teacher[train_rows] = _distillation_targets(config, data, train_rows, folder, console)
    if pseudo_teacher is not None:  # the pseudo-labelled images' teacher is the one that labelled them
        teacher[len(data):] = pseudo_teacher
    return FoldTeaching(images, np.hstack([hard, teacher]), rows, stats)


def _whole_run_predictions(path: Path, data: CompetitionData, ids: np.ndarray, kind: str) -> np.ndarray:
    """A teacher run's (or ensemble's) fold-averaged ``test.csv`` or its ``oof.csv``, in ``ids`` order."""
    run = RunDir(path)
    file = run.test_path if kind == "test" else run.oof_path
    return read_aligned(file, ids, data.classes, Path("the test table") if kind == "test" else data.source,
                        exact=kind == "test", dtype=np.float32)


def hard_targets(data: CompetitionData, smoothing: float = 0.0) -> np.ndarray:
    """The table's labels as dense float rows: one-hot (multiclass), or the loss's 0/1 targets (multi-label, VOC
    "difficult" as 0; binary, the positive class), smoothed as timm's mixup smooths them."""
    if data.task == "multiclass":
        count = len(data.classes)
        dense = np.full((len(data), count), smoothing / count, dtype=np.float32)
        dense[np.arange(len(data)), data.targets] = 1.0 - smoothing + smoothing / count
        return dense
    return targets_for_loss(data) * (1.0 - smoothing) + 0.5 * smoothing


def select_pseudo_labels(probabilities: np.ndarray, rule: PseudoConfig, task: str,
                         classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The test rows kept and their dense targets (NaN: an unsure multi-label label, left out of the loss).

    multiclass and binary: a row is kept when its top probability reaches the threshold (that of its top class when
    thresholds are per class), or when it is among the ``top_frac`` most confident rows. multi-label: each label
    counts when p >= t (present) or p <= 1 - t (absent), with ``t`` per class, or when it is among its class's
    ``top_frac`` most confident labels; rows with no label counted are left out.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if task == "multilabel":
        confident = _confident_labels(probabilities, rule, classes)
        values = probabilities if rule.soft else (probabilities >= 0.5).astype(np.float64)
        targets = np.where(confident, values, np.nan)
        keep = np.flatnonzero(confident.any(axis=1))
        return keep, targets[keep].astype(np.float32)
    top = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    if rule.top_frac is not None:
        count = math.ceil(rule.top_frac * len(confidence))
        keep = np.sort(np.argsort(-confidence, kind="stable")[:count])
    else:
        keep = np.flatnonzero(confidence >= _thresholds(rule, classes)[top])
    if task == "binary":
        targets = as_outputs(probabilities[keep], task) if rule.soft else top[keep, None].astype(np.float64)
    else:
        targets = probabilities[keep] if rule.soft else np.eye(len(classes))[top[keep]]
    return keep, targets.astype(np.float32)


def _confident_labels(probabilities: np.ndarray, rule: PseudoConfig, classes: list[str]) -> np.ndarray:
    confidence = np.maximum(probabilities, 1.0 - probabilities)
    if rule.top_frac is None:
        return confidence >= _thresholds(rule, classes)[None, :]
    count = math.ceil(rule.top_frac * len(confidence))
    ranks = np.argsort(np.argsort(-confidence, axis=0, kind="stable"), axis=0, kind="stable")
    return ranks < count


def _thresholds(rule: PseudoConfig, classes: list[str]) -> np.ndarray:
    if not isinstance(rule.threshold, dict):
        return np.full(len(classes), rule.threshold)
    unknown = sorted(set(rule.threshold) - set(classes))
    missing = [name for name in classes if name not in rule.threshold]
    if unknown or missing:
        raise KagglecvError(f"pseudo.threshold: expected one threshold per class; unknown {unknown}, missing "
                            f"{missing[:5]}")
    return np.array([rule.threshold[name] for name in classes])


def _distillation_targets(config: Config, data: CompetitionData, train_rows: np.ndarray, folder: FoldDir,
                          console: Console) -> np.ndarray:
    """The teacher's fold-k probabilities on fold k's training rows; computed once and kept in ``teacher.csv``."""
    ids = data.ids[train_rows]
    if folder.teacher_path.is_file():
        probabilities = read_aligned(folder.teacher_path, ids, data.classes, data.source)
    else:
        recipe = open_teacher(config.distill.teacher, config, data, "distill")
        probabilities = recipe.predict_fold(folder.index, data.images, train_rows, console, features=data.features)
        folder.path.mkdir(parents=True, exist_ok=True)
        write_predictions(folder.teacher_path, ids, probabilities, data.classes)
        console.line(f"fold {folder.index}: {config.distill.teacher} fold {folder.index} predicted its "
                     f"{len(ids)} training rows (distillation targets, {folder.teacher_path})")
    return as_outputs(probabilities, data.task)


def subset_images(images, rows: np.ndarray):
    """``rows`` of an image source: a list of files or a reader's source."""
    if isinstance(images, ImageSource):
        return images.take(rows)
    return [images[row] for row in rows]


def join_images(first, second):
    """Two image sources as one, rows of ``first`` then of ``second`` (both files, or both a reader's)."""
    if isinstance(first, ImageSource) != isinstance(second, ImageSource):
        raise KagglecvError("pseudo: the training and test images must both be files or both come from a reader")
    if isinstance(first, PixelImages) and isinstance(second, PixelImages) and first.eight_bit == second.eight_bit:
        if first.pixels.shape[1:] != second.pixels.shape[1:]:
            raise KagglecvError(f"pseudo: test images {second.pixels.shape[1:]} differ in shape from the training "
                                f"images {first.pixels.shape[1:]}")
        return PixelImages(np.concatenate([first.pixels, second.pixels]), first.source, first.eight_bit)
    if isinstance(first, ImageSource):
        return JoinedImages(first, second)
    return [*first, *second]


