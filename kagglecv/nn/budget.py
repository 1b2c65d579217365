"""What a recipe costs to run and the part of it that fits a code competition's time limit (``pack --fit``).

``measure_timing`` times a whole recipe on synthetic images; ``fit_to_budget`` times each (run, TTA view) unit of a
run or ensemble the same way, predicts every training row with every view by the fold model that held it out (as
the predict stage does), and keeps the units that score best on those OOF predictions within the budget
(``kagglecv.core.budget_selection``). The result is an exact recipe (a run with fewer views, or a weighted mean of runs), its
OOF score and its predicted time. Reading recipes needs no torch; predicting loads it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from kagglecv.core.blending import apply_blend, as_predictions
from kagglecv.core.budget_selection import Selection, UnitCosts, select_within_budget
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError, summarize
from kagglecv.core.predictions import combine_views, read_predictions
from kagglecv.data.inputs import competition_metric, load_run_table
from kagglecv.data.load import answer_columns
from kagglecv.data.pixels import PixelImages
from kagglecv.data.table import CompetitionData, FeatureTable
from kagglecv.nn.recipe import (
    EnsembleRecipe,
    Recipe,
    RunRecipe,
    as_stored,
    held_out_view_logits,
    image_part,
    leaf_runs,
    read_new_test,
)

FIT_METHOD = "weighted"  # the fitted blend: each run's votes over all votes, a mean of probabilities


@dataclass
class Timing:
    """Measured on synthetic images: ``fixed`` seconds (models loaded) plus ``per_image`` seconds per image."""

    images: int
    fixed: float
    per_image: float

    def seconds_for(self, images: int) -> float:
        return self.fixed + self.per_image * images


def measure_timing(recipe: Recipe, images: int, scratch: Path) -> Timing:
    """Inference time of the whole recipe (every fold, view and member) on synthetic JPEGs at the model's size, at
    two test sizes, so the model loading (fixed) and the per-image cost are told apart. A run whose images come
    from a reader (arrays, DICOM, HDF5, ...) is timed on arrays in memory of its input's shape: its reader's own
    decoding is not counted."""
    leaf = leaf_runs(recipe)[0]
    recipe = image_part(recipe)
    size = leaf.config.model.img_size
    small = max(1, images // 4)
    rng = np.random.default_rng(0)
    seconds = {}
    if leaf.config.data.reader is not None:
        channels = leaf.config.model.in_chans
        for count in (small, images):
            pixels = PixelImages(rng.normal(0, 1, (count, size, size, channels)).astype(np.float32), Path(scratch))
            ids = np.array([f"t{index}" for index in range(count)], dtype=object)
            test = CompetitionData(ids, pixels, recipe.task, list(recipe.classes), None,
                                   features=_missing_features(leaf.config, ids, Path(scratch)))
            started = time.perf_counter()
            recipe.predict(test, Console(quiet=True))
            seconds[count] = time.perf_counter() - started
        return _timing(images, small, seconds)
    with tempfile.TemporaryDirectory(prefix=".timing-", dir=scratch) as folder:
        for index in range(images):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(Path(folder) / f"t{index}.jpg")
        id_col, image_col = leaf.config.data.id_col, leaf.config.data.image_col
        separate = image_col is not None and image_col != id_col  # image_col: id means ids are the file names
        answers = answer_columns(leaf.config.data.answer_id)  # one answer per synthetic image
        features = _missing_features(leaf.config, np.zeros(0, dtype=object), Path(folder))
        columns = [] if features is None else [*features.numeric_names, *features.categorical_names]
        header = ",".join([id_col + (f",{image_col}" if separate else ""), *answers, *columns])
        for count in (small, images):
            table = Path(folder) / f"test{count}.csv"
            rows = [",".join([f"t{index}" + (f",t{index}.jpg" if separate else ".jpg" if image_col else ""),
                              *[f"t{index}"] * len(answers), *[""] * len(columns)]) for index in range(count)]
            table.write_text("\n".join([header, *rows]) + "\n")
            test = read_new_test(recipe, table, Path(folder))
            started = time.perf_counter()
            recipe.predict(test, Console(quiet=True))
            seconds[count] = time.perf_counter() - started
    return _timing(images, small, seconds)


def _missing_features(config, ids: np.ndarray, source: Path) -> FeatureTable | None:
    """For a fusion model, its features all missing (imputed as the fold's training means): the timing's rows."""
    if config.model.features_head is None:
        return None
    numeric, categorical = config.data.features.numeric, config.data.features.categorical
    return FeatureTable(ids, list(numeric), np.full((len(ids), len(numeric)), np.nan), list(categorical),
                        np.full((len(ids), len(categorical)), None, dtype=object), None, source)


def _timing(images: int, small: int, seconds: dict[int, float]) -> Timing:
    slope = (seconds[images] - seconds[small]) / (images - small) if images > small else 0.0
    per_image = slope if slope > 0 else seconds[images] / images  # too few images to tell: the cautious estimate
    return Timing(images, max(seconds[small] - per_image * small, 0.0), per_image)


@dataclass(frozen=True)
class Budget:
    """``images`` hidden test images in ``minutes`` on a device ``device_speed`` times as fast as this machine."""

    images: int
    minutes: float
    device_speed: float

    @property
    def local_seconds(self) -> float:
        return self.minutes * 60 * self.device_speed


@dataclass
class FitResult:
    recipe: Recipe
    metric: str
    oof_score: float
    full_score: float
    oof: np.ndarray
    targets: np.ndarray
    modelled_minutes: float  # on the target device, from the units' costs
    record: dict


@dataclass
class _OofViews:
    """The OOF logits of every candidate view of every run, on one training table's rows."""

    leaves: list[RunRecipe]
    logits: list[dict[str, np.ndarray]]
    targets: np.ndarray
    task: str
    table: CompetitionData  # the first run's training table, which a metric file scores through

    def run_probabilities(self, run: int, views: tuple[str, ...]) -> np.ndarray:
        leaf = self.leaves[run]
        return combine_views([self.logits[run][view] for view in views], self.task, leaf.space)

    def blend(self, selection: Selection) -> np.ndarray:
        """The fitted recipe's OOF probabilities, made as its replay makes them."""
        used = selection.used()
        if len(used) == 1:
            return self.run_probabilities(used[0], selection.views[used[0]])
        stacked = np.stack([as_stored(self.run_probabilities(run, selection.views[run])) for run in used])
        weights = np.array([selection.votes[run] for run in used], dtype=np.float64)
        return as_predictions(apply_blend(FIT_METHOD, weights / weights.sum(), stacked, self.task), self.task)

    def full(self, recipe: Recipe) -> np.ndarray:
        """The recipe as it was (every member and view), on the same rows."""
        if isinstance(recipe, RunRecipe):
            run = next(index for index, leaf in enumerate(self.leaves) if leaf is recipe)
            return self.run_probabilities(run, tuple(recipe.views))
        return recipe._blend([self.full(member) for member in recipe.members])


def fit_to_budget(recipe: Recipe, budget: Budget, timing_images: int, scratch: Path,
                  console: Console | None = None) -> FitResult:
    """The part of ``recipe`` that scores best on OOF within ``budget`` (see the module's docstring)."""
    console = console or Console(quiet=True)
    leaves = leaf_runs(recipe)
    oof = _oof_views(leaves, console)
    metric = competition_metric(leaves[0].config, oof.table, _recipe_metric(recipe), "the recipe's metric")
    costs = _unit_costs(leaves, timing_images, scratch, console)
    selection = select_within_budget([list(leaf.views) for leaf in leaves], costs, budget.images, budget.local_seconds,
                                     lambda chosen: oof.table.score_of(metric, oof.blend(chosen)),
                                     metric.higher_is_better)
    blend = oof.blend(selection)
    fitted_score = oof.table.score_of(metric, blend)
    full_score = oof.table.score_of(metric, oof.full(recipe))
    modelled = costs.seconds(selection, budget.images) / budget.device_speed / 60
    record = _fit_record(leaves, selection, costs, budget, metric.name, fitted_score, full_score, modelled)
    return FitResult(_fitted_recipe(recipe, leaves, selection), metric.name, fitted_score, full_score, blend, oof.targets,
                     modelled, record)


def _recipe_metric(recipe: Recipe) -> str | None:
    if isinstance(recipe, EnsembleRecipe):
        blend = recipe.run.read_blend_recipe()
        if blend.metric:
            return blend.metric
    return leaf_runs(recipe)[0].config.metric


def _oof_views(leaves: list[RunRecipe], console: Console) -> _OofViews:
    """Each run's held-out logits under each of its views, on the first run's training rows."""
    reference = None
    logits = []
    for leaf in leaves:
        if leaf.run.is_full_fit() or not leaf.run.oof_path.is_file():
            raise KagglecvError(f"--fit: {leaf.run.path} has no OOF predictions to choose by (a full refit or an "
                                "unfinished run); fit the CV runs instead")
        data = load_run_table(leaf.run, leaf.config, with_images=True)
        folds = read_predictions(leaf.run.oof_path, oof=True).drop_duplicates("id").set_index("id")["fold"]
        missing = [image_id for image_id in data.ids if image_id not in folds.index]
        if missing:
            raise KagglecvError(f"--fit: {leaf.run.oof_path} has no fold for {len(missing)} training rows "
                                f"({summarize(missing, quote=True)}); run `kagglecv predict {leaf.run.path}` again")
        if reference is not None and set(data.ids) != set(reference.ids):  # before any prediction is made
            raise KagglecvError(f"--fit: {leaf.run.path} was trained on other rows than {leaves[0].run.path}")
        reference = reference or data
        fold_of = folds.loc[list(data.ids)].to_numpy()
        view_logits = held_out_view_logits(leaf, data.images, fold_of, list(leaf.views), console, data.features)
        order = pd.Series(np.arange(len(data)), index=data.ids).loc[list(reference.ids)].to_numpy()
        logits.append({view: values[order] for view, values in view_logits.items()})
    return _OofViews(leaves, logits, reference.targets, reference.task, reference)


def _unit_costs(leaves: list[RunRecipe], timing_images: int, scratch: Path, console: Console) -> UnitCosts:
    """Each run's model loading and each of its views' cost per image, measured here one view at a time."""
    fixed, per_image = [], []
    for leaf in leaves:
        timings = {view: measure_timing(dataclasses.replace(leaf, views=[view]), timing_images, scratch)
                   for view in leaf.views}
        fixed.append(min(timing.fixed for timing in timings.values()))
        per_image.append({view: timing.per_image for view, timing in timings.items()})
        console.line(f"{leaf.run.name}: " + ", ".join(f"{view} {seconds * 1000:.1f} s/1,000 images"
                                                       for view, seconds in per_image[-1].items()))
    return UnitCosts([leaf.run.name for leaf in leaves], fixed, per_image)


def _fitted_recipe(recipe: Recipe, leaves: list[RunRecipe], selection: Selection) -> Recipe:
    """The selection as a recipe ``infer`` replays: one run with its chosen views, or a weighted mean of runs."""
    chosen = [dataclasses.replace(leaves[run], views=list(selection.views[run])) for run in selection.used()]
    if len(chosen) == 1:
        return chosen[0]
    votes = np.array([selection.votes[run] for run in selection.used()], dtype=np.float64)
    return EnsembleRecipe(recipe.run, recipe.task, recipe.classes, FIT_METHOD, votes / votes.sum(), 2.0, chosen)


def _fit_record(leaves, selection: Selection, costs: UnitCosts, budget: Budget, metric: str, fitted: float,
                full: float, modelled: float) -> dict:
    """What ``--fit`` chose and why, for the bundle's manifest."""
    total_votes = sum(selection.votes)
    return {
        "images": budget.images, "max_minutes": budget.minutes, "device_speed": budget.device_speed,
        "metric": metric, "oof_score": fitted, "full_recipe_oof_score": full, "predicted_minutes": modelled,
        "chosen": [{"run": leaves[run].run.name, "views": list(selection.views[run]),
                    "weight": selection.votes[run] / total_votes} for run in selection.used()],
        "units": [{"run": leaf.run.name, "view": view, "seconds_per_image": seconds,
                   "fixed_seconds": costs.fixed[index], "kept": view in selection.views[index]}
                  for index, leaf in enumerate(leaves) for view, seconds in costs.per_image[index].items()],
        "costs": "measured on the packing machine one view at a time (decoding included in each), divided by "
                 "device_speed",
    }
