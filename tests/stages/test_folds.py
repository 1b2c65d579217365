import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kagglecv.core.config import validate_config
from kagglecv.core.errors import KagglecvError
from kagglecv.data.load import load_train
from kagglecv.stages.folds import label_rate_deviation, make_folds
from tests.conftest import VOC_CLASSES, shared_dataset


def config_for(tmp_path, data: dict, **folds):
    folds.setdefault("file", str(tmp_path / "folds" / "f.csv"))
    return validate_config({"experiment": "t", "data": data, "folds": folds})


def gtsrb(tmp_path, **folds):
    root = shared_dataset("gtsrb-mini")
    data = {"train_csv": str(root / "train.csv"), "image_dir": str(root / "train"), "group_col": "track"}
    return config_for(tmp_path, data, **folds)


def voc(tmp_path, **folds):
    root = shared_dataset("voc2007-labels")
    return config_for(tmp_path, {"train_csv": str(root / "trainval_labels.csv"), "target": VOC_CLASSES}, **folds)


def test_gtsrb_tracks_never_cross_folds_and_classes_balance(tmp_path):
    config = gtsrb(tmp_path, method="stratified_group", n_splits=4)
    result = make_folds(config)
    data = load_train(config.data)
    written = pd.read_csv(result.path, dtype={"id": str})
    assert written["id"].tolist() == list(data.ids), "every id exactly once, in table order"
    folds = written["fold"].to_numpy()
    for track in np.unique(data.groups):
        assert len(np.unique(folds[data.groups == track])) == 1, f"track {track} straddles folds"
    for label in range(len(data.classes)):
        per_fold = np.bincount(folds[data.targets == label], minlength=4)
        assert per_fold.min() > 0


def test_gtsrb_stratified_group_with_five_folds_is_refused_naming_classes(tmp_path):
    with pytest.raises(KagglecvError, match=r"43 classes have fewer groups than folds \(n_splits=5\): '0': 4"):
        make_folds(gtsrb(tmp_path, method="stratified_group", n_splits=5))
    result = make_folds(gtsrb(tmp_path, method="stratified_group", n_splits=5, allow_rare_classes=True))
    assert any("fewer groups than folds" in note for note in result.report["warnings"])


def test_voc_multilabel_balance_no_worse_than_iterative_stratification(tmp_path):
    iterstrat = pytest.importorskip("iterstrat.ml_stratifiers")
    config = voc(tmp_path, method="multilabel", n_splits=5, seed=42)
    result = make_folds(config)
    positives = load_train(config.data).positives()
    ours = label_rate_deviation(positives, result.folds)
    theirs_folds = np.zeros(len(positives), dtype=int)
    splitter = iterstrat.MultilabelStratifiedKFold(n_splits=5, shuffle=True, random_state=42)
    for fold, (_, valid) in enumerate(splitter.split(positives, positives)):
        theirs_folds[valid] = fold
    theirs = label_rate_deviation(positives, theirs_folds)
    print(f"largest label-rate deviation on VOC2007 trainval: kagglecv {ours:.5f}, iterative-stratification {theirs:.5f}")
    assert ours <= theirs
    assert result.report["max_rate_deviation"] == pytest.approx(ours)


def test_multilabel_with_groups_keeps_groups_whole_and_stays_balanced(tmp_path):
    root = shared_dataset("voc2007-labels")
    frame = pd.read_csv(root / "trainval_labels.csv", dtype={"id": str})
    frame["video"] = [f"v{i // 4}" for i in range(len(frame))]  # runs of 4 consecutive images share a group
    frame.to_csv(tmp_path / "grouped.csv", index=False)
    data = {"train_csv": str(tmp_path / "grouped.csv"), "target": VOC_CLASSES, "group_col": "video"}
    grouped = make_folds(config_for(tmp_path, data, method="multilabel_group"))
    plain = make_folds(config_for(tmp_path, data, method="multilabel", file=str(tmp_path / "plain.csv")))
    for video in frame["video"].unique():
        assert len(np.unique(grouped.folds[(frame["video"] == video).to_numpy()])) == 1
    print(f"deviation: multilabel_group {grouped.report['max_rate_deviation']:.5f}, "
          f"multilabel {plain.report['max_rate_deviation']:.5f}")
    assert grouped.report["max_rate_deviation"] <= 0.01  # iterative-stratification's own plain split: ~0.012


