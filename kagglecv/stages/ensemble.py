"""The ensemble stage: blend runs that share folds, and report the score the blend will really get.

A blend whose weights are fit on the OOF predictions scores optimistically on those same predictions. So
``make_ensemble`` reports three numbers: the best single run, the in-sample blend (weights fit and scored on all
OOF rows) and the nested blend (for each fold, weights fit on the other folds' rows and applied to this fold's),
which is the honest estimate. The ensemble's ``oof.csv`` holds the nested predictions, so an ensemble of
ensembles is fit honestly too; its ``test.csv`` applies the weights fit on all OOF rows.

Methods (``blend(method, ...)``): mean, weighted, rank, geometric, power, logit, hill (Caruana et al.,
"Ensemble Selection from Libraries of Models", ICML 2004: greedy forward selection with replacement, optional
initial top-n, cut at the best round), optimize (simplex weights by scipy on a smooth surrogate or the metric),
and stack (a logistic-regression meta-model, fit out-of-fold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, logit, softmax
from scipy.stats import rankdata

from kagglecv.core.config import dump_config, validate_config
from kagglecv.data.table import CompetitionData
from kagglecv.core.errors import KagglecvError, summarize
from kagglecv.core.files import atomic_folder, check_output_name, contained_output, output_lock, write_json, write_text
from kagglecv.core.metrics import get_metric, resolve_metric, score
from kagglecv.core.predictions import compare_ids, prediction_frame, read_predictions, write_predictions
from kagglecv.core.runs import ENSEMBLE_PREFIX, RunDir, member_reference
from kagglecv.stages.score import score_predictions_frame

METHODS = ("mean", "weighted", "rank", "geometric", "power", "logit", "hill", "optimize", "stack")
EPS = 1e-7


@dataclass
class Members:
    """The runs being blended, aligned by id to the first run's order."""

    paths: list[Path]
    data: CompetitionData
    classes: list[str]
    task: str
    folds: np.ndarray
    oof: np.ndarray            # runs x rows x classes (float32)
    test: np.ndarray | None    # runs x test rows x classes
    test_ids: np.ndarray | None
    config: dict               # the first run's resolved config
    folds_sha256: str


@dataclass
class EnsembleResult:
    name: str
    method: str
    metric: str
    weights: dict[str, float]
    best_single: tuple[str, float]
    in_sample: float
    nested: float
    nested_per_fold: dict[int, float]
    correlation: pd.DataFrame
    marginal_gain: dict[str, float]
    path: Path
    details: dict = field(default_factory=dict)


def load_members(paths: list[Path]) -> Members:
    """Read and align the runs; different folds, classes or ids are an error naming the run and the first mismatch."""
    if len(paths) < 2:
        raise KagglecvError("an ensemble needs at least two runs")
    resolved = [Path(path).resolve() for path in paths]
    repeated = sorted({str(path) for path, real in zip(paths, resolved) if resolved.count(real) > 1})
    if repeated:
        raise KagglecvError(f"{summarize(repeated, quote=True)}: named more than once; an ensemble blends different runs")
    runs = [RunDir(path) for path in paths]
    first, info = runs[0], runs[0].read_info()
    config = first.read_config()
    data = first.load_targets(config, info)
    classes = info["classes"]
    reference = read_predictions(first.oof_source().oof_path, classes, oof=True)
    ids = reference["id"].to_numpy()
    folds = reference["fold"].to_numpy()
    _check_same_ids(ids, data.ids, first.oof_path, data.source)
    position = {image_id: row for row, image_id in enumerate(ids)}
    oof, test, test_ids = [], [], None
    for run in runs:
        _check_compatible(run, info if run is first else run.read_info(), first, info)
        # A full refit is weighed by its CV run's OOF (the run its epochs and weights were chosen on).
        oof_path = run.oof_source().oof_path
        frame = read_predictions(oof_path, classes, oof=True)
        _check_same_ids(frame["id"].to_numpy(), ids, oof_path, first.oof_path)
        rows = np.array([position[image_id] for image_id in frame["id"]])
        if not np.array_equal(folds[rows], frame["fold"].to_numpy()):
            bad = frame["id"].to_numpy()[folds[rows] != frame["fold"].to_numpy()][0]
            raise KagglecvError(f"{oof_path}: id {bad!r} is in another fold than in {first.oof_path}")
        aligned = np.empty((len(ids), len(classes)), dtype=np.float32)
        aligned[rows] = frame[classes].to_numpy(np.float32)
        oof.append(aligned)
        test_matrix, test_ids = _read_test(run, classes, test_ids, first)
        test.append(test_matrix)
    has_test = all(matrix is not None for matrix in test)
    data_rows = pd.Series(np.arange(len(data)), index=data.ids).loc[ids].to_numpy()
    aligned_data = CompetitionData(data.ids[data_rows], None, data.task, data.classes, data.targets[data_rows],
                                   None, data.source)
    return Members([run.path for run in runs], aligned_data, classes, data.task, folds, np.stack(oof),
                   np.stack(test) if has_test else None, test_ids if has_test else None,
                   config.model_dump(mode="json"), info.get("folds_sha256", ""))


