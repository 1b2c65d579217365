"""ISIC 2024 as it ships, with its metadata: ``train-metadata.csv`` holds the lesion's features, its patient, and
columns the test table lacks (``iddx_1`` restates the target, ``mel_thick_mm`` exists only for melanomas,
``tbp_lv_dnn_lesion_confidence`` is a model's output); images are JPEG bytes in HDF5; the metric is the
competition's pAUC above 80 % TPR in Kaggle's signature. ``init`` proposes the features, the patient group and the
leaks; ``run``, ``stack``, ``pack`` and ``infer`` follow with no hand edit, and the leaks are never used; the
bundle's notebook, run offline in a fresh kernel, predicts a hidden test from its own metadata table."""

import importlib.util
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from kagglecv.core.console import Console
from kagglecv.core.wheelhouse import requirement_closure
from kagglecv.stages.infer import infer_test
from kagglecv.stages.pack import pack_run
from tests.conftest import invoke
from tests.stages.test_pack_infer import execute_offline
from tests.workflows.kaggle_reader_shapes import _upsampled
from tests.workflows.kaggle_shapes import _csv, _splits
from tests.workflows.test_kaggle_as_it_ships import TINY

pytestmark = pytest.mark.slow
SITES = ["head/neck", "upper extremity", "lower extremity", "posterior torso", "anterior torso"]
LEAKS = ["iddx_1", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"]
KAGGLE_PAUC = '''import numpy as np
import pandas as pd
from sklearn.metrics import auc, roc_curve


class ParticipantVisibleError(Exception):
    pass


def score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str, min_tpr: float = 0.80) -> float:
    del solution[row_id_column_name]
    del submission[row_id_column_name]
    if not pd.api.types.is_numeric_dtype(submission.values):
        raise ParticipantVisibleError("Submission target column must be numeric")
    v_gt = abs(np.asarray(solution.values) - 1)
    v_pred = -1.0 * np.asarray(submission.values)
    max_fpr = abs(1 - min_tpr)
    fpr, tpr, _ = roc_curve(v_gt, v_pred, sample_weight=None)
    stop = np.searchsorted(fpr, max_fpr, "right")
    x_interp = [fpr[stop - 1], fpr[stop]]
    y_interp = [tpr[stop - 1], tpr[stop]]
    tpr = np.append(tpr[:stop], np.interp(max_fpr, x_interp, y_interp))
    fpr = np.append(fpr[:stop], max_fpr)
    return auc(fpr, tpr)
'''


def _metadata(ids: list[str], digits: np.ndarray, patients: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    target = (digits >= 5).astype(int)
    patient_number = np.array([int(name.split("_")[1]) for name in patients])
    return pd.DataFrame({
        "isic_id": ids, "patient_id": patients, "age_approx": 30 + 5 * (patient_number % 9),
        "sex": np.where(patient_number % 2, "male", "female"),
        "anatom_site_general": [SITES[i % len(SITES)] for i in range(len(ids))],
        "tbp_lv_areaMM2": np.round(4 + 3 * target + rng.normal(0, 1.5, len(ids)), 3),
        "clin_size_long_diam_mm": np.round(rng.uniform(1, 10, len(ids)), 2)}), target


def _images(path: Path, ids: list[str], images: np.ndarray) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        for image_id, image in zip(ids, _upsampled(images, 64)):
            encoded = io.BytesIO()
            Image.fromarray(image).convert("RGB").save(encoded, format="JPEG", quality=95)
            handle[image_id] = np.bytes_(encoded.getvalue())


def isic_2024_with_metadata(root: Path) -> Path:
    folder, (train, test) = root / "isic-2024-challenge", _splits(41)
    folder.mkdir(parents=True)
    train_ids = [f"ISIC_{9_100_000 + i:07d}" for i in range(len(train.digits))]
    test_ids = [f"ISIC_{8_100_000 + i:07d}" for i in range(len(test.digits))]
    frame, target = _metadata(train_ids, train.digits, [f"IP_{i // 3}" for i in range(len(train_ids))], 1)
    frame["target"] = target
    frame["iddx_1"] = np.where(target == 1, "Malignant", "Benign")
    frame["mel_thick_mm"] = np.where(target == 1, "0.4", "")
    frame["tbp_lv_dnn_lesion_confidence"] = np.round(60 + 35 * target, 1)
    _csv(frame, folder / "train-metadata.csv")
    test_frame, _ = _metadata(test_ids, test.digits, [f"IP_{100 + i // 3}" for i in range(len(test_ids))], 2)
    _csv(test_frame, folder / "test-metadata.csv")
    _images(folder / "train-image.hdf5", train_ids, train.images)
    _images(folder / "test-image.hdf5", test_ids, test.images)
    _csv(pd.DataFrame({"isic_id": test_ids, "target": 0.3}), folder / "sample_submission.csv")
    (root / "pauc.py").write_text(KAGGLE_PAUC)
    return folder


def kaggle_pauc(root: Path):
    spec = importlib.util.spec_from_file_location("kaggle_pauc", root / "pauc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.score


def test_isic_2024_with_its_metadata_goes_through_init_run_stack_pack_and_infer(tmp_path, monkeypatch):
    folder = isic_2024_with_metadata(tmp_path / "input")
    monkeypatch.chdir(tmp_path)
    invoke("init", str(folder), "--metric", str(tmp_path / "input" / "pauc.py"), "--set", "metric_direction=maximize")
    config = yaml.safe_load((tmp_path / "isic-2024-challenge.yaml").read_text())
    assert config["data"]["group_col"] == "patient_id"
    assert config["data"]["features"] == {"numeric": ["age_approx", "tbp_lv_areaMM2", "clin_size_long_diam_mm"],
                                          "categorical": ["sex", "anatom_site_general"], "leaks": LEAKS}
    invoke("run", "isic-2024-challenge.yaml", *TINY)
    invoke("stack", "runs/isic-2024-challenge", "--name", "meta", "--min-rows", "5", "--rounds", "50")
    stack = tmp_path / "runs" / "stack-meta"
    recipe = json.loads((stack / "stack.json").read_text())
    used = set(recipe["numeric"]) | set(recipe["categorical"]) | set(" ".join(json.loads(
        (stack / "stack_score.json").read_text())["importance"]).split())
    assert recipe["group"] == "patient_id" and not used & set(LEAKS)
    train = pd.read_csv(folder / "train-metadata.csv", dtype={"isic_id": str}).set_index("isic_id")
    oof = pd.read_csv(stack / "oof.csv", dtype={"id": str}).set_index("id").loc[train.index]
    assert (oof.groupby(train["patient_id"])["fold"].nunique() == 1).all()  # patients whole
    expected = kaggle_pauc(tmp_path / "input")(pd.DataFrame({"id": oof.index, "target": train["target"]}),
                                               pd.DataFrame({"id": oof.index, "target": oof["1"]}), "id")
    assert json.loads((stack / "score.json").read_text())["overall"] == pytest.approx(expected, abs=1e-9)

    everything = tuple(name for name in requirement_closure(["kagglecv"]) if name != "kagglecv")
    packed = pack_run(stack, tmp_path / "out" / "isic-bundle", wheels=True, provided=everything, timing_images=8,
                      notebook=True, competition=folder.name)
    invoke("infer", str(packed.path), "--test", str(folder / "test-metadata.csv"), "--images", str(folder),
           "--out", str(tmp_path / "public.csv"))
    replayed = pd.read_csv(tmp_path / "public.csv", dtype={"id": str}).set_index("id")
    recorded = pd.read_csv(stack / "test.csv", dtype={"id": str}).set_index("id").loc[replayed.index]
    np.testing.assert_allclose(replayed.to_numpy(), recorded.to_numpy(), rtol=0, atol=2e-7)
    assert_the_notebook_predicts_a_hidden_test_offline(packed, folder.name, tmp_path, monkeypatch)


def assert_the_notebook_predicts_a_hidden_test_offline(packed, competition: str, tmp_path: Path, monkeypatch) -> None:
    """The bundle's notebook, executed in a fresh kernel with no network over a Kaggle tree whose competition folder
    holds a hidden test (new patients, new HDF5, its own metadata table), writes what ``infer`` writes."""
    inputs, working = tmp_path / "kaggle" / "input", tmp_path / "kaggle" / "working"
    working.mkdir(parents=True)
    shutil.copytree(packed.path, inputs / "isic-bundle")
    hidden = inputs / competition
    hidden.mkdir()
    _, test = _splits(43)
    ids = [f"ISIC_{7_100_000 + i:07d}" for i in range(len(test.digits))]
    hidden_table, _ = _metadata(ids, test.digits, [f"IP_{200 + i // 2}" for i in range(len(ids))], 3)
    _csv(hidden_table, hidden / "test-metadata.csv")
    _images(hidden / "test-image.hdf5", ids, test.images)
    _csv(pd.DataFrame({"isic_id": ids, "target": 0.3}), hidden / "sample_submission.csv")
    execute_offline(packed.notebook / "submission.ipynb", inputs, working, tmp_path, monkeypatch)
    submission = pd.read_csv(working / "submission.csv", dtype={"isic_id": str})
    assert submission["isic_id"].tolist() == ids and submission["target"].between(0, 1).all()
    expected = tmp_path / "expected.csv"
    infer_test(packed.path, hidden / "test-metadata.csv", hidden, expected, hidden / "sample_submission.csv",
               console=Console(quiet=True))
    pd.testing.assert_frame_equal(submission, pd.read_csv(expected, dtype={"isic_id": str}))
