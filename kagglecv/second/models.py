"""Second-stage models, fitted per output block and saved in their library's own text format (LightGBM's model
string, XGBoost's JSON) or as plain numbers (ridge, logistic regression, SVR), never pickled.

A task's outputs are fitted in blocks: binary one block (P(positive)), multiclass one block of every class,
multi-label one binary block per class, regression one block per target. A block file from someone else is read
bounded, parsed by its library (or as numbers of checked shapes), and its feature count checked against the stack.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kagglecv.core.errors import KagglecvError, require_extra
from kagglecv.core.lazy import imported_on_first_use

# Imported when a model is fitted: a fusion model's training imports this module for LinearInputs only, and every
# `kagglecv train` would otherwise pay scikit-learn's import (BENCHMARKS.md, "Fixed work per fold").
linear_model = imported_on_first_use("sklearn.linear_model")
svm = imported_on_first_use("sklearn.svm")

SECOND_MODELS = ("lightgbm", "xgboost", "catboost", "ridge", "svr")
MODEL_SUFFIX = {"lightgbm": "txt", "xgboost": "json", "catboost": "json", "ridge": "json", "svr": "json"}
MAX_MODEL_BYTES = 512 * 2**20
SVR_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class ModelSettings:
    """The second-stage model and its settings (recorded in ``stack.json``)."""

    kind: str = "lightgbm"
    rounds: int = 300            # boosting rounds (lightgbm, xgboost)
    learning_rate: float = 0.05
    leaves: int = 15
    min_rows: int = 20           # rows a leaf holds at least
    alpha: float = 1.0           # ridge: L2 penalty; logistic: 1 / C; svr: 1 / C
    seed: int = 42
    threads: int = field(default_factory=lambda: max(1, len(os.sched_getaffinity(0))))


def output_blocks(task: str, n_classes: int) -> list[tuple[str, int]]:
    """(objective, width) of each block a task is fitted in."""
    if task == "binary":
        return [("binary", 1)]
    if task == "multiclass":
        return [("multiclass", n_classes)]
    if task == "multilabel":
        return [("binary", 1)] * n_classes
    if task == "regression":
        return [("regression", 1)] * n_classes
    raise KagglecvError(f"a stack of a {task} task is not supported; stack binary, multiclass, multi-label or "
                        "regression runs")


def block_target(task: str, targets: np.ndarray, block: int) -> np.ndarray:
    if task in ("binary", "multiclass"):
        return np.asarray(targets).astype(np.int64)
    return np.asarray(targets, dtype=np.float64)[:, block]


def as_probabilities(task: str, blocks: list[np.ndarray]) -> np.ndarray:
    """The blocks' outputs as a prediction file's columns (binary: both classes)."""
    if task == "binary":
        positive = blocks[0].reshape(-1)
        return np.stack([1 - positive, positive], axis=1)
    if task == "multiclass":
        return blocks[0].reshape(len(blocks[0]), -1)
    return np.stack([block.reshape(-1) for block in blocks], axis=1)


class Block(Protocol):
    def predict(self, design: np.ndarray) -> np.ndarray: ...

    def text(self) -> str: ...


def fit_block(settings: ModelSettings, objective: str, width: int, design: np.ndarray, target: np.ndarray,
              categorical: list[int]) -> Block:
    if settings.kind == "lightgbm":
        return LightGBMBlock.fit(settings, objective, width, design, target, categorical)
    if settings.kind == "xgboost":
        return XGBoostBlock.fit(settings, objective, width, design, target)
    if settings.kind == "catboost":
        return CatBoostBlock.fit(settings, objective, width, design, target)
    if settings.kind == "svr" and objective != "regression":
        raise KagglecvError("--model svr: a support vector regression fits numeric targets; for classes use "
                            "lightgbm, xgboost or ridge (logistic regression)")
    return LinearBlock.fit(settings, objective, width, design, target, categorical)


def load_block(kind: str, text: str, objective: str, width: int, n_features: int, source) -> Block:
    """A saved block, parsed by its library and checked: its feature count and output width are the stack's."""
    try:
        if kind == "lightgbm":
            block = LightGBMBlock.load(text, width)
        elif kind == "xgboost":
            block = XGBoostBlock.load(text)
        elif kind == "catboost":
            block = CatBoostBlock.load(text, objective)
        else:
            block = LinearBlock.from_state(json.loads(text), objective, width)
        probe = block.predict(np.zeros((1, n_features)))
    except KagglecvError as exc:
        raise KagglecvError(f"{source}: {exc}") from None
    except Exception as exc:  # each library raises its own error type for a damaged model
        reason = " ".join(str(exc).split())[:160]
        raise KagglecvError(f"{source}: not a {kind} model of this stack ({reason})") from None
    if probe.size != width:
        raise KagglecvError(f"{source}: gives {probe.size} outputs a row; the stack expects {width}")
    return block


