"""Kaggle image competitions rebuilt at tiny size in the exact shapes Kaggle ships them: the file names, the table
layouts, the id spellings, the image folders and the sample submission of each, with sklearn's digits as the
images. Each builder returns the folder, the metric to give ``init`` (None where the sample decides it), and the
planted solution of the test rows in the shape Kaggle's scorer reads."""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from PIL import Image

from kagglecv.workflows.demo import digit_images

TRAIN_ROWS, TEST_ROWS = 60, 14


@dataclass
class Competition:
    name: str
    folder: Path
    metric: str | None
    solution: pd.DataFrame
    fmt: str                     # the submission's value type: label, positive, probabilities, labels, top_k
    classes: list[str]


@dataclass
class _Split:
    images: np.ndarray
    digits: np.ndarray


def _splits(seed: int) -> tuple[_Split, _Split]:
    images, digits = digit_images()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))[: TRAIN_ROWS + TEST_ROWS]
    train, test = order[:TRAIN_ROWS], order[TRAIN_ROWS:]
    return _Split(images[train], digits[train]), _Split(images[test], digits[test])


def _save(folder: Path, names, images: np.ndarray, colour: bool = True, size: int = 32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, pixels in zip(names, images):
        image = Image.fromarray(pixels).resize((size, size), Image.NEAREST)
        (image.convert("RGB") if colour else image).save(folder / name)


def _hex_ids(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("0123456789abcdef"), 12)) for _ in range(count)]


def _csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def dog_breed(root: Path) -> Competition:
    """labels.csv (id,breed), train/ and test/ of <id>.jpg, no test table, a sample with one column per breed."""
    folder, (train, test) = root / "dog-breed-identification", _splits(1)
    breeds = ["affenpinscher", "beagle", "borzoi", "boxer", "chow", "collie", "dingo", "pug", "saluki", "whippet"]
    train_ids, test_ids = _hex_ids(TRAIN_ROWS, 1), _hex_ids(TEST_ROWS, 2)
    _csv(pd.DataFrame({"id": train_ids, "breed": np.array(breeds)[train.digits]}), folder / "labels.csv")
    _save(folder / "train", [f"{i}.jpg" for i in train_ids], train.images)
    _save(folder / "test", [f"{i}.jpg" for i in test_ids], test.images)
    _csv(pd.DataFrame({"id": test_ids} | {breed: 1 / len(breeds) for breed in breeds}),
         folder / "sample_submission.csv")
    solution = pd.DataFrame({"id": test_ids, "breed": np.array(breeds)[test.digits]})
    return Competition("dog-breed", folder, "log_loss", solution, "probabilities", breeds)


def aerial_cactus(root: Path) -> Competition:
    """train.csv (id,has_cactus) whose ids are file names, the images only in train.zip (members train/<id>) and
    test.zip (members <id> at its root), a sample of 0.5: as MLE-bench's prepare.py ships it."""
    folder, (train, test) = root / "aerial-cactus-identification", _splits(2)
    train_ids = [f"{i}.jpg" for i in _hex_ids(TRAIN_ROWS, 3)]
    test_ids = [f"{i}.jpg" for i in _hex_ids(TEST_ROWS, 4)]
    _csv(pd.DataFrame({"id": train_ids, "has_cactus": (train.digits >= 5).astype(int)}), folder / "train.csv")
    staging = root / ".aerial-cactus-staging"
    _save(staging / "train", train_ids, train.images)
    _save(staging / "test", test_ids, test.images)
    with zipfile.ZipFile(folder / "train.zip", "w") as archive:
        for name in train_ids:
            archive.write(staging / "train" / name, f"train/{name}")
    with zipfile.ZipFile(folder / "test.zip", "w") as archive:
        for name in test_ids:
            archive.write(staging / "test" / name, name)
    shutil.rmtree(staging)
    _csv(pd.DataFrame({"id": test_ids, "has_cactus": 0.5}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"id": test_ids, "has_cactus": (test.digits >= 5).astype(int)})
    return Competition("aerial-cactus", folder, "roc_auc", solution, "positive", ["0", "1"])


