"""A single-label submission's "other" answer (UBC-OCEAN's ``Other``, a class absent from training): the threshold
tuned exactly on OOF by leaving each row's own class out, applied by ``submit``, recorded by ``pack`` and replayed
by ``infer``; a recorded label that is a class is refused."""

import json

import numpy as np
import pandas as pd
import pytest

from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.core.metrics import tune_other_threshold
from kagglecv.core.shapes import checked_other
from kagglecv.stages.folds import make_folds
from kagglecv.stages.infer import infer_test
from kagglecv.stages.pack import pack_run
from kagglecv.stages.predict import predict_run
from kagglecv.stages.submit import write_submission
from kagglecv.stages.train import train_run
from tests.conftest import tiny_config

QUIET = Console(quiet=True)


def _accuracy(probabilities, targets, share, threshold):
    rows = np.arange(len(targets))
    seen = ((probabilities.argmax(axis=1) == targets) & (probabilities.max(axis=1) >= threshold)).mean()
    left = probabilities.copy()
    left[rows, targets] = 0.0
    unseen = (left.max(axis=1) / (1.0 - probabilities[rows, targets]) < threshold).mean()
    return (1 - share) * seen + share * unseen


def test_the_other_threshold_is_the_best_of_every_threshold_by_brute_force():
    rng = np.random.default_rng(4)
    targets = rng.integers(0, 6, 300)
    logits = rng.normal(size=(300, 6))
    logits[np.arange(300), targets] += rng.uniform(0, 4, 300)  # confident where right, as a trained model is
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for share in (0.05, 0.2, 0.5):
        threshold, best, never = tune_other_threshold(probabilities, targets, share)
        grid = np.r_[np.linspace(0, 1, 4001), probabilities.max(axis=1)]
        assert best == pytest.approx(max(_accuracy(probabilities, targets, share, t) for t in grid), abs=1e-12)
        assert best == pytest.approx(_accuracy(probabilities, targets, share, threshold), abs=1e-12)
        assert never == pytest.approx(_accuracy(probabilities, targets, share, 0.0), abs=1e-12) and best > never


@pytest.mark.slow
def test_submit_pack_and_infer_write_other_below_the_tuned_threshold(tmp_path, digits_root):
    raw = tiny_config(tmp_path, digits_root, rows=128, train={"epochs": 6},
                      submit={"other_label": "Other", "other_share": 0.1})
    config = validate_config(raw)
    make_folds(config)
    train_run(config, console=QUIET, predict_test=False)
    predict_run(config.run_dir, console=QUIET)
    sample = tmp_path / "sample.csv"
    test = pd.read_csv(tmp_path / "test.csv", dtype=str)
    pd.DataFrame({"id": test["id"], "label": "zero"}).to_csv(sample, index=False)
    submitted = pd.read_csv(write_submission(config.run_dir, sample, out_dir=tmp_path / "subs").path, dtype=str)
    probabilities = pd.read_csv(config.run_dir / "test.csv", dtype={"id": str}).set_index("id").loc[test["id"]]

    bundle = pack_run(config.run_dir, tmp_path / "bundle", timing_images=0).path
    recorded = json.loads((bundle / "other.json").read_text())
    oof = pd.read_csv(config.run_dir / "oof.csv", dtype={"id": str})
    train = pd.read_csv(tmp_path / "train.csv", dtype=str).set_index("id").loc[oof["id"]]
    classes = list(probabilities.columns)
    expected = tune_other_threshold(oof[classes].to_numpy(), np.array([classes.index(c) for c in train["label"]]), 0.1)
    assert recorded == {"label": "Other", "threshold": pytest.approx(min(expected[0], 1.0), abs=1e-6)}
    under = probabilities.max(axis=1).to_numpy() < recorded["threshold"]
    assert (submitted["label"] == "Other").to_numpy().tolist() == under.tolist()
    assert (submitted["label"][~under] == probabilities.idxmax(axis=1).to_numpy()[~under]).all()

    infer_test(bundle, tmp_path / "test.csv", digits_root / "digits" / "test", tmp_path / "inferred.csv", sample,
               console=QUIET)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "inferred.csv", dtype=str), submitted)
    assert 0 < under.sum() < len(under), under  # some rows routed, not all

    for record in ({"label": "one", "threshold": 0.5}, {"label": "Other", "threshold": 1.5}, {"label": "Other"}):
        with pytest.raises(DataError, match="other.json: expected"):
            checked_other(record, classes, bundle / "other.json")
    with pytest.raises(KagglecvError, match="submit.other_share: Input should be less than 1"):
        validate_config(raw | {"submit": {"other_label": "Other", "other_share": 1.5}})
