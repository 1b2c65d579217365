"""A whale-shaped competition (the 2018 whale playground's files: ``train.csv`` of ``Image,Id``, ``new_whale`` for an
unlabelled individual, a sample of five ids a row, MAP@5) built from real CIFAR-10 images: each "individual" is one
CIFAR-10 photograph, and its images are augmentations of it (a shift of up to 3 px, a flip, brightness and JPEG
noise), one to four per individual, as Happywhale's are one to a few per whale. Unseen individuals (new photographs)
stand in for new whales: some labelled ``new_whale`` in the training table, others only in the test.

``init`` proposes the ArcFace head; ``run`` trains it and ranks by neighbours; a softmax run over the same ids
is beaten on OOF MAP@5; the tuned ``new_whale`` beats never predicting it and the submission carries it; ``score
--submission`` equals MLE-bench's MAP@5; ``pack`` + ``infer`` (and the bundle's notebook on a hidden test) replay
the run's test predictions."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from kagglecv.core.console import Console
from kagglecv.core.topk import blend_top_k, read_top_k
from kagglecv.core.wheelhouse import requirement_closure
from kagglecv.stages.infer import infer_test
from kagglecv.stages.pack import pack_run
from kagglecv.stages.score import score_submission
from tests.conftest import invoke, shared_dataset
from tests.stages.test_pack_infer import execute_offline

pytestmark = pytest.mark.slow
SETTINGS = ["-s", "model.name=test_resnet", "-s", "model.pretrained=false", "-s", "model.img_size=32", "-s", "train.epochs=4", "-s",
            "train.batch_size=16", "-s", "train.num_workers=0", "-s", "folds.n_splits=2", "-s",
            "folds.near_duplicates=off", "-s", "model.identity.width=64", "-s", "predict.identities.top_k=10",
            "-s", "predict.identities.neighbours=20"]


def mle_bench_map_at_5(solution: pd.DataFrame, submission: pd.DataFrame) -> float:
    """MLE-bench's ``whale-categorization-playground`` grade: rows sorted by Image, each truth a set of one id,
    Kaggle's ``apk`` (benhamner's ml_metrics: a repeated prediction counts once) averaged over rows."""
    answers, predicted = solution.sort_values("Image"), submission.sort_values("Image")
    total = 0.0
    for truth, cell in zip(answers["Id"], predicted["Id"]):
        labels, hits, score = cell.split(" ")[:5], 0, 0.0
        for place, label in enumerate(labels):
            if label == truth and label not in labels[:place]:
                hits += 1
                score += hits / (place + 1)
        total += score / min(1, 5)
    return total / len(answers)


def _variant(base: np.ndarray, rng: np.random.Generator) -> Image.Image:
    shifted = np.pad(base, ((3, 3), (3, 3), (0, 0)), mode="reflect")
    top, left = rng.integers(0, 7, 2)
    image = shifted[top:top + 32, left:left + 32].astype(np.float64) * rng.uniform(0.8, 1.2)
    image = image[:, ::-1] if rng.random() < 0.5 else image
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def whale_playground(root: Path, hidden_seed: int | None = None) -> tuple[Path, pd.DataFrame]:
    """The competition folder and the solution of its test rows (``hidden_seed``: a hidden test of new variants of
    the same individuals, for the notebook)."""
    cifar = shared_dataset("cifar10-mini")
    names = pd.read_csv(cifar / "train.csv", dtype=str)["id"].tolist()
    rng = np.random.default_rng(7)
    chosen = rng.permutation(len(names))[:130]
    bases = [np.asarray(Image.open(cifar / "train" / f"{names[i]}.jpg").convert("RGB")) for i in chosen]
    known, labelled_new, unseen = bases[:80], bases[80:100], bases[100:]
    whales = [f"w_{index:07x}" for index in rng.choice(16 ** 7, len(known), replace=False)]
    folder = root / "whale-categorization-playground"
    (folder / "train").mkdir(parents=True)
    (folder / "test").mkdir()
    draw = np.random.default_rng(11)
    train = []
    for whale, base in zip(whales, known):
        for _ in range(int(draw.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.2, 0.15]))):
            train.append((whale, base))
    train += [("new_whale", base) for base in labelled_new]
    test = [(whales[i], known[i]) for i in draw.permutation(len(known))[:50]] + [("new_whale", b) for b in unseen]
    draw = np.random.default_rng(hidden_seed) if hidden_seed is not None else draw
    rows = {"train": train, "test": test}
    tables = {}
    for split, entries in rows.items():
        ids = [f"{draw.integers(16 ** 8):08x}.jpg" for _ in entries]
        for image_id, (_, base) in zip(ids, entries):
            _variant(base, draw).save(folder / split / image_id, quality=90)
        tables[split] = pd.DataFrame({"Image": ids, "Id": [whale for whale, _ in entries]})
    tables["train"].to_csv(folder / "train.csv", index=False)
    sample = tables["test"].assign(Id="new_whale w_1287fbc w_98baff9 w_7554f44 w_1eafe46")
    sample.to_csv(folder / "sample_submission.csv", index=False)
    return folder, tables["test"]


def test_a_whale_playground_goes_through_init_and_run_with_arcface_neighbours_and_new_whale(tmp_path, monkeypatch):
    folder, solution = whale_playground(tmp_path / "input")
    monkeypatch.chdir(tmp_path)
    invoke("init", str(folder))
    config = yaml.safe_load((tmp_path / "whale-categorization-playground.yaml").read_text())
    assert config["model"]["identity"] == {"width": 512} and config["metric"] == "map@5"
    assert config["folds"]["method"] == "kfold"
    invoke("run", "whale-categorization-playground.yaml", *SETTINGS)
    invoke("run", "whale-categorization-playground.yaml", *SETTINGS, "-s", "experiment=softmax",
           "-s", "model.identity=null")
    runs = tmp_path / "runs"
    arcface = json.loads((runs / "whale-categorization-playground" / "score.json").read_text())
    softmax = json.loads((runs / "softmax" / "score.json").read_text())
    record = json.loads((runs / "whale-categorization-playground" / "identities.json").read_text())
    assert arcface["other_metrics"]["map_without_new_label"] > softmax["overall"] + 0.05
    assert arcface["overall"] > softmax["overall"]
    assert record["new_label"] == "new_whale" and record["oof_nested"] > record["oof_never"]
    assert arcface["overall"] == pytest.approx(record["oof_nested"], abs=1e-12)  # each fold at the others' threshold
    assert arcface["other_metrics"]["map_in_sample_threshold"] == pytest.approx(record["oof_tuned"], abs=1e-12)

    submission_path = tmp_path / "submissions" / "whale-categorization-playground.csv"
    submission = pd.read_csv(submission_path, dtype=str)
    assert submission["Id"].str.contains("new_whale").any()
    assert submission["Id"].str.split(" ").str.len().eq(5).all()
    solution.to_csv(tmp_path / "solution.csv", index=False)
    invoke("score", "--submission", str(submission_path), "--solution", str(tmp_path / "solution.csv"), "--metric",
           "map@5")
    expected = mle_bench_map_at_5(solution, submission)
    scored = score_submission(submission_path, tmp_path / "solution.csv", "map@5")
    assert scored == pytest.approx(expected, abs=1e-9) and expected > 0.2

    invoke("embed", "runs/whale-categorization-playground")  # the identity embeddings, for a second stage
    embedded = np.load(runs / "whale-categorization-playground" / "embeddings" / "oof.npy")
    assert embedded.shape == (len(pd.read_csv(folder / "train.csv")), 64) and np.isfinite(embedded).all()
    _assert_replayed(runs / "whale-categorization-playground", folder, tmp_path / "run-replayed.csv")
    _assert_held_out_rows_rank_only_identities_of_the_other_folds(runs / "whale-categorization-playground", folder)

    invoke("run", "whale-categorization-playground.yaml", *SETTINGS, "-s", "experiment=neighbours-only", "-s",
           "train.seed=7", "-s", "predict.identities.logit_weight=0")
    invoke("ensemble", "runs/whale-categorization-playground", "runs/neighbours-only", "--method", "weighted",
           "--weights", "2,1", "--name", "pair")
    members = [read_top_k(runs / name / "oof.csv") for name in ("whale-categorization-playground", "neighbours-only")]
    blended, pair = blend_top_k(members, np.array([2 / 3, 1 / 3]), 10), read_top_k(runs / "ens-pair" / "oof.csv")
    assert (pair.labels == blended.labels).all() and (pair.folds == members[0].folds).all()
    np.testing.assert_allclose(pair.scores, blended.scores, rtol=0, atol=1e-6)
    invoke("submit", "runs/ens-pair", "--sample", str(folder / "sample_submission.csv"))

    invoke("train", "whale-categorization-playground.yaml", "--full", *SETTINGS)
    refit = runs / "whale-categorization-playground-full"
    gallery = pd.read_csv(refit / "fold0" / "gallery.csv", dtype=str)
    train = pd.read_csv(folder / "train.csv", dtype=str)
    assert sorted(gallery["id"]) == sorted(train.loc[train["Id"] != "new_whale", "Image"])  # every known row
    assert read_top_k(refit / "test.csv").k == 10
    invoke("submit", str(refit), "--sample", str(folder / "sample_submission.csv"))

    everything = tuple(name for name in requirement_closure(["kagglecv"]) if name != "kagglecv")
    packed = pack_run(runs / "ens-pair", tmp_path / "out" / "whale-bundle", wheels=True, provided=everything,
                      timing_images=8, notebook=True, competition=folder.name)
    _assert_replayed(packed.path, folder, tmp_path / "replayed.csv", runs / "ens-pair")
    _the_notebook_predicts_a_hidden_test_offline(packed, tmp_path, monkeypatch)


def _assert_replayed(source: Path, folder: Path, out: Path, run: Path | None = None) -> None:
    """``infer`` on the public test gives the run's own test.csv: the same lists, scores to float32 rounding."""
    infer_test(source, folder / "sample_submission.csv", folder / "test", out, console=Console(quiet=True))
    replayed, recorded = read_top_k(out), read_top_k((run or source) / "test.csv")
    assert (replayed.ids == recorded.ids).all() and (replayed.labels == recorded.labels).all()
    np.testing.assert_allclose(replayed.scores, recorded.scores, rtol=0, atol=2e-6)