@dataclass
class LightGBMBlock:
    booster: Any

    @classmethod
    def fit(cls, settings: ModelSettings, objective: str, width: int, design: np.ndarray, target: np.ndarray,
            categorical: list[int]) -> "LightGBMBlock":
        lightgbm = _library("lightgbm", "stack", "kagglecv stack --model lightgbm")
        params = {"objective": objective, "learning_rate": settings.learning_rate, "num_leaves": settings.leaves,
                  "min_data_in_leaf": settings.min_rows, "feature_fraction": 0.8, "bagging_fraction": 0.8,
                  "bagging_freq": 1, "lambda_l2": 1.0, "seed": settings.seed, "deterministic": True,
                  "force_row_wise": True, "num_threads": settings.threads, "verbose": -1}
        if objective == "multiclass":
            params["num_class"] = width
        names = [f"f{index}" for index in range(design.shape[1])]
        dataset = lightgbm.Dataset(design, label=target, feature_name=names, categorical_feature=categorical,
                                   free_raw_data=True, params={"verbose": -1})
        return cls(lightgbm.train(params, dataset, num_boost_round=settings.rounds))

    @classmethod
    def load(cls, text: str, width: int) -> "LightGBMBlock":
        lightgbm = _library("lightgbm", "stack", "a LightGBM stack")
        booster = lightgbm.Booster(model_str=text)
        if booster.num_model_per_iteration() != width:
            raise KagglecvError(f"a LightGBM model of {booster.num_model_per_iteration()} outputs, expected {width}")
        return cls(booster)

    def predict(self, design: np.ndarray) -> np.ndarray:
        names = self.booster.feature_name()
        if len(names) != design.shape[1] or names != [f"f{index}" for index in range(design.shape[1])]:
            raise KagglecvError(f"a LightGBM model of {len(names)} features ({', '.join(names[:3])}, ...); the stack "
                                f"gives {design.shape[1]} (f0..f{design.shape[1] - 1})")
        return np.asarray(self.booster.predict(design), dtype=np.float64)

    def text(self) -> str:
        return self.booster.model_to_string()


@dataclass
class XGBoostBlock:
    booster: Any

    OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}

    @classmethod
    def fit(cls, settings: ModelSettings, objective: str, width: int, design: np.ndarray,
            target: np.ndarray) -> "XGBoostBlock":
        xgboost = _library("xgboost", "xgboost", "kagglecv stack --model xgboost")
        params = {"objective": cls.OBJECTIVES[objective], "eta": settings.learning_rate, "tree_method": "hist",
                  "grow_policy": "lossguide", "max_leaves": settings.leaves, "max_depth": 0,
                  "min_child_weight": 1.0, "subsample": 0.8, "colsample_bytree": 0.8, "seed": settings.seed,
                  "nthread": settings.threads}
        if objective == "multiclass":
            params["num_class"] = width
        matrix = xgboost.DMatrix(design, label=target, missing=np.nan)
        return cls(xgboost.train(params, matrix, num_boost_round=settings.rounds))

    @classmethod
    def load(cls, text: str) -> "XGBoostBlock":
        xgboost = _library("xgboost", "xgboost", "an XGBoost stack")
        booster = xgboost.Booster()
        booster.load_model(bytearray(text.encode("utf-8")))
        return cls(booster)

    def predict(self, design: np.ndarray) -> np.ndarray:
        xgboost = _library("xgboost", "xgboost", "an XGBoost stack")
        if self.booster.num_features() != design.shape[1]:
            raise KagglecvError(f"an XGBoost model of {self.booster.num_features()} features; the stack gives "
                                f"{design.shape[1]}")
        return np.asarray(self.booster.predict(xgboost.DMatrix(design, missing=np.nan)), dtype=np.float64)

    def text(self) -> str:
        return bytes(self.booster.save_raw("json")).decode("utf-8")


