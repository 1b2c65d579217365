"""COCO-style label files (Herbarium, iNaturalist, iWildCam) read as the training and test tables, on real images:
CIFAR-10 JPEGs filed as Herbarium files them (``images/{category // 100:03d}/{category % 100:02d}/<id>.jpg``), and
coco128's real multi-label annotations."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kagglecv.core.config import DataConfig
from kagglecv.core.errors import DataError
from kagglecv.data.coco import read_coco_table
from kagglecv.data.load import load_test, load_train
from kagglecv.data.survey import survey_competition
from tests.conftest import shared_dataset

CATEGORIES = {"airplane": 1500, "automobile": 1501, "bird": 1502, "cat": 1503, "deer": 1504, "dog": 1505,
              "frog": 1506, "horse": 1507, "ship": 1508, "truck": 1509}


def herbarium(root: Path, rows: int = 40) -> tuple[Path, pd.DataFrame]:
    """train/metadata.json and train/images/ in Herbarium 2021's layout, from the first CIFAR-10 images; the
    annotations in another order than the images, as nothing promises they follow it."""
    source = shared_dataset("cifar10-mini")
    table = pd.read_csv(source / "train.csv", dtype=str).head(rows)
    images, annotations = [], []
    for index, (image_id, label) in enumerate(zip(table["id"], table["label"])):
        category = CATEGORIES[label]
        name = f"images/{category // 100:03d}/{category % 100:02d}/{image_id}.jpg"
        (root / "train" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "train" / f"{image_id}.jpg", root / "train" / name)
        images.append({"id": index * 7, "file_name": name, "license": 0})
        annotations.append({"id": index, "image_id": index * 7, "category_id": category, "institution_id": 3})
    categories = [{"id": number, "name": name, "family": "x"} for name, number in CATEGORIES.items()]
    metadata = {"images": images, "annotations": annotations[::-1], "categories": categories, "info": {}}
    (root / "train" / "metadata.json").write_text(json.dumps(metadata))
    return root / "train" / "metadata.json", table


def config_of(metadata: Path, **extra) -> DataConfig:
    return DataConfig(train_csv=metadata, image_dir=metadata.parent, image_col="image", target="label", **extra)


def test_a_herbarium_label_file_is_the_training_table_with_every_image_once(tmp_path):
    metadata, table = herbarium(tmp_path)
    data = load_train(config_of(metadata))
    assert list(data.ids) == [str(index * 7) for index in range(len(table))]
    expected = [str(CATEGORIES[label]) for label in table["label"]]
    assert [data.classes[target] for target in data.targets] == expected  # the category ids the sample wants
    assert all(Path(image).is_file() and f"/{Path(image).stem}." in f"/{Path(image).name}" for image in data.images)
    assert [Path(image).stem for image in data.images] == list(table["id"])
    named = load_train(config_of(metadata, coco_label="name"))
    assert [named.classes[target] for target in named.targets] == list(table["label"])


def test_a_test_label_file_without_annotations_is_the_test_table(tmp_path):
    metadata, _ = herbarium(tmp_path)
    document = json.loads(metadata.read_text())
    test_dir = tmp_path / "test"
    shutil.copytree(tmp_path / "train" / "images", test_dir / "images")
    (test_dir / "metadata.json").write_text(json.dumps({"images": document["images"][:5], "info": {}}))
    config = config_of(metadata, test_csv=test_dir / "metadata.json", test_image_dir=test_dir)
    train = load_train(config)
    test = load_test(config, train.classes, train.task)
    assert list(test.ids) == ["0", "7", "14", "21", "28"] and test.targets is None
    assert all(Path(image).is_relative_to(test_dir) and Path(image).is_file() for image in test.images)


def test_several_categories_of_one_image_make_a_multilabel_row(tmp_path):
    """coco128's real labels, as the COCO annotations they came from: one annotation per object."""
    source = shared_dataset("coco128-multilabel")
    table = pd.read_csv(source / "train.csv", dtype=str, keep_default_na=False).head(30)
    table = table[table["labels"] != ""]
    names = sorted({name for cell in table["labels"] for name in cell.split()})
    images = [{"id": image_id, "file_name": f"{image_id}.jpg"} for image_id in table["id"]]
    annotations = [{"image_id": image_id, "category_id": names.index(name) + 1}
                   for image_id, cell in zip(table["id"], table["labels"]) for name in cell.split() * 2]
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(names)]
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    frame = read_coco_table(path, "name")
    assert list(frame["id"]) == list(table["id"])  # ids with leading zeros stay strings
    assert [set(cell.split()) for cell in frame["label"]] == [set(cell.split()) for cell in table["labels"]]
    data = load_train(DataConfig(train_csv=path, target="label", coco_label="name"), with_images=False)
    assert data.task == "multilabel" and data.classes == names
    present = (data.targets == 1).sum(axis=1)
    assert np.array_equal(present, [len(set(cell.split())) for cell in table["labels"]])