def _planet_tags(digit: int) -> str:
    tags = ["clear" if digit < 5 else "cloudy", "primary"]
    tags += ["water"] if digit % 2 == 0 else []
    tags += ["road"] if digit in (3, 6, 8) else []
    return " ".join(tags)


def planet(root: Path) -> Competition:
    """train_v2.csv (image_name,tags), train-jpg/, the test images in two folders, a tag-list sample."""
    folder, (train, test) = root / "planet-understanding-the-amazon-from-space", _splits(3)
    train_ids = [f"train_{i}" for i in range(TRAIN_ROWS)]
    test_ids = [f"test_{i}" for i in range(TEST_ROWS // 2)] + [f"file_{i}" for i in range(TEST_ROWS - TEST_ROWS // 2)]
    _csv(pd.DataFrame({"image_name": train_ids, "tags": [_planet_tags(d) for d in train.digits]}),
         folder / "train_v2.csv")
    _save(folder / "train-jpg", [f"{i}.jpg" for i in train_ids], train.images)
    half = TEST_ROWS // 2
    _save(folder / "test-jpg", [f"{i}.jpg" for i in test_ids[:half]], test.images[:half])
    _save(folder / "test-jpg-additional", [f"{i}.jpg" for i in test_ids[half:]], test.images[half:])
    _csv(pd.DataFrame({"image_name": test_ids, "tags": "primary clear"}), folder / "sample_submission_v2.csv")
    solution = pd.DataFrame({"image_name": test_ids, "tags": [_planet_tags(d) for d in test.digits]})
    return Competition("planet", folder, "f2_samples", solution, "labels",
                       ["clear", "cloudy", "primary", "road", "water"])


def plant_pathology(root: Path) -> Competition:
    """train.csv with one-hot columns, one images/ folder for train and test, test.csv, a one-column-per-class
    sample; scored by the mean column-wise ROC AUC."""
    folder, (train, test) = root / "plant-pathology-2020-fgvc7", _splits(4)
    classes = ["healthy", "multiple_diseases", "rust", "scab"]
    train_ids, test_ids = [f"Train_{i}" for i in range(TRAIN_ROWS)], [f"Test_{i}" for i in range(TEST_ROWS)]
    one_hot = np.eye(4, dtype=int)[train.digits % 4]
    _csv(pd.DataFrame({"image_id": train_ids} | dict(zip(classes, one_hot.T))), folder / "train.csv")
    _save(folder / "images", [f"{i}.jpg" for i in train_ids], train.images)
    _save(folder / "images", [f"{i}.jpg" for i in test_ids], test.images)
    _csv(pd.DataFrame({"image_id": test_ids}), folder / "test.csv")
    _csv(pd.DataFrame({"image_id": test_ids} | dict.fromkeys(classes, 0.25)), folder / "sample_submission.csv")
    solution = pd.DataFrame({"image_id": test_ids} | dict(zip(classes, np.eye(4, dtype=int)[test.digits % 4].T)))
    return Competition("plant-pathology", folder, "roc_auc_macro", solution, "probabilities", classes)


def cassava(root: Path) -> Competition:
    """train.csv (image_id,label) with ids like 1000015157.jpg and integer classes, no test table."""
    folder, (train, test) = root / "cassava-leaf-disease-classification", _splits(5)
    train_ids = [f"{1000015157 + 7 * i}.jpg" for i in range(TRAIN_ROWS)]
    test_ids = [f"{2216849948 + 3 * i}.jpg" for i in range(TEST_ROWS)]
    _csv(pd.DataFrame({"image_id": train_ids, "label": train.digits % 5}), folder / "train.csv")
    _save(folder / "train_images", train_ids, train.images)
    _save(folder / "test_images", test_ids, test.images)
    _csv(pd.DataFrame({"image_id": test_ids, "label": 4}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"image_id": test_ids, "label": test.digits % 5})
    return Competition("cassava", folder, "accuracy", solution, "label", [str(k) for k in range(5)])


def digit_recognizer(root: Path) -> Competition:
    """train.csv (label,pixel0..), test.csv of pixels only, a sample numbered ImageId 1..n."""
    folder, (train, test) = root / "digit-recognizer", _splits(6)
    pixels = [f"pixel{i}" for i in range(64)]
    _csv(pd.DataFrame({"label": train.digits}) .join(pd.DataFrame(train.images.reshape(TRAIN_ROWS, 64),
                                                                  columns=pixels)), folder / "train.csv")
    _csv(pd.DataFrame(test.images.reshape(TEST_ROWS, 64), columns=pixels), folder / "test.csv")
    _csv(pd.DataFrame({"ImageId": np.arange(1, TEST_ROWS + 1), "Label": 0}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"ImageId": np.arange(1, TEST_ROWS + 1), "Label": test.digits})
    return Competition("digit-recognizer", folder, "accuracy", solution, "label", [str(k) for k in range(10)])


def histopathologic(root: Path) -> Competition:
    """train_labels.csv (id,label 0/1), TIFF images, no test table, a sample of zeros (AUC, told by --metric)."""
    folder, (train, test) = root / "histopathologic-cancer-detection", _splits(7)
    train_ids, test_ids = _hex_ids(TRAIN_ROWS, 7), _hex_ids(TEST_ROWS, 8)
    _csv(pd.DataFrame({"id": train_ids, "label": (train.digits % 2).astype(int)}), folder / "train_labels.csv")
    _save(folder / "train", [f"{i}.tif" for i in train_ids], train.images)
    _save(folder / "test", [f"{i}.tif" for i in test_ids], test.images)
    _csv(pd.DataFrame({"id": test_ids, "label": 0}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"id": test_ids, "label": (test.digits % 2).astype(int)})
    return Competition("histopathologic", folder, "roc_auc", solution, "positive", ["0", "1"])


def aptos(root: Path) -> Competition:
    """train.csv (id_code,diagnosis 0..4), test.csv, PNG folders, a sample of zeros scored by QWK (labels from the
    expected grade, cut where the OOF predictions say)."""
    folder, (train, test) = root / "aptos2019-blindness-detection", _splits(8)
    train_ids, test_ids = _hex_ids(TRAIN_ROWS, 9), _hex_ids(TEST_ROWS, 10)
    _csv(pd.DataFrame({"id_code": train_ids, "diagnosis": train.digits // 2}), folder / "train.csv")
    _csv(pd.DataFrame({"id_code": test_ids}), folder / "test.csv")
    _save(folder / "train_images", [f"{i}.png" for i in train_ids], train.images)
    _save(folder / "test_images", [f"{i}.png" for i in test_ids], test.images)
    _csv(pd.DataFrame({"id_code": test_ids, "diagnosis": 0}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"id_code": test_ids, "diagnosis": test.digits // 2})
    return Competition("aptos", folder, "qwk_thresholds", solution, "label", [str(k) for k in range(5)])


def humpback(root: Path) -> Competition:
    """train.csv (Image,Id) with file-name ids and whale ids, a sample of five names per row (MAP@5)."""
    folder, (train, test) = root / "humpback-whale-identification", _splits(9)
    whales = ["new_whale"] + [f"w_{code}" for code in ("23a388d", "9b5109b", "9c506f6", "0369a5c", "1287fbc",
                                                      "98baff9", "7554f44", "1eafe46", "3de579a")]
    train_ids = [f"{i[:9]}.jpg" for i in _hex_ids(TRAIN_ROWS, 11)]
    test_ids = [f"{i[:9]}.jpg" for i in _hex_ids(TEST_ROWS, 12)]
    _csv(pd.DataFrame({"Image": train_ids, "Id": np.array(whales)[train.digits]}), folder / "train.csv")
    _save(folder / "train", train_ids, train.images)
    _save(folder / "test", test_ids, test.images)
    _csv(pd.DataFrame({"Image": test_ids, "Id": "new_whale w_23a388d w_9b5109b w_9c506f6 w_0369a5c"}),
         folder / "sample_submission.csv")
    solution = pd.DataFrame({"Image": test_ids, "Id": np.array(whales)[test.digits]})
    return Competition("humpback", folder, None, solution, "top_k", sorted(whales))


def cifar10(root: Path) -> Competition:
    """trainLabels.csv (id,label) with ids 1..n, PNG folders named by number, sampleSubmission.csv."""
    folder, (train, test) = root / "cifar-10", _splits(10)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    train_ids, test_ids = list(range(1, TRAIN_ROWS + 1)), list(range(1, TEST_ROWS + 1))
    _csv(pd.DataFrame({"id": train_ids, "label": np.array(names)[train.digits]}), folder / "trainLabels.csv")
    _save(folder / "train", [f"{i}.png" for i in train_ids], train.images)
    _save(folder / "test", [f"{i}.png" for i in test_ids], test.images)
    _csv(pd.DataFrame({"id": test_ids, "label": "cat"}), folder / "sampleSubmission.csv")
    solution = pd.DataFrame({"id": test_ids, "label": np.array(names)[test.digits]})
    return Competition("cifar-10", folder, "accuracy", solution, "label", names)


def spaced_class_names(root: Path) -> Competition:
    """Not a shape Kaggle ships: a ``file,species`` table whose species hold spaces (Plant Seedlings' own names,
    ``Common Chickweed``, ``Sugar beet``), PNG folders, a sample of one species per row, scored by micro F1 (Kaggle's
    MeanFScore). Plant Seedlings itself ships ``train/<species>/*.png`` with no table (MLE-bench's prepare.py), a
    layout ``init`` does not read yet; this checks that names with spaces stay names, never word lists."""
    folder, (train, test) = root / "spaced-class-names", _splits(12)
    species = ["Black-grass", "Charlock", "Cleavers", "Common Chickweed", "Common wheat", "Fat Hen",
               "Loose Silky-bent", "Maize", "Scentless Mayweed", "Sugar beet"]
    train_ids = [f"{i}.png" for i in _hex_ids(TRAIN_ROWS, 13)]
    test_ids = [f"{i}.png" for i in _hex_ids(TEST_ROWS, 14)]
    _csv(pd.DataFrame({"file": train_ids, "species": np.array(species)[train.digits]}), folder / "train.csv")
    _save(folder / "train", train_ids, train.images)
    _save(folder / "test", test_ids, test.images)
    _csv(pd.DataFrame({"file": test_ids, "species": "Sugar beet"}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"file": test_ids, "species": np.array(species)[test.digits]})
    return Competition("spaced-class-names", folder, "f1_micro", solution, "label", species)


KAGGLE_LOG_LOSS = '''"""Multi-class log loss as Kaggle scores it: each row rescaled to sum to one, clipped at 1e-15."""
import numpy as np
import pandas as pd


class ParticipantVisibleError(Exception):
    pass


def score(solution: pd.DataFrame, submission: pd.DataFrame, row_id_column_name: str) -> float:
    del solution[row_id_column_name]
    del submission[row_id_column_name]
    truth = solution.iloc[:, 0].astype(str)
    columns = [str(column) for column in submission.columns]
    if set(truth) - set(columns):
        raise ParticipantVisibleError("submission lacks a column for some true class")
    probabilities = np.clip(submission.to_numpy(dtype=float), 1e-15, 1 - 1e-15)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    rows = np.arange(len(truth))
    return float(-np.mean(np.log(probabilities[rows, [columns.index(name) for name in truth]])))
'''


def leaf_classification(root: Path) -> Competition:
    """train.csv (id,species) with integer ids, images/ for both, test.csv, one column per species, scored by the
    competition's own metric file in Kaggle's signature."""
    folder, (train, test) = root / "leaf-classification", _splits(11)
    species = ["Acer_Opalus", "Alnus_Rubra", "Betula_Pendula", "Cornus_Chinensis", "Fagus_Sylvatica",
               "Ilex_Aquifolium", "Magnolia_Salicifolia", "Populus_Nigra", "Quercus_Rubra", "Salix_Fragilis"]
    train_ids, test_ids = list(range(1, 2 * TRAIN_ROWS, 2)), list(range(2, 2 * TEST_ROWS + 1, 2))
    _csv(pd.DataFrame({"id": train_ids, "species": np.array(species)[train.digits]}), folder / "train.csv")
    _csv(pd.DataFrame({"id": test_ids}), folder / "test.csv")
    _save(folder / "images", [f"{i}.jpg" for i in train_ids + test_ids], np.concatenate([train.images, test.images]),
          colour=False)
    _csv(pd.DataFrame({"id": test_ids} | dict.fromkeys(species, 0.1)), folder / "sample_submission.csv")
    metric = root / "leaf_metric.py"
    metric.write_text(KAGGLE_LOG_LOSS)
    solution = pd.DataFrame({"id": test_ids, "species": np.array(species)[test.digits]})
    return Competition("leaf", folder, str(metric), solution, "probabilities", species)


def herbarium(root: Path) -> Competition:
    """No training table: train/metadata.json (COCO: images, annotations, categories) with images filed under
    images/{category // 100:03d}/{category % 100:02d}/, test/metadata.json (images only) with
    images/{index // 1000:03d}/{index}.jpg, a sample Id,Predicted of zeros: the category ids (MLE-bench's
    herbarium-2021-fgvc8 prepare.py, scored by macro F1)."""
    folder, (train, test) = root / "herbarium-2021-fgvc8", _splits(12)
    categories = [15504 + 17 * digit for digit in range(10)]
    images, annotations = [], []
    for index, (pixels, digit) in enumerate(zip(train.images, train.digits)):
        category = categories[digit]
        name = f"images/{category // 100:03d}/{category % 100:02d}/{100_000 + index}.jpg"
        _save(folder / "train" / Path(name).parent, [Path(name).name], [pixels])
        images.append({"file_name": name, "height": 32, "id": 100_000 + index, "license": 0, "width": 32})
        annotations.append({"category_id": category, "id": 100_000 + index, "image_id": 100_000 + index,
                            "institution_id": 0})
    listed = [{"family": "Melastomataceae", "id": category, "name": f"Miconia {category}", "order": "Myrtales"}
              for category in categories]
    (folder / "train" / "metadata.json").write_text(json.dumps(
        {"annotations": annotations, "categories": listed, "images": images, "info": {}, "licenses": []}))
    test_images = [{"file_name": f"images/{index // 1000:03d}/{index}.jpg", "id": str(index)}
                   for index in range(TEST_ROWS)]
    for record, pixels in zip(test_images, test.images):
        _save(folder / "test" / Path(record["file_name"]).parent, [Path(record["file_name"]).name], [pixels])
    (folder / "test" / "metadata.json").write_text(json.dumps({"images": test_images, "info": {}, "licenses": []}))
    _csv(pd.DataFrame({"Id": [str(index) for index in range(TEST_ROWS)], "Predicted": 0}),
         folder / "sample_submission.csv")
    solution = pd.DataFrame({"Id": [str(index) for index in range(TEST_ROWS)],
                             "Predicted": np.array(categories)[test.digits]})
    return Competition("herbarium", folder, "f1_macro", solution, "label", [str(c) for c in categories])


PAWPULARITY_FLAGS = ["Subject Focus", "Eyes", "Face", "Near", "Action", "Accessory", "Group", "Collage", "Human",
                     "Occlusion", "Info", "Blur"]


def _pawpularity(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A score from 1 to 100 that the image decides (its digit) up to noise, as whole numbers."""
    return np.clip(digits * 10 + 5 + rng.integers(-4, 5, len(digits)), 1, 100)


def petfinder_pawpularity(root: Path) -> Competition:
    """train.csv (Id, the 12 binary photo flags, Pawpularity 1-100), train/<Id>.jpg; test.csv of Id and the flags,
    test/; a sample of Id,Pawpularity; scored by RMSE (a code competition)."""
    folder, (train, test) = root / "petfinder-pawpularity-score", _splits(14)
    rng = np.random.default_rng(14)
    train_ids, test_ids = _hex_ids(TRAIN_ROWS, 140), _hex_ids(TEST_ROWS, 141)
    flags = {name: rng.integers(0, 2, TRAIN_ROWS) for name in PAWPULARITY_FLAGS}
    _csv(pd.DataFrame({"Id": train_ids} | flags | {"Pawpularity": _pawpularity(train.digits, rng)}),
         folder / "train.csv")
    _csv(pd.DataFrame({"Id": test_ids} | {name: rng.integers(0, 2, TEST_ROWS) for name in PAWPULARITY_FLAGS}),
         folder / "test.csv")
    _save(folder / "train", [f"{i}.jpg" for i in train_ids], train.images)
    _save(folder / "test", [f"{i}.jpg" for i in test_ids], test.images)
    _csv(pd.DataFrame({"Id": test_ids, "Pawpularity": 50}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"Id": test_ids, "Pawpularity": _pawpularity(test.digits, rng)})
    return Competition("petfinder", folder, "rmse", solution, "values", [])


def _breasts(count: int, seed: int, first_patient: int) -> pd.DataFrame:
    """RSNA Breast's table of images: patients with one or two breasts, two to four views (CC, MLO) each."""
    rng = np.random.default_rng(seed)
    rows, patient = [], first_patient
    while len(rows) < count:
        for laterality in ("L", "R")[: rng.integers(1, 3)]:
            for view in ("CC", "MLO", "CC", "MLO")[: rng.integers(2, 5)]:
                rows.append({"site_id": 1 + patient % 2, "patient_id": str(patient), "laterality": laterality,
                             "view": view, "age": str(40 + patient % 30)})
        patient += 7
    frame = pd.DataFrame(rows[:count])
    frame.insert(2, "image_id", [str(1_000_000 + 37 * index + seed) for index in range(len(frame))])
    return frame


def rsna_breast(root: Path) -> Competition:
    """train.csv (site_id, patient_id, image_id, laterality, view, age, cancer, ...): one row per image, 2-4 per
    breast; test.csv with prediction_id = patient_id_laterality; a sample of prediction_id,cancer scored by the
    probabilistic F1 over breasts. Images as train_images/<image_id>.png (the PNG re-uploads' layout; Kaggle ships
    DICOM under <patient_id>/)."""
    folder, (train, _) = root / "rsna-breast-cancer-detection", _splits(15)
    table, test_table = _breasts(TRAIN_ROWS, 1, 10006), _breasts(TEST_ROWS, 2, 90001)
    breast = table["patient_id"] + "_" + table["laterality"]
    cancer = breast.map({key: int(index % 3 == 0) for index, key in enumerate(breast.unique())})
    digits = np.where(cancer == 1, 1, 7)  # a cancerous breast's images are ones, the others sevens
    ones, sevens = train.images[train.digits == 1], train.images[train.digits == 7]
    pixels = np.stack([(ones if digit == 1 else sevens)[index % 3] for index, digit in enumerate(digits)])
    _csv(table.assign(cancer=cancer, biopsy=cancer, invasive=0, BIRADS="", implant=0, density="B", machine_id=49,
                      difficult_negative_case=False), folder / "train.csv")
    test_breast = test_table["patient_id"] + "_" + test_table["laterality"]
    test_cancer = test_breast.map({key: int(index % 2 == 0) for index, key in enumerate(test_breast.unique())})
    _csv(test_table.assign(implant=0, machine_id=49, prediction_id=test_breast), folder / "test.csv")
    pixels[:, 0, 0], test_pixels = np.arange(len(pixels)) % 256, None  # each file its own bytes: no duplicates
    _save(folder / "train_images", [f"{i}.png" for i in table["image_id"]], pixels)
    test_pixels = np.stack([(ones if flag else sevens)[index % 3] for index, flag in enumerate(test_cancer)])
    test_pixels[:, 0, 0] = np.arange(len(test_pixels)) % 256
    _save(folder / "test_images", [f"{i}.png" for i in test_table["image_id"]], test_pixels)
    breasts = test_breast.drop_duplicates()
    _csv(pd.DataFrame({"prediction_id": breasts, "cancer": 0}), folder / "sample_submission.csv")
    solution = pd.DataFrame({"prediction_id": breasts, "cancer": test_cancer.loc[breasts.index]})
    return Competition("rsna-breast", folder, "pf1", solution, "positive", ["0", "1"])


ICH_SUBTYPES = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"]


def _ich_labels(digits: np.ndarray) -> np.ndarray:
    """Images x the six subtypes, 0/1 decided by the digit (a subtype per digit below 5), ``any`` their union."""
    labels = np.zeros((len(digits), 6), dtype=int)
    present = digits < 5
    labels[np.flatnonzero(present), digits[present]] = 1
    labels[:, 5] = labels[:, :5].max(axis=1)
    return labels


def _long_rows(image_ids: list[str], labels: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"ID": [f"{image}_{subtype}" for image in image_ids for subtype in ICH_SUBTYPES],
                         "Label": labels.reshape(-1)})


def rsna_ich(root: Path) -> Competition:
    """stage_2_train.csv in long form (ID_<image>_<subtype>,Label: six rows per image), stage_2_train/ and
    stage_2_test/ of ID_<image> images (PNG here, DICOM on Kaggle), no test table, a long sample of
    ID_<image>_<subtype>,Label scored by the weighted log loss (``any`` weighs 2)."""
    folder, (train, test) = root / "rsna-intracranial-hemorrhage-detection", _splits(16)
    train_ids = [f"ID_{i}" for i in _hex_ids(TRAIN_ROWS, 160)]
    test_ids = [f"ID_{i}" for i in _hex_ids(TEST_ROWS, 161)]
    _csv(_long_rows(train_ids, _ich_labels(train.digits)), folder / "stage_2_train.csv")
    _save(folder / "stage_2_train", [f"{i}.png" for i in train_ids], train.images)
    _save(folder / "stage_2_test", [f"{i}.png" for i in test_ids], test.images)
    _csv(_long_rows(test_ids, np.full((TEST_ROWS, 6), 0.5)), folder / "stage_2_sample_submission.csv")
    solution = _long_rows(test_ids, _ich_labels(test.digits))
    return Competition("rsna-ich", folder, "weighted_log_loss:0=2", solution, "long", sorted(ICH_SUBTYPES))


BUILDERS: dict[str, Callable[[Path], Competition]] = {
    "dog-breed": dog_breed, "aerial-cactus": aerial_cactus, "planet": planet, "plant-pathology": plant_pathology,
    "cassava": cassava, "digit-recognizer": digit_recognizer, "histopathologic": histopathologic, "aptos": aptos,
    "humpback": humpback, "cifar-10": cifar10, "leaf-metric-file": leaf_classification, "herbarium": herbarium,
    "petfinder-pawpularity": petfinder_pawpularity, "rsna-breast": rsna_breast, "rsna-ich": rsna_ich,
}
# Folders in no shape Kaggle ships, for one property each, run through the same init-then-run test.
VARIANTS: dict[str, Callable[[Path], Competition]] = {"spaced-class-names": spaced_class_names}
