"""Blending maths on ``runs x rows x classes`` probability arrays: the methods the ensemble stage fits and the
recipes of finished ensembles replay (numpy, scipy and scikit-learn; no files).

Methods (a regression's values: mean, weighted, hill, optimize and stack, a ridge per target): mean, weighted, rank,
geometric, power, logit, hill (Caruana et al., "Ensemble Selection from Libraries of Models", ICML 2004: greedy
forward selection with replacement, optional initial top-n, cut at the best round), optimize (simplex weights by
scipy on a smooth surrogate or the metric), and stack (a logistic-regression meta-model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from scipy.special import expit, logit, softmax

from kagglecv.core.errors import KagglecvError
from kagglecv.core.lazy import imported_on_first_use
from kagglecv.core.metrics import Metric

scipy_optimize = imported_on_first_use("scipy.optimize")
scipy_stats = imported_on_first_use("scipy.stats")
linear_model = imported_on_first_use("sklearn.linear_model")

METHODS = ("mean", "weighted", "rank", "geometric", "power", "logit", "hill", "optimize", "stack")
VALUE_METHODS = ("mean", "weighted", "hill", "optimize", "stack")  # the methods that blend values too
EPS = 1e-7


def normalize_rows(blend: np.ndarray, task: str) -> np.ndarray:
    if task == "multiclass":
        return blend / np.maximum(blend.sum(axis=-1, keepdims=True), EPS)
    return blend


def combine(predictions: np.ndarray, weights: np.ndarray, method: str, task: str, power: float = 2.0) -> np.ndarray:
    """Blend ``runs x rows x classes`` probabilities with non-negative weights summing to 1."""
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights.reshape(-1, *([1] * (predictions.ndim - 1))) if weights.ndim == 1 else weights[:, None, :]
    if method == "rank":
        ranks = np.stack([scipy_stats.rankdata(run, axis=0) / len(run) for run in predictions])
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


def as_predictions(blend: np.ndarray, task: str) -> np.ndarray:
    """A blend as a prediction file holds it: probabilities clipped to [0, 1] (a rank or stacked blend may stray),
    a regression's values as they are."""
    return blend if task == "regression" else np.clip(blend, 0, 1)


def apply_blend(method: str, weights, predictions: np.ndarray, task: str, power: float = 2.0) -> np.ndarray:
    """The blend of ``runs x rows x classes`` probabilities with fitted ``weights`` (or the stacking model)."""
    if method == "stack":
        return weights.predict(predictions)
    base = "mean" if method in ("hill", "optimize", "weighted") else method
    return combine(predictions, weights, base, task, power)


