"""``kagglecv pack``: a self-contained folder to upload as a Kaggle dataset, from which ``kagglecv infer`` predicts a
hidden test set offline; and the check ``infer`` makes before it runs anything from a bundle.

A bundle holds what ``infer`` replays and nothing else: the resolved configs, ``run.json`` (task, classes, fold
count), ``predict.json`` (TTA), each fold's chosen weights (``best`` or ``ema`` safetensors, never ``last.pt``), the
own-model file, and for an ensemble its recipe (``weights.json``) with every member under ``members/<name>/``. No
training image, OOF file or training label goes in. ``manifest.json`` lists every file with its sha256: an altered,
missing or added file makes ``infer`` refuse the bundle (an own-model file is code that runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd

from kagglecv.core.bundle import MANIFEST, bundle_files, is_own_bundle
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError, require_extra, summarize
from kagglecv.core.files import (
    atomic_folder,
    remove_stale_temporaries,
    sha256_file,
    write_bytes,
    write_json,
    write_text,
)
from kagglecv.core.metrics import tune_other_threshold, uses_grade_cutoffs
from kagglecv.core.notebook import (
    DATASET_METADATA,
    KERNEL_METADATA,
    NOTEBOOK,
    NotebookPlan,
    build_notebook,
    dataset_metadata,
    is_own_notebook_folder,
    kept_or_default,
    kernel_metadata,
)
from kagglecv.core.outputs import OutputRule
from kagglecv.core.predictions import read_predictions
from kagglecv.core.records import DoneRecord, PredictRecord, RunInfo
from kagglecv.core.runs import RunDir, package_versions, read_json
from kagglecv.core.wheelhouse import (
    KAGGLE_PLATFORM,
    KAGGLE_PROVIDES,
    KAGGLE_PYTHON,
    build_wheelhouse,
)
from kagglecv.data.inputs import load_run_table
from kagglecv.data.members import read_gallery, write_gallery
from kagglecv.data.submission import (
    cutoffs_from_oof,
    decide_submission,
    parse_threshold,
    thresholds_from_oof,
)
from kagglecv.data.table import read_csv_strings
from kagglecv.nn.budget import (
    FIT_METHOD,
    Budget,
    FitResult,
    Timing,
    fit_to_budget,
    measure_timing,
)
from kagglecv.nn.onnx_predictor import ONNX_FILE
from kagglecv.nn.recipe import (
    EnsembleRecipe,
    Recipe,
    RunRecipe,
    StackRecipe,
    leaf_runs,
    load_recipe,
)
from kagglecv.second.models import MODEL_SUFFIX

FORMATS = ("torch", "onnx")
ONNX_TOLERANCE = 1e-4  # max abs difference of probabilities, PyTorch vs ONNX Runtime
BUNDLE_FORMAT = 1
ENSEMBLE_KEYS = ("experiment", "kind", "task", "classes", "backbone", "created", "target_range", "n_folds")
RUN_KEYS = ("experiment", "created", "task", "classes", "params", "model_file", "versions", "python", "target_range")
DONE_KEYS = ("fold", "best_epoch", "best_score", "metric", "source")


@dataclass
class PackResult:
    path: Path
    files: int
    size_bytes: int
    timing: Timing | None
    wheels: list[str]
    notebook: Path | None = None
    fit: FitResult | None = None


def pack_run(source: Path, out: Path, *, wheels: bool = False, provided: tuple[str, ...] | None = None,
             timing_images: int = 64, threshold: str | None = None, wheel_platform: str | None = None,
             wheel_python: str | None = None, notebook: bool = False, competition: str | None = None,
             format: str = "torch", fit: Budget | None = None, console: Console | None = None) -> PackResult:
    """Write the bundle of the run or ensemble ``source`` to ``out`` (built aside, renamed into place).

    ``threshold``: ``oof`` (per-class thresholds tuned for F1 on the run's OOF predictions, with the training labels
    this machine has) or a number, stored for ``infer``'s multi-label label lists. ``wheel_platform``,
    ``wheel_python``: the pip platform tag and Python version of the notebook the wheels are for (Kaggle's).
    ``notebook``: also ``<out>-notebook/`` (``submission.ipynb`` and ``kernel-metadata.json``; ``competition``:
    the competition's slug, its data folder under ``/kaggle/input``). ``format``: ``torch`` (safetensors) or
    ``onnx`` (each fold's model, views and probabilities as one ONNX graph, checked against PyTorch on the run's
    own images; ``infer`` runs it with ONNX Runtime and no torch). ``fit``: pack only the runs and TTA views that
    score best on OOF within that budget (``kagglecv.nn.budget``); its choice goes in the manifest.
    """
    _check_packable(Path(source), format, fit)
    if format == "onnx":
        for module in ("onnxscript", "onnxruntime"):
            require_extra(module, "onnx", "pack --format onnx")
    if notebook and not wheels and "kagglecv" not in (provided or ()):
        raise KagglecvError("--notebook: the notebook installs kagglecv from the bundle's wheelhouse when the Kaggle "
                            "image lacks it; add --wheels (or --provided kagglecv,... when your kernel has it)")
    console = console or Console()
    source, out = Path(source), Path(out)
    recipe = load_recipe(source)
    if format == "onnx" and any(leaf.config.model.features_head is not None for leaf in leaf_runs(recipe)):
        raise KagglecvError(f"--format onnx: {source} holds a fusion model (model.features_head), whose rows' "
                            "features are not part of an ONNX graph; pack it with --format torch")
    notebook_dir = out.parent / f"{out.name}-notebook" if notebook else None
    _check_destination(recipe, source, out, notebook_dir)
    dataset_text = kept_or_default(out / DATASET_METADATA, dataset_metadata(out.name))
    plan = notebook_plan(recipe, out.name, competition) if notebook_dir is not None else None
    kernel_text = None if plan is None else kept_or_default(notebook_dir / KERNEL_METADATA, kernel_metadata(
        plan, f"{plan.bundle}-submission"))
    remove_stale_temporaries(out.parent, prefix=f".{out.name}.")
    wheel_names: list[str] = []
    with atomic_folder(out, replace=True) as building:
        fitted = fit_to_budget(recipe, fit, max(timing_images, 32), building, console) if fit is not None else None
        packed = fitted.recipe if fitted is not None else recipe
        _copy_recipe(packed, building, format, _blend_record(fitted))
        parity = onnx_parity(packed, load_recipe(building)) if format == "onnx" else None
        write_text(building / "classes.txt", "\n".join(recipe.classes) + "\n")
        thresholds, cutoffs, other = _packed_decisions(threshold, source, recipe, fitted)
        if thresholds is not None:
            write_json(RunDir(building).thresholds_path, thresholds)
        if cutoffs is not None:
            write_json(RunDir(building).cutoffs_path, cutoffs)
        if other is not None:
            write_json(RunDir(building).other_path, {"label": other[0], "threshold": other[1]})
        if wheels:
            wheel_names = build_wheelhouse(building / "wheels", KAGGLE_PROVIDES if provided is None else provided,
                                           console, wheel_platform or KAGGLE_PLATFORM,
                                           wheel_python or KAGGLE_PYTHON)
        timing = measure_timing(load_recipe(building), timing_images, building) if timing_images > 0 else None
        write_text(building / "README.md", bundle_readme(packed, out.name, bool(wheel_names), timing))
        write_text(building / DATASET_METADATA, dataset_text)
        extra = {"format": format, "onnx_parity": parity, "fit": None if fitted is None else fitted.record}
        files, size = _write_manifest(building, packed, timing, extra)
    if plan is not None:
        write_notebook(plan, notebook_dir, kernel_text)
    return PackResult(out, len(files), size, timing, wheel_names, notebook_dir, fitted)


def _check_packable(source: Path, format: str, fit: Budget | None) -> None:
    """What a bundle cannot hold, known before its recipe is read: an unknown format, a stack fitted to a budget."""
    if format not in FORMATS:
        raise KagglecvError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    if fit is not None and RunDir(source).read_info().kind == "stack":
        raise KagglecvError(f"--fit: {source} is a stack, whose models were fitted on all its members' predictions; "
                            "pack it whole (or fit the budget on its members and stack again)")


def _packed_decisions(threshold: str | None, source: Path, recipe: Recipe, fitted: FitResult | None
                      ) -> tuple[dict[str, float] | None, list[float] | None, tuple[str, float] | None]:
    """The submission decisions a bundle records for ``infer``: the multi-label thresholds (only with
    ``--threshold``), a ``qwk_thresholds`` run's grade cut-offs and the ``submit.other_label`` threshold, as
    ``submit`` decides them for the source; with ``--fit``, tuned on the fitted recipe's OOF instead."""
    decisions = decide_submission(RunDir(source), recipe.classes, recipe.task, threshold=threshold)
    if fitted is not None and threshold is not None and parse_threshold(threshold) == "oof":
        thresholds = thresholds_from_oof(fitted.targets, fitted.oof, recipe.classes, fitted.metric, recipe.task)
    else:
        thresholds = None if threshold is None else decisions.thresholds_for()
    other = decisions.other
    if fitted is not None and other is not None:
        share = RunDir(source).read_config().submit.other_share
        other = other[0], min(tune_other_threshold(fitted.oof, fitted.targets, share)[0], 1.0)
    if fitted is not None and uses_grade_cutoffs(fitted.metric, recipe.task):
        return thresholds, cutoffs_from_oof(fitted.targets, fitted.oof, recipe.classes), other
    return thresholds, decisions.cutoffs, other


def _blend_record(fitted: FitResult | None) -> dict | None:
    """``weights.json`` of a fitted ensemble: each run's votes as its weight in a mean of probabilities."""
    if fitted is None or not isinstance(fitted.recipe, EnsembleRecipe):
        return None
    names = [member.run.name for member in fitted.recipe.members]
    return {"method": FIT_METHOD, "metric": fitted.metric, "power": 2.0,
            "weights": dict(zip(names, map(float, fitted.recipe.weights)))}


def notebook_plan(recipe: Recipe, bundle: str, competition: str | None) -> NotebookPlan:
    """Where the notebook finds the test set: the names the run's own data had (the competition's files)."""
    config = leaf_runs(recipe)[0].config
    data, submit = config.data, config.submit
    sample = submit.sample.name if submit.sample is not None else "sample_submission.csv"
    root = submit.sample.parent if submit.sample is not None else None  # the competition folder

    def in_competition(path: Path) -> str:  # test/metadata.json stays nested (Herbarium); else the name
        inside = root is not None and path.resolve().is_relative_to(root.resolve())
        return path.resolve().relative_to(root.resolve()).as_posix() if inside else path.name
    test_table = in_competition(data.test_csv) if data.test_csv is not None and data.test_csv.name != sample else None
    images = (data.test_image_dirs() or [data.image_dir])[0]  # the notebook reads one test folder
    return NotebookPlan(bundle, competition, sample, test_table, in_competition(images) if images is not None else None)


def write_notebook(plan: NotebookPlan, folder: Path, kernel_text: str) -> None:
    """``submission.ipynb`` and ``kernel-metadata.json`` (``kernel_text``: kept as the user edited it, read before
    the bundle was replaced) in ``folder``, atomically."""
    with atomic_folder(folder, replace=True) as building:
        write_text(building / NOTEBOOK, nbformat.writes(build_notebook(plan)))
        write_text(building / KERNEL_METADATA, kernel_text)


def _check_destination(recipe: Recipe, source: Path, out: Path, notebook_dir: Path | None = None) -> None:
    """``out`` under the one output rule: a new or empty folder, or an earlier bundle to replace (its manifest names
    kagglecv and lists exactly its files); never the run, a member, inside or around one, or a data folder. The
    same for the notebook folder (an earlier one: exactly pack's notebook and kernel metadata)."""

    resolved_source, resolved_out = source.resolve(), out.resolve()
    if resolved_out.is_relative_to(resolved_source) or resolved_source.is_relative_to(resolved_out):
        raise KagglecvError(f"--out {out}: overlaps the run {source}; choose a folder outside it")
    leaves = leaf_runs(recipe)
    rule = OutputRule.of([source, *(leaf.run.path for leaf in leaves)], configs=[leaf.config for leaf in leaves])
    rule.folder(out, "--out", replace_if=is_own_bundle,
                earlier="a kagglecv bundle (whose manifest lists exactly its files)")
    if notebook_dir is not None:
        rule.folder(notebook_dir, "--notebook", replace_if=is_own_notebook_folder,
                    earlier=f"a kagglecv notebook folder (exactly {NOTEBOOK} and {KERNEL_METADATA})")


def _copy_recipe(recipe: Recipe, dest: Path, format: str = "torch", blend: dict | None = None) -> None:
    """The recipe's files into ``dest``: as recorded, or for a fitted recipe its views and ``blend`` (weights.json)."""
    run = RunDir(dest)
    info = recipe.run.read_info()
    write_text(run.config_path, recipe.run.config_path.read_text(encoding="utf-8"))
    if isinstance(recipe, (EnsembleRecipe, StackRecipe)):
        names = [member.run.name for member in recipe.members]
        if len(set(names)) != len(names):
            raise KagglecvError(f"{recipe.run.path}: two members share a folder name ({summarize(names, quote=True)}); "
                                "a bundle keeps them under members/<name>/")
        kept = info.model_dump(include=set(ENSEMBLE_KEYS), exclude_unset=True)
        run.write_info(RunInfo(**kept, bundle=BUNDLE_FORMAT, bundle_members=[f"members/{name}" for name in names]))
        if isinstance(recipe, StackRecipe):
            _copy_stack_models(recipe, run)
        else:
            run.write_blend_recipe(recipe.run.read_blend_recipe() if blend is None else blend)
        if recipe.run.identities_path.is_file():
            run.write_identity_record(recipe.run.read_identity_record())
        for name, member in zip(names, recipe.members):
            _copy_recipe(member, dest / "members" / name, format)
        return
    run.write_info(RunInfo(**info.model_dump(include=set(RUN_KEYS), by_alias=True), n_folds=len(recipe.sources),
                           bundle=BUNDLE_FORMAT, format=format))
    if recipe.run.predict_path.is_file():
        recorded = recipe.run.read_predict_record()
        kept = {"metric", "oof_score", "auto"} if recorded.tta == recipe.views else {"metric"}
        run.write_predict_record(PredictRecord(**recorded.model_dump(include=kept, exclude_unset=True),
                                               tta=recipe.views, tta_space=recipe.space))
    if recipe.run.model_code() is not None:
        write_bytes(run.model_code_path, recipe.run.model_code_path.read_bytes())
    if recipe.config.model.identity is not None:
        if format == "onnx":
            raise KagglecvError(f"{recipe.run.path}: --format onnx exports class probabilities; a model.identity run "
                                "predicts from embeddings and its galleries (pack it as torch)")
        run.write_identity_record(recipe.run.read_identity_record())
    for index, source in sorted(recipe.sources.items()):
        fold, copy = recipe.run.fold(index), run.fold(index)
        done = fold.read_done()
        copy.write_done(DoneRecord(**done.model_dump(include=set(DONE_KEYS) - {"source"}, exclude_unset=True),
                                   source=source))
        if format == "onnx":
            from kagglecv.nn.export import export_fold  # torch: only to export

            export_fold(recipe, index, copy.path / ONNX_FILE)
        else:
            write_bytes(copy.weights(source), fold.weights(source).read_bytes())
        recorded = fold.read_normalization()
        if recorded is not None:
            copy.write_normalization(recorded)
        if recipe.config.model.identity is not None:  # the gallery: copied as read (its header checked, no pickle)
            embeddings, labels = read_gallery(fold)
            ids = read_csv_strings(fold.gallery_ids_path)["id"].to_numpy(dtype=object)
            write_gallery(copy, embeddings, ids, labels)
        if recipe.config.model.features_head is not None:  # checked when infer loads it, as normalization.json is
            if not fold.features_path.is_file():
                raise KagglecvError(f"{fold.features_path}: missing; a fusion fold records its feature scaling")
            write_json(copy.features_path, read_json(fold.features_path, "a fold's feature scaling"))


def onnx_parity(source: Recipe, bundle: Recipe, images: int = 16) -> dict:
    """The largest difference of probabilities between the PyTorch recipe (the run) and the ONNX bundle, fold by
    fold, on up to ``images`` of each fold's own held-out training images; over ``ONNX_TOLERANCE`` is an error."""
    worst, compared = 0.0, 0
    for torch_leaf, onnx_leaf in zip(leaf_runs(source), leaf_runs(bundle)):
        data = load_run_table(torch_leaf.run, with_images=True)
        held_out = _held_out_rows(torch_leaf.run, data.ids)
        for fold in sorted(torch_leaf.sources):
            rows = held_out.get(fold, np.arange(len(data)))[:images]
            expected = torch_leaf.predict_fold(fold, data.images, rows)
            got = onnx_leaf.predict_fold(fold, data.images, rows)
            worst, compared = max(worst, float(np.abs(expected - got).max())), compared + len(rows)
    if worst > ONNX_TOLERANCE:
        raise KagglecvError(f"--format onnx: the exported models differ from PyTorch by up to {worst:.2e} in "
                            f"probability on the run's own images (tolerance {ONNX_TOLERANCE:g}); not packed")
    return {"max_abs_difference": worst, "tolerance": ONNX_TOLERANCE, "images": compared,
            "compared": "probabilities, PyTorch recipe vs ONNX Runtime, on each fold's held-out training images"}


def _held_out_rows(run: RunDir, ids: np.ndarray) -> dict[int, np.ndarray]:
    """Each fold's held-out rows of the training table, from the run's oof.csv (none without one: a refit)."""
    if not run.oof_path.is_file():
        return {}
    oof = read_predictions(run.oof_path, oof=True)
    position = pd.Series(np.arange(len(ids)), index=ids)
    known = oof[oof["id"].isin(position.index)]
    return {int(fold): position.loc[group["id"]].to_numpy() for fold, group in known.groupby("fold")}


def _copy_stack_models(recipe: StackRecipe, run: RunDir) -> None:
    """A stack's ``stack.json`` and its fold models, written from the recipe as it was loaded (and checked)."""
    run.write_stack_recipe(recipe.record)
    suffix = MODEL_SUFFIX[recipe.record.model]
    for index, fold in enumerate(recipe.folds):
        for block, fitted in enumerate(fold.blocks):
            write_text(run.fold(index).stack_model(block, suffix), fitted.text())


def _write_manifest(folder: Path, recipe: Recipe, timing: Timing | None, extra: dict) -> tuple[dict, int]:
    """``manifest.json`` listing every other file; returns the listing and the bundle's size in bytes."""
    files = {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
             for name in sorted(bundle_files(folder))}
    size = sum(entry["bytes"] for entry in files.values())
    write_json(folder / MANIFEST, {
        "kagglecv_bundle": BUNDLE_FORMAT,
        "kind": "run" if isinstance(recipe, RunRecipe) else recipe.run.read_info().kind,
        "source": str(recipe.run.path), "created": datetime.now().isoformat(timespec="seconds"),
        "versions": package_versions(), "task": recipe.task, "classes": recipe.classes,
        "size_bytes": size,
        "timing": None if timing is None else {"synthetic_images": timing.images, "fixed_seconds": timing.fixed,
                                               "seconds_per_image": timing.per_image},
        **extra, "files": files,
    })
    return files, size


def fit_budget(images: int | None, max_minutes: float | None, device_speed: float | None) -> Budget:
    """``--fit``'s budget; each of its three numbers is the user's (the target device's speed is never guessed)."""
    missing = [flag for flag, value in (("--images", images), ("--max-minutes", max_minutes),
                                        ("--device-speed", device_speed)) if value is None]
    if missing:
        raise KagglecvError(f"--fit needs {', '.join(missing)}: the hidden test's number of images, the notebook's "
                            "time limit in minutes, and how many times as fast as this machine the target device "
                            "runs these models (time `kagglecv infer` on both; kagglecv does not guess it)")
    if not (0 < device_speed < math.inf and 0 < max_minutes < math.inf):
        raise KagglecvError(f"--fit: --max-minutes {max_minutes:g} and --device-speed {device_speed:g} must be positive "
                            "finite numbers")
    return Budget(images, max_minutes, device_speed)


def fit_summary(fitted: FitResult) -> str:
    """One line: what ``--fit`` kept, its OOF score beside the whole recipe's, and its predicted time."""
    record = fitted.record
    kept = "; ".join(f"{entry['run']} [{', '.join(entry['views'])}]"
                     + (f" x{entry['weight']:.2f}" if len(record["chosen"]) > 1 else "") for entry in record["chosen"])
    dropped = len([unit for unit in record["units"] if not unit["kept"]])
    return (f"fit: kept {kept} ({dropped} of {len(record['units'])} run x view units dropped); OOF {fitted.metric} "
            f"{fitted.oof_score:.4f} (whole recipe {fitted.full_score:.4f}); predicted {fitted.modelled_minutes:.2f} "
            f"of {record['max_minutes']:g} minutes for {record['images']} images at {record['device_speed']:g}x "
            "this machine")


def timing_warning(timing: Timing | None, images: int | None, max_minutes: float | None) -> str | None:
    """A warning when ``images`` hidden test images would take longer than ``max_minutes`` on this machine."""
    if timing is None or images is None or max_minutes is None:
        return None
    minutes = timing.seconds_for(images) / 60
    if minutes <= max_minutes:
        return None
    return (f"warning: {images} images would take about {minutes:.1f} minutes here, over --max-minutes "
            f"{max_minutes:g}; Kaggle's GPU may be faster, its CPU slower: drop TTA views, folds or members")


def bundle_readme(recipe: Recipe, name: str, has_wheels: bool, timing: Timing | None) -> str:
    """The README of a bundle: what it holds and the two notebook cells that install and run it offline."""
    kind = "run" if isinstance(recipe, RunRecipe) else \
        f"{'stack' if isinstance(recipe, StackRecipe) else 'ensemble'} of {len(recipe.members)} runs"
    install = (f"!pip install --no-index --find-links /kaggle/input/{name}/wheels kagglecv" if has_wheels else
               "# no wheelhouse in this bundle: attach kagglecv's wheels as another dataset, or pack with --wheels")
    speed = "" if timing is None else (
        f"\nMeasured when packed: {timing.per_image * 1000:.1f} s per 1,000 images plus {timing.fixed:.1f} s to load "
        f"the models ({timing.images} synthetic {leaf_runs(recipe)[0].config.model.img_size} px images, this "
        "bundle's every fold, view and member, on the packing machine).\n")
    return f"""# {recipe.run.name}: a kagglecv inference bundle

A {kind} ({recipe.task}, {len(recipe.classes)} classes), packed by `kagglecv pack` to predict a hidden test set
offline. Upload this folder as a Kaggle dataset named `{name}`, attach it to your notebook, turn the internet off,
and run these two cells (paths as Kaggle mounts them; change the competition's name):

```
{install}
```

```
!kagglecv infer /kaggle/input/{name} --test /kaggle/input/COMPETITION/test.csv \\
    --images /kaggle/input/COMPETITION/test --sample /kaggle/input/COMPETITION/sample_submission.csv \\
    --out /kaggle/working/submission.csv
```

`infer` first checks every file against `manifest.json` (sha256) and refuses an altered bundle.
{"The own-model file `model_code.py` is Python that runs when the models are built." if any(
    leaf.run.model_code() for leaf in leaf_runs(recipe)) else ""}{speed}"""