def _check_compatible(run: RunDir, info: dict, first: RunDir, first_info: dict) -> None:
    """Same class order and same folds file as the first run."""
    classes, theirs = first_info["classes"], info["classes"]
    if theirs != classes:
        mismatch = next((i for i, (a, b) in enumerate(zip(theirs, classes)) if a != b), min(len(classes), len(theirs)))
        raise KagglecvError(f"{run.path}: class order differs from {first.path} at position {mismatch}: "
                            f"{theirs[mismatch] if mismatch < len(theirs) else '(none)'!r} vs "
                            f"{classes[mismatch] if mismatch < len(classes) else '(none)'!r}")
    if info.get("folds_sha256") != first_info.get("folds_sha256"):
        raise KagglecvError(f"{run.path}: made with other folds ({info.get('folds_file')}) than {first.path} "
                            f"({first_info.get('folds_file')}); OOF blending needs the same folds file")


def _read_test(run: RunDir, classes, test_ids, first: RunDir):
    if not run.test_path.is_file():
        return None, test_ids
    frame = read_predictions(run.test_path, classes)
    if test_ids is None:
        return frame[classes].to_numpy(np.float32), frame["id"].to_numpy()
    _check_same_ids(frame["id"].to_numpy(), test_ids, run.test_path, first.test_path)
    return frame.set_index("id").loc[list(test_ids), classes].to_numpy(np.float32), test_ids


def _check_same_ids(ids: np.ndarray, reference: np.ndarray, path: Path, reference_path: Path) -> None:
    differences = compare_ids(ids, reference)
    if not differences:
        return
    first = (differences.missing or differences.extra or differences.doubled)[0]
    raise KagglecvError(f"{path}: ids differ from {reference_path}: first mismatching id {first!r} "
                        f"({len(differences.missing)} missing: {summarize(differences.missing, 3, quote=True)}; "
                        f"{len(differences.extra)} extra: {summarize(differences.extra, 3, quote=True)}; "
                        f"{len(differences.doubled)} doubled: {summarize(differences.doubled, 3, quote=True)})")


# ----- blending ---------------------------------------------------------------------------------------------------
def normalize_rows(blend: np.ndarray, task: str) -> np.ndarray:
    if task == "multiclass":
        return blend / np.maximum(blend.sum(axis=-1, keepdims=True), EPS)
    return blend


def combine(predictions: np.ndarray, weights: np.ndarray, method: str, task: str, power: float = 2.0) -> np.ndarray:
    """Blend ``runs x rows x classes`` probabilities with non-negative weights summing to 1."""
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights.reshape(-1, *([1] * (predictions.ndim - 1))) if weights.ndim == 1 else weights[:, None, :]
    if method == "rank":
        ranks = np.stack([rankdata(run, axis=0) / len(run) for run in predictions])
        return (weights * ranks).sum(axis=0)
    clipped = np.clip(predictions.astype(np.float64), EPS, 1 - EPS)
    if method == "geometric":
        return normalize_rows(np.exp((weights * np.log(clipped)).sum(axis=0)), task)
    if method == "power":
        return normalize_rows((weights * clipped**power).sum(axis=0) ** (1.0 / power), task)
    if method == "logit":
        if task == "multiclass":
            return softmax((weights * np.log(clipped)).sum(axis=0), axis=-1)
        return expit((weights * logit(clipped)).sum(axis=0))
    return (weights * predictions).sum(axis=0)


