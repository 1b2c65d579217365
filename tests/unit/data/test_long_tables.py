"""Long tables (one row per image and class): read into the wide form and written back in the sample's order, with
ids whose image part holds the separator (RSNA ICH's ``ID_12cadc6af``) or whose classes do (Bengali's
``grapheme_root``); and the weighted log loss RSNA ICH scores them by."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from kagglecv.core.metrics import get_metric
from kagglecv.data.long import long_test_ids, long_values, widen


def test_an_ich_long_table_widens_to_one_row_per_image_and_back_in_the_samples_order(tmp_path):
    subtypes = ["epidural", "subdural", "any"]
    images = ["ID_12cadc6af", "ID_38fd7baa0", "ID_6c5d82413"]
    labels = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 1]])
    long = pd.DataFrame({"ID": [f"{i}_{s}" for i in images for s in subtypes], "Label": labels.reshape(-1).astype(str)})
    wide, classes = widen(long.sample(frac=1, random_state=0), "ID", "Label", "{id}_{class}", tmp_path / "t.csv")
    assert classes == sorted(subtypes) and sorted(wide["ID"]) == images
    for image, row in zip(images, labels):
        assert wide.set_index("ID").loc[image, subtypes].astype(int).tolist() == row.tolist()
    predictions = wide.rename(columns={"ID": "id"}).assign(**{name: wide[name].astype(float) / 2 for name in classes})
    values = long_values(predictions, long["ID"], "{id}_{class}", classes, tmp_path / "sample.csv")
    np.testing.assert_array_equal(values, labels.reshape(-1) / 2)
    assert long_test_ids(long, "ID", "{id}_{class}", tmp_path / "s.csv")["ID"].tolist() == images


def test_known_classes_may_hold_the_separator(tmp_path):
    components = ["grapheme_root", "vowel_diacritic", "consonant_diacritic"]
    long = pd.DataFrame({"row_id": [f"Test_{i}_{c}" for i in range(2) for c in components], "target": "3"})
    wide, classes = widen(long, "row_id", "target", "{id}_{class}", tmp_path / "t.csv", components)
    assert wide["row_id"].tolist() == ["Test_0", "Test_1"] and classes == components


def test_the_weighted_log_loss_is_the_mean_over_images_of_the_weighted_class_losses():
    rng = np.random.default_rng(3)
    truth = (rng.uniform(size=(40, 6)) < 0.3).astype(int)
    scores = np.clip(truth * 0.5 + rng.uniform(0, 0.5, (40, 6)), 0.01, 0.99)
    weights = np.array([2, 1, 1, 1, 1, 1.0])
    per_class = np.array([[log_loss([t], [p], labels=[0, 1]) for t, p in zip(row_t, row_p)]
                          for row_t, row_p in zip(truth, scores)])
    expected = np.mean(per_class @ weights / weights.sum())
    assert get_metric("weighted_log_loss:0=2", "multilabel").score(truth, scores) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="class position"):
        get_metric("weighted_log_loss:x=2", "multilabel")
