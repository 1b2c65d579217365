"""The ensemble stage: blend runs that share folds, and report the score the blend will really get.

A blend whose weights are fit on the OOF predictions scores optimistically on those same predictions. So
``make_ensemble`` reports three numbers: the best single run, the in-sample blend (weights fit and scored on all
OOF rows) and the nested blend (for each fold, weights fit on the other folds' rows and applied to this fold's),
which is the honest estimate. The ensemble's ``oof.csv`` holds the nested predictions, so an ensemble of
ensembles is fit honestly too; its ``test.csv`` applies the weights fit on all OOF rows.

The blending maths (mean, rank, power, hill climbing, stacking, ...) are :mod:`kagglecv.core.blending`'s.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from kagglecv.core.blending import METHODS, Blender, StackModel, as_predictions, combine
from kagglecv.core.config import dump_config, validate_config
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import (
    atomic_folder,
    output_lock,
    write_json,
    write_text,
)
from kagglecv.core.metrics import Metric, resolve_metric
from kagglecv.core.outputs import OutputRule
from kagglecv.core.predictions import (
    prediction_frame,
    write_predictions,
)
from kagglecv.core.runs import ENSEMBLE_PREFIX, RunDir, member_reference
from kagglecv.core.topk import blend_top_k, read_top_k, write_top_k
from kagglecv.data.inputs import competition_metric
from kagglecv.data.members import (
    IdentityMembers,
    Members,
    load_identity_members,
    load_members,
    widest_range,
)
from kagglecv.data.outcomes import EnsembleResult
from kagglecv.data.scoring import score_identities, score_predictions_frame
from kagglecv.second.identities import identity_labels, tuned_identities


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
    name = name or f"{method}-{len(paths)}"
    runs_dir = Path(runs_dir or Path(paths[0]).parent)
    out = OutputRule.of(paths).named(runs_dir, name, "--name", prefix=ENSEMBLE_PREFIX)
    if RunDir(out).info_path.is_file() and not RunDir(out).is_ensemble():
        raise KagglecvError(f"--name {name!r}: {out} is a training run, not an ensemble; refused to replace it")
    if RunDir(paths[0]).identities_path.is_file():
        with output_lock(runs_dir / f".{out.name}.lock", str(out)):
            return _blend_identities(load_identity_members(paths), method, out, options.get("user_weights"))
    members = load_members(paths)
    chosen = competition_metric(RunDir(paths[0]).read_config(), members.data, metric, "--metric")
    with output_lock(runs_dir / f".{out.name}.lock", str(out)):
        return _blend_and_write(members, method, chosen, out, options)


def _blend_identities(members: IdentityMembers, method: str, out: Path, weights: list[float] | None
                      ) -> EnsembleResult:
    """``model.identity`` runs: each row's identities scored by the weighted sum of the runs' top-k scores
    (:func:`~kagglecv.core.topk.blend_top_k`), the new label's threshold tuned again on the blended OOF."""
    if method not in ("mean", "weighted"):
        raise KagglecvError(f"--method {method}: identity runs (top-k files) blend by mean or weighted; their scores "
                            "are a row's best few identities, not probabilities to fit weights on")
    names = [path.name for path in members.paths]
    shares = _identity_weights(weights if method == "weighted" else None, len(names))
    config = validate_config(members.config)
    settings, metric_k = config.predict.identities, RunDir(members.paths[0]).read_identity_record().metric_k
    metric = f"map@{metric_k}"
    labels, new_label = identity_labels(members.data, settings)
    singles = {name: RunDir(path).read_identity_record().oof_nested for name, path in zip(names, members.paths)}
    best = max(singles.items(), key=lambda item: item[1] or 0.0)
    with atomic_folder(out, replace=True) as building:
        run = RunDir(building)
        write_top_k(run.oof_path, replace(blend_top_k(members.oof, shares, settings.top_k), folds=members.oof[0].folds))
        record = tuned_identities(read_top_k(run.oof_path), labels, new_label, metric_k, settings)  # as written
        if members.test is not None:
            write_top_k(run.test_path, blend_top_k(members.test, shares, settings.top_k))
        run.write_identity_record(record)
        run.write_blend_recipe({"method": method, "metric": metric, "weights": dict(zip(names, shares)), "power": 1.0})
        write_json(run.blend_score_path, {"metric": metric, "single_scores": singles,
                                          "best_single": {"run": best[0], "score": best[1]},
                                          "in_sample": record.oof_tuned, "nested": record.oof_nested})
        _write_run_files(run, members, name=out.name, method=method, out_path=out)
        write_json(run.score_path, score_identities(run, members.data, resolve_metric(metric, "multiclass")).to_dict())
    return EnsembleResult(name=out.name, method=method, metric=metric, weights=dict(zip(names, shares)),
                          best_single=best, in_sample=record.oof_tuned, nested=record.oof_nested, nested_per_fold={},
                          correlation=pd.DataFrame(), marginal_gain={}, path=out)