@dataclass
class CatBoostBlock:
    """CatBoost (symmetric trees), saved in CatBoost's JSON model format."""

    model: Any
    objective: str

    LOSSES = {"binary": "Logloss", "multiclass": "MultiClass", "regression": "RMSE"}

    @classmethod
    def fit(cls, settings: ModelSettings, objective: str, width: int, design: np.ndarray,
            target: np.ndarray) -> "CatBoostBlock":
        catboost = _library("catboost", "catboost", "kagglecv stack --model catboost")
        params = {"iterations": settings.rounds, "learning_rate": settings.learning_rate, "depth": 6,
                  "random_seed": settings.seed, "thread_count": settings.threads, "verbose": False,
                  "allow_writing_files": False, "loss_function": cls.LOSSES[objective]}
        if objective == "multiclass":
            params["classes_count"] = width
        model = catboost.CatBoost(params)
        model.fit(design, target)
        return cls(model, objective)

    @classmethod
    def load(cls, text: str, objective: str) -> "CatBoostBlock":
        catboost = _library("catboost", "catboost", "a CatBoost stack")
        model = catboost.CatBoost()
        with tempfile.TemporaryDirectory() as folder:  # CatBoost reads its JSON format from a file only
            path = Path(folder) / "model.json"
            path.write_text(text, encoding="utf-8")
            model.load_model(str(path), format="json")
        return cls(model, objective)

    def predict(self, design: np.ndarray) -> np.ndarray:
        names = list(self.model.feature_names_ or [])
        if len(names) != design.shape[1]:
            raise KagglecvError(f"a CatBoost model of {len(names)} features; the stack gives {design.shape[1]}")
        if self.objective == "regression":
            return np.asarray(self.model.predict(design), dtype=np.float64)
        probabilities = np.asarray(self.model.predict(design, prediction_type="Probability"), dtype=np.float64)
        return probabilities[:, 1] if self.objective == "binary" else probabilities

    def text(self) -> str:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.json"
            self.model.save_model(str(path), format="json")
            return path.read_text(encoding="utf-8")


@dataclass
class LinearInputs:
    """A linear model's inputs: numbers with NaN imputed by the fit rows' mean and standardised, categories one-hot
    over the codes the fit rows hold (an unseen or empty category is all zeros)."""

    numeric: list[int]
    means: np.ndarray
    scales: np.ndarray
    categorical: list[int]
    levels: list[int]

    @classmethod
    def fit(cls, design: np.ndarray, categorical: list[int]) -> "LinearInputs":
        numeric = [index for index in range(design.shape[1]) if index not in set(categorical)]
        values = design[:, numeric]
        seen = ~np.isnan(values)
        means = np.where(seen.any(axis=0), np.nansum(values, axis=0) / np.maximum(seen.sum(axis=0), 1), 0.0)
        filled = np.where(seen, values, means)
        scales = filled.std(axis=0)
        levels = [int(np.nanmax(design[:, index])) + 1 if (~np.isnan(design[:, index])).any() else 0
                  for index in categorical]
        return cls(numeric, means, np.where(scales > 0, scales, 1.0), list(categorical), levels)

    def transform(self, design: np.ndarray) -> np.ndarray:
        values = design[:, self.numeric]
        parts = [(np.where(np.isnan(values), self.means, values) - self.means) / self.scales]
        for index, count in zip(self.categorical, self.levels):
            parts.append(design[:, [index]] == np.arange(count)[None, :])
        return np.concatenate(parts, axis=1).astype(np.float64)

    def state(self) -> dict:
        return {"numeric": self.numeric, "means": self.means.tolist(), "scales": self.scales.tolist(),
                "categorical": self.categorical, "levels": self.levels}

    @classmethod
    def from_state(cls, state: dict) -> "LinearInputs":
        inputs = cls([int(i) for i in state["numeric"]], _finite(state["means"]), _finite(state["scales"]),
                     [int(i) for i in state["categorical"]], [int(n) for n in state["levels"]])
        if len(inputs.means) != len(inputs.numeric) or len(inputs.scales) != len(inputs.numeric) or \
                len(inputs.levels) != len(inputs.categorical) or min(inputs.levels, default=0) < 0:
            raise KagglecvError("the input scaling's lengths do not match its columns")
        return inputs