def apply_blend(method: str, weights, predictions: np.ndarray, task: str, power: float = 2.0) -> np.ndarray:
    """The blend of ``runs x rows x classes`` probabilities with fitted ``weights`` (or the stacking model)."""
    if method == "stack":
        return weights.predict(predictions)
    base = "mean" if method in ("hill", "optimize", "weighted") else method
    return combine(predictions, weights, base, task, power)


class Blender:
    """Fits blend weights on some OOF rows and applies them; ``fit`` returns the weights (runs, or runs x classes)."""

    def __init__(self, method: str, task: str, metric: str, *, user_weights=None, power: float = 2.0,
                 init_top: int = 1, max_rounds: int = 100, per_class: bool = False, seed: int = 0):
        if per_class and task != "multilabel":
            raise KagglecvError("--per-class applies to multi-label tasks only")
        self.method, self.task, self.metric = method, task, metric
        self.user_weights, self.power, self.init_top, self.max_rounds = user_weights, power, init_top, max_rounds
        self.per_class, self.seed = per_class, seed
        self.direction = 1.0 if get_metric(metric, task).higher_is_better else -1.0

    def fit(self, predictions: np.ndarray, targets: np.ndarray):
        n_runs = len(predictions)
        if self.method == "weighted":
            weights = np.asarray(self.user_weights, dtype=np.float64)
            if weights.shape != (n_runs,) or (weights < 0).any() or weights.sum() <= 0:
                raise KagglecvError(f"--weights: expected {n_runs} non-negative numbers, got {self.user_weights}")
            return weights / weights.sum()
        if self.method in ("hill", "optimize"):
            if self.per_class:
                return np.stack([self._fit_one(predictions[:, :, [c]], targets[:, [c]]) for c in range(predictions.shape[2])], axis=1)
            return self._fit_one(predictions, targets)
        if self.method == "stack":
            return _StackModel(self.task, self.seed).fit(predictions, targets)
        return np.full(n_runs, 1.0 / n_runs)

    def apply(self, weights, predictions: np.ndarray) -> np.ndarray:
        return apply_blend(self.method, weights, predictions, self.task, self.power)

    def _score(self, targets, blend) -> float:
        try:
            return self.direction * score(self.metric, self.task, targets, blend)
        except ValueError:
            return -np.inf

    def _fit_one(self, predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
        if self.method == "hill":
            return hill_climb(predictions, targets, lambda blend: self._score(targets, blend), self.init_top, self.max_rounds)
        return optimize_weights(predictions, targets, self.task, lambda blend: self._score(targets, blend))


def hill_climb(predictions: np.ndarray, targets: np.ndarray, objective: Callable[[np.ndarray], float],
               init_top: int = 1, max_rounds: int = 100) -> np.ndarray:
    """Caruana's ensemble selection: start from the ``init_top`` best runs, repeatedly add (with replacement) the
    run that most improves ``objective`` (higher is better), stop after ``max_rounds``, and keep the best round.

    The weights are selection counts over their sum, so they are non-negative and sum to 1, and the blend never
    scores below the best single run on the rows it was fit on.
    """
    n_runs = len(predictions)
    singles = np.array([objective(run) for run in predictions])
    order = np.argsort(-singles, kind="stable")
    counts = np.zeros(n_runs, dtype=np.int64)
    counts[order[: max(1, min(init_top, n_runs))]] = 1
    total = predictions[counts > 0].astype(np.float64).sum(axis=0)
    best_counts, best_score = counts.copy(), objective(total / counts.sum())
    if singles[order[0]] > best_score:  # the top-n start can score below its best member: keep that one instead
        best_counts, best_score = np.eye(n_runs, dtype=np.int64)[order[0]], singles[order[0]]
    for _ in range(max_rounds):
        size = counts.sum() + 1
        trial_scores = [objective((total + run) / size) for run in predictions]
        pick = int(np.argmax(trial_scores))
        counts[pick] += 1
        total += predictions[pick]
        if trial_scores[pick] > best_score:
            best_score, best_counts = trial_scores[pick], counts.copy()
    return best_counts / best_counts.sum()


def optimize_weights(predictions: np.ndarray, targets: np.ndarray, task: str,
                     objective: Callable[[np.ndarray], float]) -> np.ndarray:
    """Simplex weights (a softmax of free parameters) minimizing a smooth surrogate with L-BFGS: log loss for
    multiclass, binary cross-entropy for multi-label and binary; the metric then decides against equal weights."""
    n_runs = len(predictions)
    data = predictions.astype(np.float64)
    known = targets != -1

    def surrogate(params):
        weights = softmax(params)
        blend = np.clip(np.tensordot(weights, data, axes=1), EPS, 1 - EPS)
        if task == "multiclass":
            return -np.mean(np.log(blend[np.arange(len(targets)), targets]))
        truth = (targets == 1).astype(np.float64)
        return -np.sum(known * (truth * np.log(blend) + (1 - truth) * np.log(1 - blend))) / max(known.sum(), 1)

    result = minimize(surrogate, np.zeros(n_runs), method="L-BFGS-B")
    fitted, equal = softmax(result.x), np.full(n_runs, 1.0 / n_runs)
    return fitted if objective(np.tensordot(fitted, data, axes=1)) >= objective(np.tensordot(equal, data, axes=1)) else equal


class _StackModel:
    """Logistic regression on the runs' probabilities (as logits): multinomial for multiclass, one per class for
    multi-label and binary."""

    def __init__(self, task: str, seed: int):
        self.task, self.seed, self.models = task, seed, []

    @staticmethod
    def _features(predictions: np.ndarray, column: int | None = None) -> np.ndarray:
        clipped = np.clip(predictions.astype(np.float64), EPS, 1 - EPS)
        if column is not None:
            return logit(clipped[:, :, column]).T
        return np.log(clipped).transpose(1, 0, 2).reshape(clipped.shape[1], -1)

    def fit(self, predictions: np.ndarray, targets: np.ndarray) -> "_StackModel":
        from sklearn.linear_model import LogisticRegression

        if self.task == "multiclass":
            model = LogisticRegression(C=1.0, max_iter=1000)
            model.fit(self._features(predictions), targets)
            self.models = [model]
            return self
        self.models = []
        for column in range(predictions.shape[2]):
            truth = targets[:, column] if targets.ndim == 2 else (targets == column).astype(int)
            known = truth != -1
            if len(np.unique(truth[known])) < 2:
                self.models.append(float(np.mean(truth[known] == 1)) if known.any() else 0.0)
                continue
            model = LogisticRegression(C=1.0, max_iter=1000)
            model.fit(self._features(predictions, column)[known], truth[known] == 1)
            self.models.append(model)
        return self

    def predict(self, predictions: np.ndarray) -> np.ndarray:
        if self.task == "multiclass":
            model = self.models[0]
            out = np.zeros((predictions.shape[1], predictions.shape[2]))
            out[:, model.classes_] = model.predict_proba(self._features(predictions))
            return out
        columns = []
        for column, model in enumerate(self.models):
            if isinstance(model, float):
                columns.append(np.full(predictions.shape[1], model))
            else:
                columns.append(model.predict_proba(self._features(predictions, column))[:, 1])
        return np.stack(columns, axis=1)

    def state(self) -> list:
        """The fitted models as JSON: per model its coefficients, intercepts and classes (a constant as a number)."""
        return [model if isinstance(model, float) else
                {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(), "classes": model.classes_.tolist()}
                for model in self.models]


def stack_model_from_state(task: str, state: list, n_members: int, n_classes: int, source: Path) -> _StackModel:
    """The stacking model recorded by :meth:`_StackModel.state`, predicting exactly as the fitted one did; a recipe
    whose entries do not fit ``n_members`` runs of ``n_classes`` classes is an error naming ``source``."""
    from sklearn.linear_model import LogisticRegression

    entries = 1 if task == "multiclass" else n_classes
    if not isinstance(state, list) or len(state) != entries:
        raise KagglecvError(f"{source}: stack_model: expected {entries} entries for {task}, got "
                            f"{len(state) if isinstance(state, list) else type(state).__name__}")
    stack = _StackModel(task, seed=0)
    features = n_members * n_classes if task == "multiclass" else n_members
    for index, entry in enumerate(state):
        if isinstance(entry, (int, float)) and not isinstance(entry, bool) and 0 <= entry <= 1:
            stack.models.append(float(entry))
            continue
        try:
            coef, intercept = np.asarray(entry["coef"], dtype=np.float64), np.asarray(entry["intercept"], np.float64)
            labels = np.asarray(entry["classes"])
        except (TypeError, KeyError, ValueError):
            raise KagglecvError(f"{source}: stack_model[{index}]: expected a rate in [0, 1] or {{coef, intercept, "
                                "classes}} of numbers") from None
        rows = 1 if len(labels) <= 2 else len(labels)
        if coef.shape != (rows, features) or intercept.shape != (rows,) or not np.isfinite(coef).all() \
                or not np.isfinite(intercept).all() or len(labels) < 2 or labels.dtype.kind not in "iub":
            raise KagglecvError(f"{source}: stack_model[{index}]: coef {coef.shape} / intercept {intercept.shape} do "
                                f"not fit {n_members} runs of {n_classes} classes (expected ({rows}, {features}))")
        model = LogisticRegression()
        model.coef_, model.intercept_, model.classes_ = coef, intercept, labels
        stack.models.append(model)
    return stack


def _stack_targets(members: Members) -> np.ndarray:
    if members.task == "binary":
        return np.stack([members.data.targets == 0, members.data.targets == 1], axis=1).astype(int)
    return members.data.targets


# ----- the stage ----------------------------------------------------------------------------------------------------
def make_ensemble(paths: list[Path], method: str = "hill", name: str | None = None, runs_dir: Path | None = None,
                  metric: str | None = None, **options) -> EnsembleResult:
    """Blend ``paths``; write ``<runs_dir>/ens-<name>/`` (oof.csv, test.csv, weights.json, score.json, run.json).

    The folder is built under a temporary name and renamed into place, replacing an earlier ensemble of that name
    (never a training run, never one of the members), so it is complete or absent, even when the job is killed.
    """
    if method not in METHODS:
        raise KagglecvError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    _check_options(options)
    name = check_output_name(name or f"{method}-{len(paths)}", "--name")
    runs_dir = Path(runs_dir or Path(paths[0]).parent)
    out = contained_output(runs_dir, ENSEMBLE_PREFIX + name, "--name", inputs=list(paths))
    if RunDir(out).info_path.is_file() and not RunDir(out).is_ensemble():
        raise KagglecvError(f"--name {name!r}: {out} is a training run, not an ensemble; refused to replace it")
    members = load_members(paths)
    definition = resolve_metric(metric or members.config.get("metric"), members.task, "--metric")
    with output_lock(runs_dir / f".{out.name}.lock", str(out)):
        return _blend_and_write(members, method, definition.name, out, options)


def _check_options(options: dict) -> None:
    power = options.get("power", 2.0)
    if not (np.isfinite(power) and power > 0):
        raise KagglecvError(f"--power: expected a positive finite number, got {power}")
    if options.get("init_top", 1) < 1 or options.get("max_rounds", 100) < 0:
        raise KagglecvError(f"--init-top must be >= 1 and --rounds >= 0, got {options.get('init_top')} and "
                            f"{options.get('max_rounds')}")


def parse_weights(text: str | None) -> list[float] | None:
    """``--weights 0.3,0.7``: non-negative finite numbers, or an error naming the bad item."""
    if text is None:
        return None
    weights = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise KagglecvError(f"--weights {text!r}: {item.strip()!r} is not a number") from None
        if not np.isfinite(value) or value < 0:
            raise KagglecvError(f"--weights {text!r}: expected non-negative finite numbers, got {item.strip()!r}")
        weights.append(value)
    return weights


def _blend_and_write(members: Members, method: str, metric: str, out: Path, options: dict) -> EnsembleResult:
    targets = _stack_targets(members) if method == "stack" and members.task == "binary" else members.data.targets
    blender = Blender(method, members.task, metric, **options)
    run_names = [path.name for path in members.paths]

    def metric_of(blend):
        return score(metric, members.task, members.data.targets, blend)

    singles = {name_: metric_of(run) for name_, run in zip(run_names, members.oof)}
    direction = 1 if get_metric(metric, members.task).higher_is_better else -1
    best_single = max(singles.items(), key=lambda item: direction * item[1])
    final_weights = blender.fit(members.oof, targets)
    in_sample = metric_of(blender.apply(final_weights, members.oof))
    nested_oof = np.clip(nested_blend(blender, members, targets), 0, 1)
    nested_frame = prediction_frame(members.data.ids, nested_oof, members.classes, folds=members.folds)
    nested = score_predictions_frame(nested_frame, members.data, metric, source=out)
    result = EnsembleResult(name=out.name, method=method, metric=metric,
                            weights=_weights_report(final_weights, run_names, members.classes),
                            best_single=best_single, in_sample=in_sample, nested=nested.overall,
                            nested_per_fold=nested.per_fold, correlation=oof_correlation(members.oof, run_names),
                            marginal_gain=marginal_gains(members, blender, targets, metric_of, in_sample), path=out)
    with atomic_folder(out, replace=True) as building:
        run = RunDir(building)
        write_predictions(run.oof_path, members.data.ids, nested_oof, members.classes, folds=members.folds)
        if members.test is not None:
            write_predictions(run.test_path, members.test_ids,
                              np.clip(blender.apply(final_weights, members.test), 0, 1), members.classes)
        write_json(run.score_path, nested.to_dict())
        _write_blend_report(run, result, singles, final_weights, blender.power)
        _write_run_files(run, members, name=out.name, method=method, out_path=out)
    return result


def nested_blend(blender: Blender, members: Members, targets: np.ndarray) -> np.ndarray:
    """OOF predictions of the blend in which fold k's rows are blended with weights fit without fold k."""
    nested = np.zeros(members.oof.shape[1:], dtype=np.float64)
    for fold in np.unique(members.folds):
        held = members.folds == fold
        weights = blender.fit(members.oof[:, ~held], targets[~held])
        nested[held] = blender.apply(weights, members.oof[:, held])
    return nested


def oof_correlation(oof: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Pearson correlation of the runs' OOF probabilities (all rows and classes flattened)."""
    flat = oof.reshape(len(oof), -1).astype(np.float64)
    return pd.DataFrame(np.corrcoef(flat), index=names, columns=names)


def marginal_gains(members: Members, blender: Blender, targets, metric_of, full_score: float) -> dict[str, float]:
    """For each run: the in-sample blend score minus the score of the same method fit without that run."""
    gains = {}
    if len(members.oof) < 3:
        singles = [metric_of(run) for run in members.oof]
        return {path.name: full_score - singles[1 - index] for index, path in enumerate(members.paths)}
    for index, path in enumerate(members.paths):
        keep = [i for i in range(len(members.oof)) if i != index]
        subset = members.oof[keep]
        if blender.method == "weighted":
            weights = np.asarray(blender.user_weights, dtype=float)[keep]
            blended = combine(subset, weights / weights.sum(), "mean", members.task)
        else:
            blended = blender.apply(blender.fit(subset, targets), subset)
        gains[path.name] = full_score - metric_of(blended)
    return gains


def _weights_report(weights, run_names: list[str], classes: list[str]):
    if isinstance(weights, _StackModel):
        return {"stack": "logistic regression on the runs' log-probabilities (multiclass) or logits (per class)"}
    weights = np.asarray(weights)
    if weights.ndim == 2:
        return {run: dict(zip(classes, map(float, weights[i]))) for i, run in enumerate(run_names)}
    return dict(zip(run_names, map(float, weights)))


def _write_run_files(run: RunDir, members: Members, name: str, method: str, out_path: Path) -> None:
    """config.yaml and run.json, so score, report, submit and further ensembles treat the folder as a run."""
    config = dict(members.config, experiment=name,
                  notes=f"{method} ensemble of " + ", ".join(p.name for p in members.paths))
    write_text(run.config_path, dump_config(validate_config(config)))
    write_json(run.info_path, {
        "experiment": name, "kind": "ensemble",
        "members": [member_reference(p, out_path) for p in members.paths],
        "task": members.task, "classes": members.classes, "folds_sha256": members.folds_sha256,
        "folds_file": config.get("folds", {}).get("file"), "backbone": f"{method} of {len(members.paths)}",
        "created": pd.Timestamp.now().isoformat(timespec="microseconds"),
    })


def _write_blend_report(run: RunDir, result: EnsembleResult, singles: dict, fitted, power: float) -> None:
    """weights.json (the recipe ``infer`` replays: method, weights, exponent, stacking model) and blend_score.json."""
    recipe = {"method": result.method, "metric": result.metric, "weights": result.weights, "power": power}
    if isinstance(fitted, _StackModel):
        recipe["stack_model"] = fitted.state()
    write_json(run.weights_path, recipe)
    write_json(run.blend_score_path, {
        "metric": result.metric, "best_single": {"run": result.best_single[0], "score": result.best_single[1]},
        "single_scores": singles, "in_sample": result.in_sample, "nested": result.nested,
        "nested_per_fold": result.nested_per_fold, "marginal_gain": result.marginal_gain,
        "correlation": result.correlation.round(6).to_dict(),
    })