def _assert_held_out_rows_rank_only_identities_of_the_other_folds(run: Path, folder: Path) -> None:
    train = pd.read_csv(folder / "train.csv", dtype=str).set_index("Image")["Id"]
    oof = read_top_k(run / "oof.csv")
    for fold in np.unique(oof.folds):
        held = oof.folds == fold
        seen = set(train.loc[oof.ids[~held]]) - {"new_whale"}
        assert set(oof.labels[held].ravel()) <= seen


def _the_notebook_predicts_a_hidden_test_offline(packed, tmp_path: Path, monkeypatch) -> None:
    inputs, working = tmp_path / "kaggle" / "input", tmp_path / "kaggle" / "working"
    working.mkdir(parents=True)
    shutil.copytree(packed.path, inputs / "whale-bundle")
    hidden, _ = whale_playground(tmp_path / "hidden", hidden_seed=99)
    shutil.copytree(hidden, inputs / hidden.name, ignore=shutil.ignore_patterns("train", "train.csv"))
    execute_offline(packed.notebook / "submission.ipynb", inputs, working, tmp_path, monkeypatch)
    submission = pd.read_csv(working / "submission.csv", dtype=str)
    expected = tmp_path / "expected.csv"
    infer_test(packed.path, inputs / hidden.name / "sample_submission.csv", inputs / hidden.name / "test", expected,
               inputs / hidden.name / "sample_submission.csv", console=Console(quiet=True))
    pd.testing.assert_frame_equal(submission, pd.read_csv(expected, dtype=str))
    assert submission["Id"].str.contains("new_whale").any()
