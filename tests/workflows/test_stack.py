"""The table beside the image, on real data: coco128's 256 labelled images (downsampled to 64 px) and the real
per-image table of ``../shared/data/coco128-multilabel/objects.csv`` (object count, box cover, width, height;
orientation derived from the size), the target "a person is in the image" (from the real labels). A small image
run, the same with a fusion head over the table, and ``kagglecv stack`` on the image run's OOF predictions and the
table: the fusion run and the stack's nested score each beat the image run; the stack's score is what ``score``
computes and catches a planted leak that the in-sample score does not; ``pack`` + ``infer`` replay both on a
hidden test."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.core.config import FeaturesConfig, validate_config
from kagglecv.data.features import read_features
from kagglecv.second.design import DesignSpec
from kagglecv.second.models import ModelSettings
from kagglecv.second.stacking import LevelOne, fit_stack
from tests.conftest import invoke, shared_dataset

pytestmark = pytest.mark.slow
runner = CliRunner()
FEATURES = {"numeric": ["n_objects", "box_cover", "width", "height"], "categorical": ["orientation"]}


@pytest.fixture(scope="module")
def person(tmp_path_factory) -> Path:
    """All 256 labelled coco128 images (both folders) with their objects.csv row; an image run and a fusion run
    (``model.features_head``) of 4 epochs on the same 3 folds, and a LightGBM stack of the image run."""
    source = shared_dataset("coco128-multilabel")
    root = tmp_path_factory.mktemp("person")
    objects = pd.read_csv(source / "objects.csv", dtype={"id": str})
    labels = pd.concat([pd.read_csv(source / name, dtype=str, keep_default_na=False)
                        for name in ("train.csv", "solution.csv")])
    objects = objects.merge(labels, on="id")
    objects["person"] = objects["labels"].str.split().apply(lambda names: int("person" in names))
    objects["orientation"] = np.select([objects.width > objects.height, objects.width < objects.height],
                                       ["landscape", "portrait"], "square")
    objects["image"] = objects["split"] + "/" + objects["id"] + ".jpg"
    for name in objects["image"]:  # downsampled once to 64 px: the runs see 32 px, and decoding 640 px JPEGs
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)  # every epoch would dominate the test
        Image.open(source / name).convert("RGB").resize((64, 64), Image.BILINEAR).save(root / "images" / name)
    columns = ["id", "image", *FEATURES["numeric"], *FEATURES["categorical"]]
    objects[[*columns, "person"]].to_csv(root / "train.csv", index=False)
    objects[objects.split == "test"][columns].to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": objects[objects.split == "test"]["id"], "person": 0.5}).to_csv(
        root / "sample_submission.csv", index=False)
    config = {"experiment": "img", "runs_dir": str(root / "runs"), "metric": "roc_auc",
              "data": {"train_csv": str(root / "train.csv"), "test_csv": str(root / "test.csv"),
                       "image_dir": str(root / "images"), "image_col": "image", "target": "person",
                       "features": FEATURES},
              "folds": {"n_splits": 3, "near_duplicates": "off", "file": str(root / "folds.csv")},
              "model": {"name": "test_resnet", "pretrained": False, "img_size": 32},
              "train": {"epochs": 4, "batch_size": 16, "num_workers": 0},
              "submit": {"sample": str(root / "sample_submission.csv"), "dir": str(root / "submissions")}}
    fusion = config | {"experiment": "fusion", "model": config["model"] | {"features_head": {"hidden": 32}}}
    for name, content in (("img", config), ("fusion", fusion)):
        (root / f"{name}.yaml").write_text(yaml.safe_dump(content))
        invoke("run", str(root / f"{name}.yaml"))
    invoke("stack", str(root / "runs" / "img"), "--name", "gbdt")
    return root


def truth(root: Path) -> pd.Series:
    return pd.read_csv(root / "train.csv", dtype={"id": str}).set_index("id")["person"]


def test_the_stack_beats_the_image_run_on_nested_oof_and_scores_as_sklearn(person):
    stack, image = person / "runs" / "stack-gbdt", person / "runs" / "img"
    oof, image_oof = (pd.read_csv(path / "oof.csv", dtype={"id": str}) for path in (stack, image))
    assert sorted(oof["id"]) == sorted(truth(person).index) and oof["id"].is_unique
    assert oof.set_index("id")["fold"].equals(image_oof.set_index("id")["fold"].loc[oof["id"]])  # the same folds
    nested = roc_auc_score(truth(person).loc[oof["id"]], oof["1"])
    alone = roc_auc_score(truth(person).loc[image_oof["id"]], image_oof["1"])
    report = json.loads((stack / "stack_score.json").read_text())
    assert abs(json.loads((stack / "score.json").read_text())["overall"] - nested) < 1e-9
    assert abs(report["nested"] - nested) < 1e-9 and abs(report["best_single"]["score"] - alone) < 1e-9
    assert nested > alone + 0.05, (nested, alone)   # the table carries what four epochs of images do not
    assert report["in_sample"] > nested             # scored on its own training rows: optimistic
    assert set(report["importance"]) >= {"img:1", "n_objects", "orientation"}
    assert json.loads((stack / "run.json").read_text())["kind"] == "stack"


def test_a_planted_leak_lifts_the_in_sample_score_but_not_the_nested_one(person):
    """A feature equal to the target on fold 0's rows only (noise elsewhere): a stack scored on its own training
    rows reports the leak as skill; the nested score, whose fold-0 model never saw fold 0, does not."""
    config = validate_config(yaml.safe_load((person / "img.yaml").read_text()))
    oof = pd.read_csv(person / "runs" / "img" / "oof.csv", dtype={"id": str})
    ids, folds, targets = oof["id"].to_numpy(), oof["fold"].to_numpy(), truth(person).loc[oof["id"]].to_numpy()
    noise = np.random.default_rng(0).integers(0, 2, len(ids))
    planted = np.where(folds == 0, targets, noise)
    train = pd.read_csv(person / "train.csv", dtype=str).set_index("id").loc[ids].reset_index()
    leaky_table = person / "planted.csv"
    train.assign(planted=planted).to_csv(leaky_table, index=False)

    def scores(numeric: list[str]) -> tuple[float, float]:
        features = FeaturesConfig(numeric=numeric, categorical=[])
        table = read_features(leaky_table, config.data, ids, features, None)
        spec = DesignSpec(["img:1"], numeric, [], False)
        fitted = fit_stack(spec, ModelSettings(kind="lightgbm"), "binary", 2, LevelOne(oof[["1"]].to_numpy(), table),
                           targets, folds, None)
        return roc_auc_score(targets, fitted.nested[:, 1]), roc_auc_score(targets, fitted.in_sample[:, 1])

    clean_nested, clean_in_sample = scores(["n_objects", "box_cover"])
    leaky_nested, leaky_in_sample = scores(["n_objects", "box_cover", "planted"])
    assert leaky_in_sample > clean_in_sample + 0.02, (leaky_in_sample, clean_in_sample)  # the naive number rises
    assert leaky_nested < clean_nested + 0.01, (leaky_nested, clean_nested)               # the honest one does not


def test_pack_and_infer_replay_the_stack_on_a_hidden_test(person, tmp_path):
    stack = person / "runs" / "stack-gbdt"
    invoke("pack", str(stack), "--out", str(tmp_path / "bundle"), "--timing-images", "0")
    hidden = pd.read_csv(person / "test.csv", dtype=str).iloc[::-1].head(40)  # another table: fewer rows, reordered
    hidden.to_csv(tmp_path / "hidden.csv", index=False)
    images = str(person / "images")
    invoke("infer", str(tmp_path / "bundle"), "--test", str(tmp_path / "hidden.csv"), "--images", images,
           "--out", str(tmp_path / "replayed.csv"))
    replayed = pd.read_csv(tmp_path / "replayed.csv", dtype={"id": str}).set_index("id")
    recorded = pd.read_csv(stack / "test.csv", dtype={"id": str}).set_index("id").loc[replayed.index]
    assert list(replayed.index) == list(hidden["id"])
    np.testing.assert_allclose(replayed.to_numpy(), recorded.to_numpy(), rtol=0, atol=2e-7)
    hidden.drop(columns=["box_cover"]).to_csv(tmp_path / "lacking.csv", index=False)
    result = runner.invoke(app, ["infer", str(tmp_path / "bundle"), "--test", str(tmp_path / "lacking.csv"),
                                 "--images", images, "--out", str(tmp_path / "refused.csv")])
    assert result.exit_code != 0 and "no column 'box_cover'" in str(result.exception), result.output
    assert not (tmp_path / "refused.csv").exists()


def test_submit_and_ensemble_take_the_stack_as_a_run(person):
    stack = person / "runs" / "stack-gbdt"
    invoke("submit", str(stack), "--sample", str(person / "sample_submission.csv"), "--out-dir",
           str(person / "submissions"))
    submission = pd.read_csv(person / "submissions" / "stack-gbdt.csv", dtype={"id": str})
    test = pd.read_csv(stack / "test.csv", dtype={"id": str})
    assert list(submission.columns) == ["id", "person"] and list(submission["id"]) == list(test["id"])
    np.testing.assert_allclose(submission["person"], test["1"], atol=1e-6)
    invoke("ensemble", str(person / "runs" / "img"), str(stack), "--method", "mean", "--name", "both")
    blended = pd.read_csv(person / "runs" / "ens-both" / "test.csv", dtype={"id": str}).set_index("id")
    image = pd.read_csv(person / "runs" / "img" / "test.csv", dtype={"id": str}).set_index("id")
    np.testing.assert_allclose(blended["1"], (image["1"] + test.set_index("id")["1"]).loc[blended.index] / 2,
                               atol=2e-6)


def test_the_fusion_head_beats_the_image_run_and_records_its_scaling_from_training_rows(person):
    oof = {name: pd.read_csv(person / "runs" / name / "oof.csv", dtype={"id": str}) for name in ("img", "fusion")}
    scores = {name: roc_auc_score(truth(person).loc[frame["id"]], frame["1"]) for name, frame in oof.items()}
    assert scores["fusion"] > scores["img"] + 0.03, scores
    train = pd.read_csv(person / "train.csv", dtype={"id": str}).set_index("id")
    folds = oof["fusion"].set_index("id")["fold"]
    scaling = json.loads((person / "runs" / "fusion" / "fold0" / "features.json").read_text())
    own = train.loc[folds[folds != 0].index, FEATURES["numeric"]].astype(float)
    np.testing.assert_allclose(scaling["inputs"]["means"], own.mean().to_numpy(), rtol=1e-9)  # fold 0's rows unseen
    assert scaling["levels"]["orientation"] == sorted(train.loc[own.index, "orientation"].unique())


def test_pack_and_infer_replay_the_fusion_run(person, tmp_path):
    run = person / "runs" / "fusion"
    invoke("pack", str(run), "--out", str(tmp_path / "bundle"), "--timing-images", "8")
    images = str(person / "images")
    hidden = pd.read_csv(person / "test.csv", dtype=str).iloc[::-1].head(30)
    hidden.to_csv(tmp_path / "hidden.csv", index=False)
    invoke("infer", str(tmp_path / "bundle"), "--test", str(tmp_path / "hidden.csv"), "--images", images,
           "--out", str(tmp_path / "replayed.csv"))
    replayed = pd.read_csv(tmp_path / "replayed.csv", dtype={"id": str}).set_index("id")
    recorded = pd.read_csv(run / "test.csv", dtype={"id": str}).set_index("id").loc[replayed.index]
    np.testing.assert_allclose(replayed.to_numpy(), recorded.to_numpy(), rtol=0, atol=1e-5)
    shifted = hidden.assign(n_objects=hidden["n_objects"].astype(int) + 30)  # the features reach the prediction
    shifted.to_csv(tmp_path / "shifted.csv", index=False)
    invoke("infer", str(tmp_path / "bundle"), "--test", str(tmp_path / "shifted.csv"), "--images", images,
           "--out", str(tmp_path / "shifted-out.csv"))
    moved = pd.read_csv(tmp_path / "shifted-out.csv", dtype={"id": str}).set_index("id").loc[replayed.index]
    assert np.abs(moved.to_numpy() - replayed.to_numpy()).max() > 1e-3


def test_embed_writes_what_each_fold_classifier_sees_in_the_oof_files_order(person):
    """``kagglecv embed``: a held-out row's embedding through its fold's classifier gives its OOF probability."""
    from safetensors.numpy import load_file

    run = person / "runs" / "img"
    invoke("embed", str(run))
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    listed = pd.read_csv(run / "embeddings" / "oof_ids.csv", dtype={"id": str})
    embedded = np.load(run / "embeddings" / "oof.npy", allow_pickle=False)
    assert listed["id"].tolist() == oof["id"].tolist() and listed["fold"].tolist() == oof["fold"].tolist()
    for fold in range(3):
        weights = load_file(str(run / f"fold{fold}" / "best.safetensors"))
        rows = (oof["fold"] == fold).to_numpy()
        logits = embedded[rows] @ weights["fc.weight"].T + weights["fc.bias"]
        np.testing.assert_allclose(1 / (1 + np.exp(-logits[:, 0])), oof.loc[rows, "1"], atol=1e-5)
        assert np.load(run / "embeddings" / f"test_fold{fold}.npy").shape == (128, embedded.shape[1])
    invoke("embed", str(person / "runs" / "fusion"))
    fused = np.load(person / "runs" / "fusion" / "embeddings" / "oof.npy")
    assert fused.shape == (256, embedded.shape[1] + 32)  # the image features and the table MLP's, joined


def test_a_stack_on_embeddings_is_nested_and_replayed_by_infer(person, tmp_path):
    run = person / "runs" / "img"
    if not (run / "embeddings" / "oof.npy").is_file():
        invoke("embed", str(run))
    invoke("stack", str(run), "--name", "emb", "--embeddings", "--rounds", "50")
    stack = person / "runs" / "stack-emb"
    recipe = json.loads((stack / "stack.json").read_text())
    assert len(recipe["embeddings"]) == np.load(run / "embeddings" / "oof.npy").shape[1]
    invoke("pack", str(stack), "--out", str(tmp_path / "bundle"), "--timing-images", "0")
    hidden = pd.read_csv(person / "test.csv", dtype=str).head(24)
    hidden.to_csv(tmp_path / "hidden.csv", index=False)
    invoke("infer", str(tmp_path / "bundle"), "--test", str(tmp_path / "hidden.csv"), "--images",
           str(person / "images"), "--out", str(tmp_path / "replayed.csv"))
    replayed = pd.read_csv(tmp_path / "replayed.csv", dtype={"id": str}).set_index("id")
    recorded = pd.read_csv(stack / "test.csv", dtype={"id": str}).set_index("id").loc[replayed.index]
    np.testing.assert_allclose(replayed.to_numpy(), recorded.to_numpy(), rtol=0, atol=1e-5)


def test_a_group_given_by_option_is_recorded_and_replayed(person, tmp_path):
    """``--group`` (not data.group_col) decides the group-relative columns; stack.json records that column, so
    ``infer`` builds the same design from the test table (whole: a group's statistics are over its rows there)."""
    invoke("stack", str(person / "runs" / "img"), "--name", "grouped", "--group", "orientation", "--rounds", "20")
    stack = person / "runs" / "stack-grouped"
    assert json.loads((stack / "stack.json").read_text())["group"] == "orientation"
    invoke("infer", str(stack), "--test", str(person / "test.csv"), "--images", str(person / "images"),
           "--out", str(tmp_path / "replayed.csv"))
    replayed = pd.read_csv(tmp_path / "replayed.csv", dtype={"id": str}).set_index("id")
    recorded = pd.read_csv(stack / "test.csv", dtype={"id": str}).set_index("id").loc[replayed.index]
    np.testing.assert_allclose(replayed.to_numpy(), recorded.to_numpy(), rtol=0, atol=2e-7)