@pytest.mark.parametrize("document, message", [
    ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "category_id": 5}]},
     "annotations[0].image_id '2' is no image"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]}, "ids '1' appear more than once"),
    ({"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
      "annotations": [{"image_id": 1, "category_id": 5}]}, "1 images have no annotation: '2'"),
    ({"images": [{"id": 1.5, "file_name": "a.jpg"}]}, "images[0].id is 1.5"),
    ({"images": [{"id": 1}]}, "images[0] is {\"id\": 1}"),
    ({"images": "all"}, "expected a list under 'images'"),
    ([1, 2], "expected a JSON object"),
    ({"images": [{"id": 1, "file_name": "a\nb.jpg"}]}, "images[0].file_name"),
])
def test_a_broken_label_file_is_one_line_naming_the_file_the_place_and_the_value(tmp_path, document, message):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(document))
    with pytest.raises(DataError, match="metadata.json: .*" + re.escape(message)) as caught:
        read_coco_table(path)
    assert "\n" not in str(caught.value)


def test_a_file_name_leaving_the_folder_and_a_label_file_past_the_size_cap_are_refused(tmp_path):
    metadata, _ = herbarium(tmp_path, rows=4)
    document = json.loads(metadata.read_text())
    document["images"][1]["file_name"] = "../../outside.jpg"
    metadata.write_text(json.dumps(document))
    with pytest.raises(DataError, match="outside"):
        load_train(config_of(metadata))
    huge = tmp_path / "huge.json"
    with huge.open("wb") as stream:  # sparse: 1 GiB + 1 byte on disk costs nothing, reading it would
        stream.truncate((1 << 30) + 1)
    with pytest.raises(DataError, match="more than the 1,073,741,824 a label file may have"):
        read_coco_table(huge)


def test_data_import_coco_writes_the_table_run_reads_and_never_into_the_images_folder(tmp_path):
    from typer.testing import CliRunner

    from kagglecv.cli import app

    metadata, table = herbarium(tmp_path, rows=6)
    out = tmp_path / "train.csv"
    done = CliRunner().invoke(app, ["data", "import", "coco", str(metadata), "--out", str(out)])
    assert done.exit_code == 0, done.output
    written = pd.read_csv(out, dtype=str)
    pd.testing.assert_frame_equal(written, read_coco_table(metadata))
    inside = CliRunner().invoke(app, ["data", "import", "coco", str(metadata), "--out", str(metadata.parent / "t.csv")])
    assert "inside the input folder" in str(inside.exception) and not (metadata.parent / "t.csv").exists()


def test_init_reads_label_files_beside_the_sample_and_names_from_a_sample_of_names(tmp_path):
    """iNaturalist 2019's shape: train2019.json and test2019.json beside the sample, file names under train_val2019/;
    a sample holding names (not numbers) makes the rows' labels the category names."""
    metadata, table = herbarium(tmp_path / "build", rows=20)
    folder = tmp_path / "inat"
    shutil.copytree(tmp_path / "build" / "train" / "images", folder / "train_val2019")
    document = json.loads(metadata.read_text())
    for image in document["images"]:
        image["file_name"] = image["file_name"].replace("images/", "train_val2019/")
    (folder / "train2019.json").write_text(json.dumps(document))
    (folder / "test2019.json").write_text(json.dumps({"images": document["images"][:4]}))
    pd.DataFrame({"id": ["0", "7"], "predicted": ["cat", "dog"]}).to_csv(folder / "kaggle_sample_submission.csv",
                                                                         index=False)
    survey = survey_competition(folder, metric="accuracy")
    found = {finding.key: finding.value for finding in survey.findings}
    assert found["data.train_csv"] == folder / "train2019.json" and found["data.test_csv"] == folder / "test2019.json"
    assert found["data.coco_label"] == "name" and found["data.task"] == "multiclass"
    assert found["data.image_dir"] == folder and found["data.image_col"] == "image"
    config = DataConfig(train_csv=found["data.train_csv"], image_dir=found["data.image_dir"], image_col="image",
                        target="label", coco_label=found["data.coco_label"])
    assert sorted(set(load_train(config).classes)) == sorted(set(table["label"]))