@dataclass
class LinearBlock:
    """Ridge regression, logistic regression (binary or multinomial) or an RBF support vector regression, kept as
    the numbers scikit-learn fitted; predictions are scikit-learn's formulas (``decision_function`` then the
    link), so a replay equals the fitted model's own ``predict``/``predict_proba``."""

    objective: str
    inputs: LinearInputs
    coef: np.ndarray            # outputs x inputs (svr: its support vectors' dual coefficients, 1 x vectors)
    intercept: np.ndarray       # outputs
    support: np.ndarray | None = None   # svr: vectors x inputs
    gamma: float = 0.0
    target_mean: float = 0.0
    target_scale: float = 1.0

    @classmethod
    def fit(cls, settings: ModelSettings, objective: str, width: int, design: np.ndarray, target: np.ndarray,
            categorical: list[int]) -> "LinearBlock":
        inputs = LinearInputs.fit(design, categorical)
        inputs_matrix = inputs.transform(design)
        if settings.kind == "svr":
            mean, scale = float(target.mean()), float(target.std()) or 1.0
            model = svm.SVR(C=1.0 / settings.alpha, epsilon=0.1).fit(inputs_matrix, (target - mean) / scale)
            return cls(objective, inputs, model.dual_coef_.astype(np.float64), model.intercept_.astype(np.float64),
                       model.support_vectors_.astype(np.float64), float(model._gamma), mean, scale)
        if objective == "regression":
            model = linear_model.Ridge(alpha=settings.alpha).fit(inputs_matrix, target)
            return cls(objective, inputs, model.coef_.reshape(1, -1), np.atleast_1d(model.intercept_))
        model = linear_model.LogisticRegression(C=1.0 / settings.alpha, max_iter=2000).fit(inputs_matrix, target)
        if objective == "binary" or len(model.classes_) == width:
            return cls(objective, inputs, model.coef_, model.intercept_)
        coef = np.zeros((width, inputs_matrix.shape[1]))
        intercept = np.full(width, -30.0)  # a class no fit row holds: probability ~0
        coef[model.classes_], intercept[model.classes_] = model.coef_, model.intercept_
        return cls(objective, inputs, coef, intercept)

    def predict(self, design: np.ndarray) -> np.ndarray:
        columns = len(self.inputs.numeric) + len(self.inputs.categorical)
        if sorted([*self.inputs.numeric, *self.inputs.categorical]) != list(range(design.shape[1])):
            raise KagglecvError(f"a linear model of {columns} features; the stack gives {design.shape[1]}")
        inputs = self.inputs.transform(design)
        if self.support is not None:
            scores = np.concatenate([self._rbf(inputs[start:start + SVR_CHUNK_ROWS])
                                     for start in range(0, len(inputs), SVR_CHUNK_ROWS)]) if len(inputs) else \
                np.zeros(0)
            return scores * self.target_scale + self.target_mean
        scores = inputs @ self.coef.T + self.intercept
        if self.objective == "regression":
            return scores[:, 0]
        if self.objective == "binary":
            return 1 / (1 + np.exp(-scores[:, 0]))
        scores = scores - scores.max(axis=1, keepdims=True)
        return np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)

    def _rbf(self, inputs: np.ndarray) -> np.ndarray:
        distances = (inputs ** 2).sum(1)[:, None] - 2 * inputs @ self.support.T + (self.support ** 2).sum(1)[None, :]
        return np.exp(-self.gamma * np.maximum(distances, 0)) @ self.coef[0] + self.intercept[0]

    def text(self) -> str:
        state = {"objective": self.objective, "inputs": self.inputs.state(), "coef": self.coef.tolist(),
                 "intercept": self.intercept.tolist(), "gamma": self.gamma, "target_mean": self.target_mean,
                 "target_scale": self.target_scale}
        if self.support is not None:
            state["support"] = self.support.tolist()
        return json.dumps(state)

    @classmethod
    def from_state(cls, state: dict, objective: str, width: int) -> "LinearBlock":
        if not isinstance(state, dict) or state.get("objective") != objective:
            raise KagglecvError(f"expected a {objective} linear model")
        inputs = LinearInputs.from_state(state["inputs"])
        n_inputs = len(inputs.numeric) + sum(inputs.levels)
        coef, intercept = _finite(state["coef"], 2), _finite(state["intercept"])
        support = None if state.get("support") is None else _finite(state["support"], 2)
        expected = (1, len(support)) if support is not None else (width if objective == "multiclass" else 1, n_inputs)
        if coef.shape != expected or len(intercept) != expected[0] or \
                (support is not None and support.shape[1:] != (n_inputs,)):
            raise KagglecvError(f"coefficients of shape {coef.shape}, expected {expected}")
        return cls(objective, inputs, coef, intercept, support, float(state.get("gamma", 0.0)),
                   float(state.get("target_mean", 0.0)), float(state.get("target_scale", 1.0)))


def _library(module: str, extra: str, what: str):
    require_extra(module, extra, what)
    return importlib.import_module(module)


def _finite(values, ndim: int = 1) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.full((1,) * (ndim + 1), np.nan)
    if array.ndim != ndim or not np.isfinite(array).all():
        raise KagglecvError(f"expected a {ndim}-d array of finite numbers")
    return array
