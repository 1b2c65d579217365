import numpy as np
import pandas as pd
import pytest

from kagglecv.core.config import DataConfig
from kagglecv.core.errors import DataError
from kagglecv.data.load import load_test, load_train
from kagglecv.data.table import DIFFICULT, read_csv_strings
from tests.conftest import VOC_CLASSES, shared_dataset


def test_coco_ids_keep_leading_zeros_and_labels_split(tmp_path):
    root = shared_dataset("coco128-multilabel")
    data = load_train(DataConfig(train_csv=root / "train.csv", image_dir=root / "train", target="labels",
                                 classes_file=root / "classes.txt"))
    raw = (root / "train.csv").read_text().splitlines()[1:]
    assert data.task == "multilabel" and len(data.classes) == 80
    assert list(data.ids) == [line.split(",")[0] for line in raw]
    assert data.ids[0] == "000000000009"
    first = {data.classes[c] for c in np.flatnonzero(data.targets[0])}
    assert first == set(raw[0].split(",")[1].split())
    assert (data.targets.sum(axis=1) == 0).any(), "images without labels are kept as all-absent rows"


def test_voc_minus_one_zero_one_columns(tmp_path):
    root = shared_dataset("voc2007-labels")
    data = load_train(DataConfig(train_csv=root / "trainval_labels.csv", target=VOC_CLASSES))
    raw = pd.read_csv(root / "trainval_labels.csv", dtype={"id": str})
    values = raw[VOC_CLASSES].to_numpy()
    assert data.task == "multilabel" and data.images is None
    assert ((data.targets == 1) == (values == 1)).all()
    assert ((data.targets == DIFFICULT) == (values == 0)).all()
    assert ((data.targets == 0) == (values == -1)).all()


def test_gtsrb_integer_labels_sort_numerically_and_groups_are_read():
    root = shared_dataset("gtsrb-mini")
    data = load_train(DataConfig(train_csv=root / "train.csv", image_dir=root / "train", group_col="track"))
    assert data.classes[:12] == [str(i) for i in range(12)]
    raw = pd.read_csv(root / "train.csv", dtype=str)
    assert [data.classes[t] for t in data.targets] == raw["label"].tolist()
    assert list(data.groups) == raw["track"].tolist()


def test_binary_is_inferred_from_two_classes(tmp_path):
    (tmp_path / "t.csv").write_text("id,target\na,0\nb,1\nc,1\n")
    data = load_train(DataConfig(train_csv=tmp_path / "t.csv", target="target"))
    assert data.task == "binary" and data.classes == ["0", "1"] and data.targets.tolist() == [0, 1, 1]


@pytest.mark.parametrize("encoding", ["bom", "semicolon", "crlf"])
def test_csv_dialects_read_the_same(tmp_path, encoding):
    text = "id,label\n007,cat\n010,dog\n"
    if encoding == "semicolon":
        text = text.replace(",", ";")
    raw = text.encode()
    if encoding == "bom":
        raw = b"\xef\xbb\xbf" + raw
    if encoding == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    (tmp_path / "t.csv").write_bytes(raw)
    frame = read_csv_strings(tmp_path / "t.csv")
    assert list(frame.columns) == ["id", "label"] and frame["id"].tolist() == ["007", "010"]
    assert frame["label"].tolist() == ["cat", "dog"]


def bad_table(tmp_path, text, **config):
    (tmp_path / "t.csv").write_text(text)
    return DataConfig(train_csv=tmp_path / "t.csv", **config)


@pytest.mark.parametrize(
    ("text", "config", "message"),
    [
        ("id,label\na,x\nb,y\na,x\n", {}, r"t\.csv: 2 × duplicate id in column 'id': line 2 'a', line 4 'a'"),
        ("id,label\na,x\nb,\nc,y\n", {}, r"t\.csv: 1 × empty or NaN value in column 'label': line 3 ''"),
        ("id,label\na,x\nb,NaN\nc,y\n", {}, r"line 3 'NaN'"),
        ("id,label\na,x\nb,z\n", {"classes": ["x", "y"]}, r"1 × label not in data.classes \(x, y\): line 3 'z'"),
        ("id,a,b\n1,0,1\n2,2,0\n", {"target": ["a", "b"]}, r"1 label cells not in \{0, 1\}.*line 3 column 'a' = '2'"),
        ("id,labels\n1,x y\n2,q\n", {"target": "labels", "classes": ["x", "y"]}, r"1 labels not in data.classes: line 3 'q'"),
        ("id,label\n1,x\n", {"target": "lbl"}, r"column\(s\) 'lbl' not found; columns are: id, label"),
        ("id,label,g\n1,x,\n2,y,b\n", {"group_col": "g"}, r"1 × empty group in column 'g': line 2 ''"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, text, config, message):
    with pytest.raises(DataError, match=message):
        load_train(bad_table(tmp_path, text, **config))


def test_many_problems_are_counted(tmp_path):
    rows = "\n".join("dup,x" for _ in range(30))
    with pytest.raises(DataError, match=r"30 × duplicate id .* and 25 more"):
        load_train(bad_table(tmp_path, "id,label\n" + rows + "\n"))


def test_missing_images_are_listed_with_rows(tmp_path, write_images):
    write_images(tmp_path / "img", ["a", "c"])
    config = bad_table(tmp_path, "id,label\na,x\nb,y\nc,x\nd,y\n", image_dir=tmp_path / "img")
    with pytest.raises(DataError, match=r"2 image files not found: line 3 id 'b': .*img/b\.\*.*line 5 id 'd'"):
        load_train(config)


def test_images_found_by_any_extension_and_test_table(tmp_path, write_images):
    write_images(tmp_path / "img", ["a"], ext="jpg")
    write_images(tmp_path / "img", ["b"], ext="ppm")
    write_images(tmp_path / "test", ["t1"], ext="webp")
    (tmp_path / "test.csv").write_text("id\nt1\n")
    config = bad_table(tmp_path, "id,label\na,x\nb,y\n", image_dir=tmp_path / "img", test_csv=tmp_path / "test.csv",
                       test_image_dir=tmp_path / "test")
    data = load_train(config)
    assert [path.name for path in data.images] == ["a.jpg", "b.ppm"]
    test = load_test(config, data.classes, data.task)
    assert test.ids.tolist() == ["t1"] and test.images[0].name == "t1.webp" and test.targets is None


def test_image_paths_escaping_the_folder_are_refused(tmp_path, write_images):
    write_images(tmp_path / "outside", ["secret"])
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "link.png").symlink_to(tmp_path / "outside" / "secret.png")
    config = bad_table(tmp_path, "id,image,label\na,../outside/secret.png,x\nb,link.png,y\n",
                       image_dir=tmp_path / "img", image_col="image")
    with pytest.raises(DataError, match=r"2 image paths outside .*img: line 2 id 'a'.*line 3 id 'b'"):
        load_train(config)


def test_content_hash_changes_with_labels(tmp_path):
    first = load_train(bad_table(tmp_path, "id,label\na,x\nb,y\n")).content_hash()
    assert first == load_train(bad_table(tmp_path, "id,label\na,x\nb,y\n")).content_hash()
    assert first != load_train(bad_table(tmp_path, "id,label\na,y\nb,x\n")).content_hash()
