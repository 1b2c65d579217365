"""A finished run or ensemble (or a bundle of either) as a predictor: the one way kagglecv predicts a test set.

``RunRecipe.predict_fold`` is the only function that makes test predictions: the train stage (each fold's test pass),
``predict`` (with the TTA it chose), full refits, teachers (pseudo-labels, distillation), ``pack`` (timing) and
``infer`` all call it. A recipe is read from the run folder (``load_recipe``: every fold's chosen weights from
``done.json`` and ``predict.weights``, the TTA views and space from ``predict.json``) or built by the stage that is
making the run, with the folds, weights and views it has chosen so far. Reading a recipe needs no torch; predicting
loads it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Union

import numpy as np

from kagglecv.core.blending import apply_blend, as_predictions, stack_model_from_state
from kagglecv.core.config import Config, DataConfig, FeaturesConfig
from kagglecv.core.console import Console
from kagglecv.core.errors import DataError, KagglecvError, summarize
from kagglecv.core.predictions import (
    FLOAT_FORMAT,
    aligned,
    combine_views,
    read_predictions,
)
from kagglecv.core.records import RunInfo
from kagglecv.core.records import StackRecipe as StackRecord
from kagglecv.core.runs import FoldDir, RunDir, resolve_member
from kagglecv.core.topk import TopK, blend_top_k
from kagglecv.data.features import check_test_categories, features_of, with_features
from kagglecv.data.load import load_test
from kagglecv.data.members import read_gallery, write_gallery
from kagglecv.data.table import CompetitionData, FeatureTable, num_outputs
from kagglecv.nn.onnx_predictor import ONNX_FILE, OnnxFold
from kagglecv.second.design import DesignSpec, level_one_columns, level_one_names
from kagglecv.second.identities import FoldOutputs, fold_top_k
from kagglecv.second.models import (
    MAX_MODEL_BYTES,
    MODEL_SUFFIX,
    load_block,
    output_blocks,
)
from kagglecv.second.stacking import FoldModel, LevelOne


@dataclass
class RunRecipe:
    """How a trained run made its test predictions."""

    run: RunDir
    config: Config
    task: str
    classes: list[str]
    views: list[str]
    space: str
    sources: dict[int, str]  # fold -> the weights it predicts with: "raw" (best.safetensors), "ema" or "avg"
    format: str = "torch"    # "onnx": an ONNX bundle, each fold's model.onnx run by ONNX Runtime (no torch)

    def predict(self, test: CompetitionData, console: Console, batch_size: int | None = None,
                workers: int | None = None) -> np.ndarray:
        rows = np.arange(len(test))
        return np.mean([self.predict_fold(fold, test.images, rows, console, batch_size, workers, test.features)
                        for fold in sorted(self.sources)], axis=0)

    def predict_fold(self, fold: int, images, rows: np.ndarray, console: Console | None = None,
                     batch_size: int | None = None, workers: int | None = None,
                     features: FeatureTable | None = None) -> np.ndarray:
        """Fold ``fold``'s probabilities for ``rows`` of ``images``, with the run's weights and TTA (``features``:
        the table's ``data.features`` beside ``images``, which a fusion model takes)."""
        progress = console.progress(f"{self.run.name} fold {fold}", len(rows)) if console else None
        if self.format == "onnx":
            config = with_loader_settings(self.config, batch_size, workers)
            with progress or contextlib.nullcontext() as bar:
                probabilities = OnnxFold(self.run.fold(fold).path / ONNX_FILE).predict(
                    images, rows, config.model.img_size, config.model.in_chans, config.inference_batch_size, bar)
            return self._checked(fold, probabilities, (len(rows), len(self.classes)), "ONNX model's output")
        logits = self.view_logits(fold, images, rows, self.views, progress, batch_size, workers, features)
        return combine_views([logits[name] for name in self.views], self.task, self.space)

    def _predictor(self, batch_size: int | None, workers: int | None):
        """The fold-model runner, with the command's batch size and loader workers (torch: only when a model runs)."""
        from kagglecv.nn.inference import FoldPredictor

        return FoldPredictor(with_loader_settings(self.config, batch_size, workers), self.run, self.task, self.classes)

    def _checked(self, fold: int, values: np.ndarray, expected: tuple[int, int], what: str) -> np.ndarray:
        """A fold's predictions of the run's shape, every value finite; else one error naming the run and fold."""
        if values.shape != expected and expected[0]:
            raise KagglecvError(f"{self.run.path}: fold {fold}'s {what} has shape {values.shape}; the run predicts "
                                f"{expected[1]} values a row for {expected[0]} rows")
        bad = int(np.size(values) - np.isfinite(values).sum())
        if bad:
            raise KagglecvError(f"{self.run.path}: fold {fold}'s {what} holds {bad} NaN or infinite values of "
                                f"{np.size(values)}; its weights are damaged or its training diverged")
        return values

    def view_logits(self, fold: int, images, rows: np.ndarray, views: list[str], progress=None,
                    batch_size: int | None = None, workers: int | None = None,
                    features: FeatureTable | None = None) -> dict[str, np.ndarray]:
        """Fold ``fold``'s logits for ``rows`` of ``images`` under each of ``views`` (each image decoded once)."""
        if self.format == "onnx":
            raise KagglecvError(f"{self.run.path}: an ONNX bundle gives probabilities of its packed views only; use "
                                "the run it was packed from")
        predictor = self._predictor(batch_size, workers)
        model = predictor.load(fold, self.sources[fold])
        logits = predictor.views(model, images, rows, views, progress=progress, features=features)
        for name, values in logits.items():
            self._checked(fold, values, (len(rows), num_outputs(self.task, self.classes)), f"logits under view {name}")
        return logits

    def embed_fold(self, fold: int, test: CompetitionData, batch_size: int | None = None,
                   workers: int | None = None) -> np.ndarray:
        """Fold ``fold``'s pre-logit features of every row of ``test`` (as ``kagglecv embed`` writes them)."""
        if self.format == "onnx" or fold not in self.sources:
            raise KagglecvError(f"{self.run.path}: no fold {fold} model to embed with (an ONNX bundle gives "
                                "probabilities only)")
        predictor = self._predictor(batch_size, workers)
        model = predictor.load(fold, self.sources[fold])
        return predictor.embeddings(model, test.images, np.arange(len(test)), test.features)

    def identity_fold(self, fold: int, images, rows: np.ndarray, console: Console | None = None,
                      batch_size: int | None = None, workers: int | None = None) -> FoldOutputs:
        """An identity run's fold ``fold``: the embeddings of ``rows`` of ``images`` and the head's cosines."""
        if self.config.model.identity is None or self.format != "torch":
            raise KagglecvError(f"{self.run.path}: not a model.identity run with its fold models")
        predictor = self._predictor(batch_size, workers)
        progress = console.progress(f"{self.run.name} fold {fold}", len(rows)) if console else None
        embeddings, cosines = predictor.identity_outputs(predictor.load(fold, self.sources[fold]), images, rows,
                                                         progress)
        return FoldOutputs(self._checked(fold, embeddings, (len(rows), embeddings.shape[1]), "embeddings"),
                           self._checked(fold, cosines, (len(rows), len(self.classes)), "cosines"))

    def record_gallery(self, fold: int, data: CompetitionData, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Fold ``fold``'s gallery: the embeddings of ``rows`` of ``data`` (its training part, or every row of a
        full refit), written with their ids and ``labels`` as ``fold<K>/gallery.npy`` and ``gallery.csv``."""
        gallery = self.identity_fold(fold, data.images, rows).embeddings
        write_gallery(self.run.fold(fold), gallery, data.ids[rows], labels[rows])
        return gallery

    def identity_folds(self, test: CompetitionData, console: Console | None = None, batch_size: int | None = None,
                       workers: int | None = None) -> dict[int, TopK]:
        """Each fold's top-k identities of every row of ``test``: its neighbours among the fold's recorded gallery
        (``fold<K>/gallery.npy``, written by the predict stage), blended with its head's cosines."""
        tops = {}
        for fold in sorted(self.sources):
            gallery, labels = read_gallery(self.run.fold(fold))
            outputs = self.identity_fold(fold, test.images, np.arange(len(test)), console, batch_size, workers)
            tops[fold] = fold_top_k(gallery, labels, outputs, test.ids, self.classes, self.config.predict.identities)
        return tops

    def predict_identities(self, test: CompetitionData, console: Console | None = None,
                           batch_size: int | None = None, workers: int | None = None) -> TopK:
        """The test's top-k identities: the folds' blended with equal weights."""
        tops = list(self.identity_folds(test, console, batch_size, workers).values())
        return blend_top_k(tops, None, self.config.predict.identities.top_k)

    def fold_test_predictions(self, fold: int, test_ids: np.ndarray) -> np.ndarray:
        """Fold ``fold``'s test predictions as the run wrote them (``fold<k>/test.csv``) for ``test_ids``, in that
        order; an id the file lacks is an error naming it."""
        path = self.run.fold(fold).test_path
        if not path.is_file():
            raise KagglecvError(f"{self.run.path}: fold {fold} has no test predictions ({path}); run `kagglecv "
                                f"predict {self.run.path}` first")
        frame = read_predictions(path, self.classes).drop_duplicates("id")
        return aligned(frame, test_ids, self.classes, path, Path("the test table (was the fold predicted on another?)"),
                       exact=False)


def held_out_view_logits(recipe: RunRecipe, images, fold_of: np.ndarray, views: list[str],
                         console: Console | None = None, features: FeatureTable | None = None
                         ) -> dict[str, np.ndarray]:
    """Every view's logits of every training row, each by the fold model that held it out (``fold_of``)."""
    outputs = num_outputs(recipe.task, recipe.classes)
    logits = {name: np.zeros((len(fold_of), outputs)) for name in views}
    for fold in sorted(recipe.sources):
        rows = np.flatnonzero(fold_of == fold)
        for name, values in recipe.view_logits(fold, images, rows, views, features=features).items():
            logits[name][rows] = values
        if console is not None:
            console.line(f"{recipe.run.name} fold {fold}: predicted {len(rows)} held-out rows")
    return logits


def with_loader_settings(config: Config, batch_size: int | None, workers: int | None) -> Config:
    """The run's config with the command's batch size and loader workers, when given (neither changes a result)."""
    train = config.train if workers is None else config.train.model_copy(update={"num_workers": workers})
    predict = config.predict if batch_size is None else config.predict.model_copy(update={"batch_size": batch_size})
    return config.model_copy(update={"train": train, "predict": predict})


@dataclass
class EnsembleRecipe:
    """How an ensemble blended its members' test predictions."""

    run: RunDir
    task: str
    classes: list[str]
    method: str
    weights: object  # runs, or runs x classes, or the stacking model
    power: float
    members: list["Recipe"]

    def predict(self, test: CompetitionData, console: Console, batch_size: int | None = None,
                workers: int | None = None) -> np.ndarray:
        # Members' predictions as the ensemble stage read them: from prediction files, at their precision.
        return self._blend([member.predict(test, console, batch_size, workers) for member in self.members])

    def predict_fold(self, fold: int, images, rows: np.ndarray, console: Console | None = None,
                     batch_size: int | None = None, workers: int | None = None,
                     features: FeatureTable | None = None) -> np.ndarray:
        """The blend of every member's fold ``fold`` (a teacher's fold-k model, leak-free for fold k)."""
        return self._blend([member.predict_fold(fold, images, rows, console, batch_size, workers, features)
                            for member in self.members])

    def fold_test_predictions(self, fold: int, test_ids: np.ndarray) -> np.ndarray:
        return self._blend([member.fold_test_predictions(fold, test_ids) for member in self.members])

    def predict_identities(self, test: CompetitionData, console: Console | None = None,
                           batch_size: int | None = None, workers: int | None = None) -> TopK:
        """An ensemble of identity runs: the members' top-k blended with the recorded weights."""
        tops = [member.predict_identities(test, console, batch_size, workers) for member in self.members]
        return blend_top_k(tops, np.asarray(self.weights, dtype=np.float64), self.run.read_identity_record().top_k)

    def _blend(self, member_predictions: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack([as_stored(prediction) for prediction in member_predictions])
        return as_predictions(apply_blend(self.method, self.weights, stacked, self.task, self.power), self.task)


@dataclass
class StackRecipe:
    """How a stack made its test predictions: its members' predictions and the test table's features through each
    fold's level-two model, averaged over the folds (``kagglecv.second.stacking``)."""

    run: RunDir
    task: str
    classes: list[str]
    record: StackRecord
    spec: DesignSpec
    folds: list[FoldModel]
    members: list["Recipe"]
    data: DataConfig   # the members' table layout (id column, reader): how a test table's features are read

    def predict(self, test: CompetitionData, console: Console, batch_size: int | None = None,
                workers: int | None = None) -> np.ndarray:
        features = self.test_features(test)  # a table that lacks a feature fails before any image model runs
        member_predictions = np.stack([as_stored(member.predict(test, console, batch_size, workers))
                                       for member in self.members])
        rows = LevelOne(level_one_columns(member_predictions, self.classes, self.task), features)
        per_fold = []
        for index, fold in enumerate(self.folds):
            embedded = None if not self.spec.embeddings else np.concatenate(
                [member.embed_fold(index, test, batch_size, workers) for member in self.members], axis=1)
            per_fold.append(fold.predict(self.spec, self.task, replace(rows, embeddings=embedded)))
        return as_predictions(np.mean(per_fold, axis=0), self.task)

    def test_features(self, test: CompetitionData) -> FeatureTable:
        """The test table's features (the table ``test`` was read from), its categories checked against every
        training row's."""
        features = FeaturesConfig(numeric=self.record.numeric, categorical=self.record.categorical)
        table = features_of(test.source, self.data, test.ids, features, self.record.group)
        check_test_categories(table, self.record.levels)
        return table

    def predict_fold(self, fold: int, images, rows: np.ndarray, console: Console | None = None,
                     batch_size: int | None = None, workers: int | None = None,
                     features: FeatureTable | None = None) -> np.ndarray:
        raise KagglecvError(f"{self.run.path}: a stack predicts from a table's features, not images alone; it cannot "
                            "teach (pseudo-labels, distillation): use its members")

    def fold_test_predictions(self, fold: int, test_ids: np.ndarray) -> np.ndarray:
        raise KagglecvError(f"{self.run.path}: a stack's folds make no test predictions of their own; use its members")


Recipe = Union[RunRecipe, EnsembleRecipe, StackRecipe]


def as_stored(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities as a prediction file holds them (``FLOAT_FORMAT``) and the ensemble stage reads them (float32)."""
    return np.char.mod(FLOAT_FORMAT, np.asarray(probabilities, dtype=np.float64)).astype(np.float64).astype(np.float32)


def load_recipe(path: Path) -> Recipe:
    """The recipe of a run or ensemble folder (or bundle); an incomplete one is an error naming what is missing."""
    run = RunDir(path)
    info = run.read_info()
    if info.kind == "ensemble":
        return _ensemble_recipe(run, info)
    if info.kind == "stack":
        return _stack_recipe(run, info)
    return _run_recipe(run, info)


def _run_recipe(run: RunDir, info: RunInfo) -> RunRecipe:
    config = run.read_config()
    n_folds = recorded_fold_count(run, info)
    recorded = run.read_predict_record()
    views = recorded.tta if recorded else ["none"]
    space = (recorded.tta_space if recorded else None) or config.predict.tta_space
    if info.format == "onnx":
        return RunRecipe(run, config, info.task, info.classes, list(views), space, _onnx_folds(run, n_folds), "onnx")
    sources = fold_weights(run, config, n_folds, predicted=recorded is not None)
    return RunRecipe(run, config, info.task, info.classes, list(views), space, sources)


def _onnx_folds(run: RunDir, n_folds: int) -> dict[int, str]:
    """An ONNX bundle's folds (each with its model.onnx) and the weights they were exported from."""
    sources = {}
    for index in range(n_folds):
        fold = run.fold(index)
        if not (fold.path / ONNX_FILE).is_file():
            raise KagglecvError(f"{run.path}: fold {index}'s {ONNX_FILE} is missing; pack the run again")
        sources[index] = fold.read_done().source if fold.is_done() else "raw"
    return sources


def fold_weights(run: RunDir, config: Config, n_folds: int, *, predicted: bool) -> dict[int, str]:
    """Each fold's weights: the source its training selected, or once the predict stage ran (``predicted``) the
    config's ``predict.weights`` when it names one; a fold not done or its weights missing is an error."""
    sources = {}
    for index in range(n_folds):
        fold = run.fold(index)
        if not fold.is_done():
            raise KagglecvError(f"{run.path}: fold {index} of {n_folds} is not trained ({fold.done_path} missing); "
                                "every fold's weights are needed")
        chosen = fold.read_done().source
        source = chosen if not predicted or config.predict.weights == "auto" else config.predict.weights
        if not fold.weights(source).is_file():
            raise KagglecvError(f"{run.path}: fold {index}'s {source} weights are missing ({fold.weights(source)})")
        sources[index] = source
    return sources


def recorded_fold_count(run: RunDir, info: RunInfo) -> int:
    """The number of folds the run was trained with: ``run.json``'s ``n_folds``, or (runs made before it was
    recorded) the fold folders present."""
    if info.n_folds is not None:
        return info.n_folds
    folds = run.fold_dirs()
    if not folds:
        raise KagglecvError(f"{run.path}: no fold<K>/ folders; not a trained run")
    return folds[-1].index + 1


def _member_paths(run: RunDir, info: RunInfo) -> list[Path]:
    """An ensemble's or stack's members: inside a bundle, or beside it (checked against their fingerprints)."""
    if info.bundle_members is not None:
        return [run.path / member for member in info.bundle_members]
    return [resolve_member(run, member).path for member in info.members or []]


def _stack_recipe(run: RunDir, info: RunInfo) -> StackRecipe:
    record = run.read_stack_recipe()
    member_paths = _member_paths(run, info)
    if [path.name for path in member_paths] != record.members:
        raise KagglecvError(f"{run.stack_path}: fitted on members {summarize(record.members, quote=True)}, the stack's "
                            f"run.json names {summarize([path.name for path in member_paths], quote=True)}")
    members = [load_recipe(path) for path in member_paths]
    for path, member in zip(member_paths, members):
        if member.classes != info.classes or member.task != info.task:
            raise KagglecvError(f"{path}: classes or task differ from the stack {run.path}'s")
    names = level_one_names(record.members, info.classes, info.task)
    if names != record.predictions:
        raise KagglecvError(f"{run.stack_path}: its prediction columns ({summarize(record.predictions, quote=True)}) "
                            f"are not its members' ({summarize(names, quote=True)})")
    spec = DesignSpec(record.predictions, record.numeric, record.categorical, record.group is not None,
                      tuple(record.embeddings))
    if record.embeddings and not all(isinstance(member, RunRecipe) for member in members):
        raise KagglecvError(f"{run.stack_path}: a stack on embeddings replays its members' fold models; its members "
                            "must be trained runs")
    folds = [FoldModel(levels, load_fold_blocks(run.fold(index), record, info.task, len(info.classes), spec))
             for index, levels in enumerate(record.fold_levels)]
    return StackRecipe(run, info.task, info.classes, record, spec, folds, members, run.read_config().data)


def _ensemble_recipe(run: RunDir, info: RunInfo) -> EnsembleRecipe:
    recipe = run.read_blend_recipe()
    member_paths = _member_paths(run, info)
    if len(member_paths) < 2:
        raise KagglecvError(f"{run.info_path}: an ensemble of {len(member_paths)} members; expected at least two")
    names = [path.name for path in member_paths]
    method = recipe.method
    if method == "stack":
        if recipe.stack_model is None:
            raise KagglecvError(f"{run.weights_path}: a stacking ensemble made before kagglecv recorded its model; "
                                "re-run `kagglecv ensemble` to replay it")
        weights = stack_model_from_state(info.task, recipe.stack_model, len(member_paths), len(info.classes),
                                         run.weights_path)
    else:
        weights = _member_weights(recipe.weights, names, info.classes, run.weights_path)
    if method == "power" and "power" not in recipe.model_fields_set:
        raise KagglecvError(f"{run.weights_path}: a power blend made before kagglecv recorded its exponent; re-run "
                            "`kagglecv ensemble` to replay it")
    members = [load_recipe(path) for path in member_paths]
    for path, member in zip(member_paths, members):
        if member.classes != info.classes or member.task != info.task:
            raise KagglecvError(f"{path}: classes or task differ from the ensemble {run.path}'s")
    return EnsembleRecipe(run, info.task, info.classes, method, weights, float(recipe.power), members)


def _member_weights(weights: dict, names: list[str], classes: list[str], source: Path) -> np.ndarray:
    if sorted(weights) != sorted(names) or len(set(names)) != len(names):
        raise KagglecvError(f"{source}: weights name runs {summarize(sorted(weights), quote=True)}, the ensemble's "
                            f"members are {summarize(names, quote=True)}")
    rows = [weights[name] for name in names]
    if all(isinstance(row, dict) for row in rows):
        return np.array([[row[name] for name in classes] for row in rows], dtype=np.float64)
    return np.array(rows, dtype=np.float64)


def load_fold_blocks(fold: FoldDir, record: StackRecord, task: str, n_classes: int, spec: DesignSpec) -> list:
    """A stack fold's model blocks, each file bounded before it is read and parsed by its own library."""
    blocks = []
    for index, (objective, width) in enumerate(output_blocks(task, n_classes)):
        path = fold.stack_model(index, MODEL_SUFFIX[record.model])
        if not path.is_file():
            raise KagglecvError(f"{path}: missing; the stack's fold {fold.index} has {record.blocks} model files")
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise KagglecvError(f"{path}: {path.stat().st_size} bytes, over the {MAX_MODEL_BYTES} a stack's model file "
                                "may hold; refused")
        text = path.read_text(encoding="utf-8", errors="strict")
        blocks.append(load_block(record.model, text, objective, width, len(spec.names()), path))
    if len(blocks) != record.blocks:
        raise KagglecvError(f"{fold.path}: {record.blocks} model files recorded, the task needs {len(blocks)}")
    return blocks


def image_part(recipe: Recipe) -> Recipe:
    """What of ``recipe`` runs models on images: a stack's members, averaged (its level-two models take
    milliseconds and need the test table's features); any other recipe whole."""
    if not isinstance(recipe, StackRecipe):
        return recipe
    members = [image_part(member) for member in recipe.members]
    if len(members) == 1:
        return members[0]
    return EnsembleRecipe(recipe.run, recipe.task, recipe.classes, "mean", np.full(len(members), 1 / len(members)),
                          2.0, members)


def leaf_runs(recipe: Recipe) -> list[RunRecipe]:
    """The trained runs a recipe predicts with (an ensemble's members, recursively)."""
    if isinstance(recipe, RunRecipe):
        return [recipe]
    return [leaf for member in recipe.members for leaf in leaf_runs(member)]


def read_new_test(recipe: Recipe, table: Path | None, images: Path | None) -> CompetitionData:
    """The hidden test table as the run's config describes its tables (id column, image column, pixels), with its
    images under ``images``; every problem at once (missing images listed), as for the training table."""
    config = leaf_runs(recipe)[0].config
    data = config.data.model_copy(update={"test_csv": None if table is None else Path(table), "test_image_dir": images,
                                          "image_dir": None})
    test = load_test(data, recipe.classes, recipe.task)
    if test.images is None:
        raise DataError(f"{table}: its rows name image files; give their folder with --images")
    if any(leaf.config.model.features_head is not None for leaf in leaf_runs(recipe)):
        test = with_features(test, data)
    return test