class Blender:
    """Fits blend weights on some OOF rows and applies them; ``fit`` returns the weights (runs, or runs x classes)."""

    def __init__(self, method: str, task: str, metric: Metric, *, user_weights=None, power: float = 2.0,
                 init_top: int = 1, max_rounds: int = 100, per_class: bool = False, seed: int = 0):
        if per_class and task != "multilabel":
            raise KagglecvError("--per-class applies to multi-label tasks only")
        if task == "regression" and method not in VALUE_METHODS:
            raise KagglecvError(f"--method {method}: blends probabilities; a regression run's values blend by "
                                f"{', '.join(VALUE_METHODS)}")
        if task == "heads" and method not in ("mean", "weighted", "hill"):
            raise KagglecvError(f"--method {method}: several heads' probabilities blend by mean, weighted or hill "
                                "(weighted means, each head's block still a distribution)")
        self.method, self.task, self.metric = method, task, metric
        self.user_weights, self.power, self.init_top, self.max_rounds = user_weights, power, init_top, max_rounds
        self.per_class, self.seed = per_class, seed

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
            return StackModel(self.task, self.seed).fit(predictions, targets)
        return np.full(n_runs, 1.0 / n_runs)

    def apply(self, weights, predictions: np.ndarray) -> np.ndarray:
        return apply_blend(self.method, weights, predictions, self.task, self.power)

    def _score(self, targets, blend) -> float:
        value = self.metric.objective_of(targets, blend)
        return value if value == value else -np.inf  # an argmax needs a total order: no score ranks last

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
    multiclass, binary cross-entropy for multi-label and binary, squared error for regression; the metric then
    decides against equal weights."""
    n_runs = len(predictions)
    data = predictions.astype(np.float64)
    known = targets != -1

    def surrogate(params):
        weights = softmax(params)
        if task == "regression":  # values, not probabilities: the squared error
            return np.mean(np.square(np.tensordot(weights, data, axes=1) - targets.reshape(len(targets), -1)))
        blend = np.clip(np.tensordot(weights, data, axes=1), EPS, 1 - EPS)
        if task == "multiclass":
            return -np.mean(np.log(blend[np.arange(len(targets)), targets]))
        truth = (targets == 1).astype(np.float64)
        return -np.sum(known * (truth * np.log(blend) + (1 - truth) * np.log(1 - blend))) / max(known.sum(), 1)

    result = scipy_optimize.minimize(surrogate, np.zeros(n_runs), method="L-BFGS-B")
    fitted, equal = softmax(result.x), np.full(n_runs, 1.0 / n_runs)
    return fitted if objective(np.tensordot(fitted, data, axes=1)) >= objective(np.tensordot(equal, data, axes=1)) else equal


class StackModel:
    """Logistic regression on the runs' probabilities (as logits): multinomial for multiclass, one per class for
    multi-label and binary; for a regression, a ridge regression per target on the runs' values (scikit-learn's
    ``Ridge``, alpha 1), so the stack minimises the squared error."""

    def __init__(self, task: str, seed: int):
        self.task, self.seed, self.models = task, seed, []

    def _fit_values(self, predictions: np.ndarray, targets: np.ndarray) -> "StackModel":
        targets = targets.reshape(len(targets), -1)
        self.models = [linear_model.Ridge(alpha=1.0).fit(predictions[:, :, column].T, targets[:, column])
                       for column in range(predictions.shape[2])]
        return self

    @staticmethod
    def _features(predictions: np.ndarray, column: int | None = None) -> np.ndarray:
        clipped = np.clip(predictions.astype(np.float64), EPS, 1 - EPS)
        if column is not None:
            return logit(clipped[:, :, column]).T
        return np.log(clipped).transpose(1, 0, 2).reshape(clipped.shape[1], -1)

    def fit(self, predictions: np.ndarray, targets: np.ndarray) -> "StackModel":
        if self.task == "regression":
            return self._fit_values(predictions, targets)
        if self.task == "multiclass":
            model = linear_model.LogisticRegression(C=1.0, max_iter=1000)
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
            model = linear_model.LogisticRegression(C=1.0, max_iter=1000)
            model.fit(self._features(predictions, column)[known], truth[known] == 1)
            self.models.append(model)
        return self

    def predict(self, predictions: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return np.stack([model.predict(predictions[:, :, column].T) for column, model in enumerate(self.models)],
                            axis=1)
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
        if self.task == "regression":
            return [{"coef": model.coef_.tolist(), "intercept": float(model.intercept_)} for model in self.models]
        return [model if isinstance(model, float) else
                {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist(), "classes": model.classes_.tolist()}
                for model in self.models]


def stack_model_from_state(task: str, state: list, n_members: int, n_classes: int, source: Path) -> StackModel:
    """The stacking model recorded by :meth:`StackModel.state`, predicting exactly as the fitted one did; a recipe
    whose entries do not fit ``n_members`` runs of ``n_classes`` classes is an error naming ``source``."""
    entries = 1 if task == "multiclass" else n_classes
    if not isinstance(state, list) or len(state) != entries:
        raise KagglecvError(f"{source}: stack_model: expected {entries} entries for {task}, got "
                            f"{len(state) if isinstance(state, list) else type(state).__name__}")
    stack = StackModel(task, seed=0)
    if task == "regression":
        stack.models = [_ridge_from_state(entry, index, n_members, source) for index, entry in enumerate(state)]
        return stack
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
        model = linear_model.LogisticRegression()
        model.coef_, model.intercept_, model.classes_ = coef, intercept, labels
        stack.models.append(model)
    return stack


def _ridge_from_state(entry, index: int, n_members: int, source: Path):
    """A regression stack's ridge model of one target, as :meth:`StackModel.state` recorded it."""
    try:
        coef, intercept = np.asarray(entry["coef"], dtype=np.float64), float(entry["intercept"])
    except (TypeError, KeyError, ValueError):
        raise KagglecvError(f"{source}: stack_model[{index}]: expected {{coef, intercept}} of numbers") from None
    if coef.shape != (n_members,) or not np.isfinite(coef).all() or not np.isfinite(intercept) or len(entry) != 2:
        raise KagglecvError(f"{source}: stack_model[{index}]: coef {coef.shape} does not fit {n_members} runs "
                            f"(expected ({n_members},) and a finite intercept)")
    model = linear_model.Ridge(alpha=1.0)
    model.coef_, model.intercept_, model.n_features_in_ = coef, intercept, n_members
    return model