def _identity_weights(weights: list[float] | None, runs: int) -> np.ndarray:
    if weights is None:
        return np.full(runs, 1.0 / runs)
    if len(weights) != runs or not sum(weights) > 0:
        raise KagglecvError(f"--weights: {len(weights)} weights for {runs} runs; give one non-negative weight per run, "
                            "not all zero")
    return np.asarray(weights, dtype=np.float64) / sum(weights)


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


def _blend_and_write(members: Members, method: str, metric: Metric, out: Path, options: dict) -> EnsembleResult:
    targets = _stack_targets(members) if method == "stack" and members.task == "binary" else members.data.targets
    blender = Blender(method, members.task, metric, **options)
    run_names = [path.name for path in members.paths]

    def metric_of(blend):
        return members.data.score_of(metric, blend)

    singles = {name_: metric_of(run) for name_, run in zip(run_names, members.oof)}
    best_single = max(singles.items(), key=lambda item: metric.objective(item[1]))
    final_weights = blender.fit(members.oof, targets)
    in_sample = metric_of(blender.apply(final_weights, members.oof))
    nested_oof = as_predictions(nested_blend(blender, members, targets), members.task)
    nested_frame = prediction_frame(members.data.ids, nested_oof, members.classes, folds=members.folds)
    nested = score_predictions_frame(nested_frame, members.data, metric, source=out)
    result = EnsembleResult(name=out.name, method=method, metric=metric.name,
                            weights=_weights_report(final_weights, run_names, members.classes),
                            best_single=best_single, in_sample=in_sample, nested=nested.overall,
                            nested_per_fold=nested.per_fold, correlation=oof_correlation(members.oof, run_names),
                            marginal_gain=marginal_gains(members, blender, targets, metric_of, in_sample,
                                                         metric.objective), path=out)
    with atomic_folder(out, replace=True) as building:
        run = RunDir(building)
        write_predictions(run.oof_path, members.data.ids, nested_oof, members.classes, folds=members.folds)
        if members.test is not None:
            run.write_test_predictions(members.test_ids,
                                       as_predictions(blender.apply(final_weights, members.test), members.task),
                                       members.classes)
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


def marginal_gains(members: Members, blender: Blender, targets, metric_of, full_score: float,
                   objective: Callable[[float], float]) -> dict[str, float]:
    """For each run: how much better the in-sample blend scores with it than the same method fit without it, in
    the metric's units and made higher-is-better by ``objective`` (a positive gain helps, for log loss too)."""
    gains = {}
    if len(members.oof) < 3:
        singles = [metric_of(run) for run in members.oof]
        return {path.name: objective(full_score) - objective(singles[1 - index])
                for index, path in enumerate(members.paths)}
    for index, path in enumerate(members.paths):
        keep = [i for i in range(len(members.oof)) if i != index]
        subset = members.oof[keep]
        if blender.method == "weighted":
            weights = np.asarray(blender.user_weights, dtype=float)[keep]
            blended = combine(subset, weights / weights.sum(), "mean", members.task)
        else:
            blended = blender.apply(blender.fit(subset, targets), subset)
        gains[path.name] = objective(full_score) - objective(metric_of(blended))
    return gains


def _weights_report(weights, run_names: list[str], classes: list[str]):
    if isinstance(weights, StackModel):
        if weights.task == "regression":
            return {"stack": "ridge regression of each target on the runs' values"}
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
    run.write_info({
        "experiment": name, "kind": "ensemble",
        "members": [member_reference(p, out_path) for p in members.paths],
        "task": members.task, "classes": members.classes, "folds_sha256": members.folds_sha256,
        "folds_file": config.get("folds", {}).get("file"), "backbone": f"{method} of {len(members.paths)}",
        "target_range": widest_range(members.paths),
        "created": pd.Timestamp.now().isoformat(timespec="microseconds"),
    })


def _write_blend_report(run: RunDir, result: EnsembleResult, singles: dict, fitted, power: float) -> None:
    """weights.json (the recipe ``infer`` replays: method, weights, exponent, stacking model) and blend_score.json."""
    recipe = {"method": result.method, "metric": result.metric, "weights": result.weights, "power": power}
    if isinstance(fitted, StackModel):
        recipe["stack_model"] = fitted.state()
    run.write_blend_recipe(recipe)
    write_json(run.blend_score_path, {
        "metric": result.metric, "best_single": {"run": result.best_single[0], "score": result.best_single[1]},
        "single_scores": singles, "in_sample": result.in_sample, "nested": result.nested,
        "nested_per_fold": result.nested_per_fold, "marginal_gain": result.marginal_gain,
        "correlation": result.correlation.round(6).to_dict(),
    })
