"""The embed stage: each fold model's pre-logit features of the rows it held out and of the test set.

``kagglecv embed RUN`` writes ``RUN/embeddings/``: ``oof.npy`` (one row per line of ``oof.csv``, in its order,
each by the fold model that held the row out), ``oof_ids.csv`` (``id``, ``fold`` of those rows), ``test_fold<K>.npy``
(fold K's model on every test row, in ``test_ids.csv``'s order: each fold's features live in its own model's space)
and ``embeddings.json`` (the width, the folds and the weights each used). Arrays are float32 ``.npy`` files, read
back without pickle. The folder is written whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import atomic_folder, write_csv, write_json
from kagglecv.core.predictions import read_predictions
from kagglecv.core.topk import read_top_k
from kagglecv.data.features import with_features
from kagglecv.data.inputs import load_run_table
from kagglecv.data.load import load_test
from kagglecv.data.members import EMBEDDINGS
from kagglecv.nn.inference import FoldPredictor
from kagglecv.nn.recipe import RunRecipe, load_recipe, with_loader_settings


@dataclass
class EmbedResult:
    path: Path
    width: int
    oof_rows: int
    test_rows: int


def embed_run(source: Path, batch_size: int | None = None, workers: int | None = None,
              console: Console | None = None) -> EmbedResult:
    """Write ``source/embeddings/`` (see the module docstring) for a trained cross-validated run."""
    console = console or Console()
    recipe = load_recipe(Path(source))
    if not isinstance(recipe, RunRecipe) or recipe.format != "torch" or recipe.run.is_full_fit():
        raise KagglecvError(f"{source}: embed takes a trained cross-validated run (its fold models), not an "
                            "ensemble, stack, full refit or ONNX bundle")
    run = recipe.run.for_writing("embed")
    config = recipe.config
    data = load_run_table(run, config, with_images=True)
    oof = _held_out_ids(run, recipe.classes)
    position = pd.Series(np.arange(len(data)), index=data.ids)
    rows, folds = position.loc[oof["id"]].to_numpy(), oof["fold"].to_numpy()
    test = _test_table(config, recipe)
    predictor = FoldPredictor(with_loader_settings(config, batch_size, workers), run, recipe.task, recipe.classes)
    held_out, per_fold_test = None, {}
    for fold in sorted(recipe.sources):
        model = predictor.load(fold, recipe.sources[fold])
        mine = np.flatnonzero(folds == fold)
        values = predictor.embeddings(model, data.images, rows[mine], data.features)
        held_out = np.zeros((len(oof), values.shape[1]), dtype=np.float32) if held_out is None else held_out
        held_out[mine] = values
        if test is not None:
            per_fold_test[fold] = predictor.embeddings(model, test.images, np.arange(len(test)), test.features)
        console.line(f"{run.name} fold {fold}: embedded {len(mine)} held-out rows"
                     + (f" and {len(test)} test rows" if test is not None else ""))
    with atomic_folder(run.path / EMBEDDINGS, replace=True) as building:
        np.save(building / "oof.npy", held_out)
        write_csv(building / "oof_ids.csv", pd.DataFrame({"id": oof["id"], "fold": folds}))
        for fold, values in per_fold_test.items():
            np.save(building / f"test_fold{fold}.npy", values.astype(np.float32))
        if test is not None:
            write_csv(building / "test_ids.csv", pd.DataFrame({"id": test.ids}))
        write_json(building / "embeddings.json", {"width": int(held_out.shape[1]), "folds": sorted(recipe.sources),
                                                  "sources": {str(k): v for k, v in recipe.sources.items()},
                                                  "oof_rows": len(oof), "test_rows": 0 if test is None else len(test)})
    return EmbedResult(run.path / EMBEDDINGS, int(held_out.shape[1]), len(oof), 0 if test is None else len(test))


def _held_out_ids(run, classes: list[str]) -> pd.DataFrame:
    """``id`` and ``fold`` of the run's OOF rows, from its class-column or its top-k ``oof.csv`` (identities)."""
    if run.identities_path.is_file():
        top = read_top_k(run.oof_path)
        return pd.DataFrame({"id": top.ids, "fold": top.folds})
    return read_predictions(run.oof_path, classes, oof=True)[["id", "fold"]]


def _test_table(config, recipe: RunRecipe):
    if not config.data.has_test():
        return None
    test = load_test(config.data, recipe.classes, recipe.task)
    return with_features(test, config.data) if config.model.features_head is not None else test
