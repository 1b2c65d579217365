"""The infer stage: replay a run's or an ensemble's test predictions on a new test table, offline.

A code competition swaps the public test set for a hidden one at scoring time. ``infer`` reads nothing but the run
(or ensemble, or a bundle made by ``kagglecv pack``) and the new table: each fold's chosen weights (raw or EMA), the
TTA views and space recorded by ``predict``, the fold mean, and for an ensemble every member replayed and blended
with the recorded method and weights. It never reads a folds file, a training table or a path of the training
machine, and writes only the file it is asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kagglecv.core.bundle import verify_bundle
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import remove_stale_temporaries, write_bytes
from kagglecv.core.outputs import OutputRule, csv_header
from kagglecv.core.predictions import prediction_frame, write_predictions
from kagglecv.core.topk import TopK, write_top_k
from kagglecv.data.submission import (
    SubmissionDecisions,
    decide_submission,
    encode_submission,
    identity_submission,
    scored_classes,
    scored_predictions,
    submission_from_predictions,
)
from kagglecv.data.table import CompetitionData
from kagglecv.nn.recipe import Recipe, leaf_runs, load_recipe, read_new_test


def check_infer_output(out: Path, recipe: Recipe, inputs: list, sample: Path | None) -> Path:
    """``out`` under the one output rule: none of the inputs, the run's own tables and folders, or a run folder; a
    CSV name; an existing file only when it is an earlier output of the same shape (the sample's header, or the
    prediction file's)."""
    if not Path(out).name.lower().endswith((".csv", ".csv.gz")):
        raise KagglecvError(f"--out {out}: expected a file name ending in .csv or .csv.gz")
    rule = OutputRule.of(inputs, configs=[leaf.config for leaf in leaf_runs(recipe)])
    headers = {prediction_header(recipe.classes)} | ({csv_header(Path(sample))} if sample is not None else set())
    return rule.file(Path(out), "--out", replace_if=lambda path: csv_header(path) in headers)


def prediction_header(classes: list[str]) -> str:
    """The header line of a prediction file with these classes, as ``write_predictions`` writes it."""
    return prediction_frame([], np.zeros((0, len(classes))), classes).to_csv(index=False).splitlines()[0]


@dataclass
class InferResult:
    path: Path
    rows: int
    seconds: float
    submission_format: str | None


def write_inferred(recipe: Recipe, test: CompetitionData, probabilities: np.ndarray, out: Path,
                   sample: Path | None, decisions: SubmissionDecisions) -> str | None:
    """A submission in the sample's shape (checked as ``submit`` checks it), or the run's prediction-file shape."""
    if sample is None:
        write_predictions(out, test.ids, probabilities, recipe.classes)
        return None
    frame, classes, task = scored_predictions(prediction_frame(test.ids, probabilities, recipe.classes), recipe.classes,
                                              recipe.task, leaf_runs(recipe)[0].config.data)
    return submission_from_predictions(test.ids, frame[classes].to_numpy(), classes, task, test.source, Path(sample),
                                       out, decisions, test.answers)


def is_identity_recipe(recipe: Recipe) -> bool:
    """A ``model.identity`` run, or an ensemble of them: its predictions are top-k files."""
    return recipe.run.identities_path.is_file()


def write_inferred_identities(recipe: Recipe, top: TopK, out: Path, sample: Path | None) -> str | None:
    """An identity run's submission in the sample's shape, or its top-k prediction file."""
    if sample is None:
        write_top_k(out, top)
        return None
    frame = identity_submission(top, recipe.run.read_identity_record(), recipe.classes, Path(sample), out)
    write_bytes(out, encode_submission(frame, str(out).endswith(".gz")))
    return "top_k"


def infer_test(source: Path, table: Path | None, images: Path | None, out: Path, sample: Path | None = None, *,
               threshold: float | None = None, batch_size: int | None = None, workers: int | None = None,
               console: Console | None = None) -> InferResult:
    """Predict ``table`` with the run, ensemble or bundle at ``source``; write ``out`` (checked, whole or absent).

    Without a table, the test set is the sample's rows (its ids, in its order), else the image files of ``images``.
    """
    console = console or Console()
    if table is None and sample is None and images is None:
        raise KagglecvError("infer: no test set; give --test TABLE, or --sample (its rows are the test ids), or --images "
                            "(its image files are the test set)")
    table = table if table is not None else sample
    verify_bundle(Path(source))
    recipe = load_recipe(Path(source))
    out = check_infer_output(Path(out), recipe, [source, table, images, sample], sample)
    remove_stale_temporaries(out.parent, prefix=f".{out.name}.")
    decisions = decide_submission(recipe.run, *scored_classes(recipe.classes, recipe.task,
                                                              leaf_runs(recipe)[0].config.data), threshold=threshold)
    decisions.thresholds_for()  # tuned or read now: a bad threshold file fails before the test set is predicted
    test = read_new_test(recipe, table, images)
    started = time.perf_counter()
    if is_identity_recipe(recipe):
        top = recipe.predict_identities(test, console, batch_size, workers)
        seconds = time.perf_counter() - started
        fmt = write_inferred_identities(recipe, top, Path(out), sample)
    else:
        probabilities = recipe.predict(test, console, batch_size, workers)
        seconds = time.perf_counter() - started
        fmt = write_inferred(recipe, test, probabilities, Path(out), sample, decisions)
    console.line(f"{len(test)} images in {seconds:.1f} s ({len(test) / max(seconds, 1e-9):.0f} images/s): wrote {out}")
    return InferResult(Path(out), len(test), seconds, fmt)