def test_same_seed_same_bytes_and_existing_file_is_kept_or_protected(tmp_path):
    first = make_folds(voc(tmp_path, method="multilabel", file=str(tmp_path / "a.csv")))
    second = make_folds(voc(tmp_path, method="multilabel", file=str(tmp_path / "b.csv")))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    before = (tmp_path / "a.csv").stat().st_mtime_ns
    again = make_folds(voc(tmp_path, method="multilabel", file=str(tmp_path / "a.csv")))
    assert not again.written and (tmp_path / "a.csv").stat().st_mtime_ns == before
    with pytest.raises(KagglecvError, match=r"a\.csv exists and was made with other settings \(seed\)"):
        make_folds(voc(tmp_path, method="multilabel", file=str(tmp_path / "a.csv"), seed=1))
    forced = make_folds(voc(tmp_path, method="multilabel", file=str(tmp_path / "a.csv"), seed=1), force=True)
    assert forced.written and not np.array_equal(forced.folds, first.folds)
    assert second.report["table_sha256"] == first.report["table_sha256"]


def test_identical_images_under_different_ids_share_a_fold(tmp_path, tiny_multiclass):
    image_dir = tmp_path / "train"
    frame = pd.read_csv(tmp_path / "train.csv", dtype=str)
    copies = {"copy_a": "0000", "copy_b": "0005", "copy_c": "0005"}
    for new_id, original in copies.items():
        shutil.copy(image_dir / f"{original}.png", image_dir / f"{new_id}.png")
    frame = pd.concat([frame, pd.DataFrame({"id": list(copies), "label": ["cat", "dog", "dog"]})])
    frame.to_csv(tmp_path / "train.csv", index=False)
    config = validate_config(tiny_multiclass | {"folds": tiny_multiclass["folds"] | {"near_duplicates": "off"}})
    result = make_folds(config)
    fold = dict(zip(pd.read_csv(result.path, dtype=str)["id"], result.folds))
    assert fold["copy_a"] == fold["0000"]
    assert fold["copy_b"] == fold["copy_c"] == fold["0005"]
    report = json.loads(result.path.with_suffix(".json").read_text())
    assert sorted(map(sorted, report["duplicates"]["exact_clusters"])) == [["0000", "copy_a"], ["0005", "copy_b", "copy_c"]]
    assert report["effective_method"] == "stratified_group"


def test_near_duplicates_are_reported_and_can_be_grouped(tmp_path, tiny_multiclass):
    from PIL import Image

    image_dir = tmp_path / "train"
    pixels = np.asarray(Image.open(image_dir / "0003.png")).astype(int)
    pixels = np.kron(pixels[::4, ::4], np.ones((4, 4, 1), dtype=int))  # a blocky image phash sees clearly
    Image.fromarray(pixels.astype(np.uint8)).save(image_dir / "0003.png")
    Image.fromarray(np.clip(pixels + 3, 0, 255).astype(np.uint8)).save(image_dir / "0007.png")  # brighter copy
    config = validate_config(tiny_multiclass)
    warned = make_folds(config)
    assert ["0003", "0007", 0] in warned.report["duplicates"]["near_pairs"]
    config.folds.near_duplicates = "group"
    config.folds.file = tmp_path / "grouped.csv"
    grouped = make_folds(config)
    assert grouped.folds[3] == grouped.folds[7]
    assert grouped.report["duplicates"]["near_pairs_across_folds"] == []


def test_multilabel_method_on_multiclass_data_is_refused(tmp_path, tiny_multiclass):
    config = validate_config(tiny_multiclass | {"folds": {"method": "multilabel", "file": str(tmp_path / "x.csv")}})
    with pytest.raises(KagglecvError, match="multi-label targets, but the task is 'multiclass'"):
        make_folds(config)
    config = validate_config(tiny_multiclass | {"folds": {"method": "group", "file": str(tmp_path / "x.csv")}})
    with pytest.raises(KagglecvError, match="needs data.group_col"):
        make_folds(config)
