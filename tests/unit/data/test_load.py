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


def test_image_paths_escaping_the_folder_are_refused_and_links_in_it_are_followed(tmp_path, write_images):
    """A name leading out of the folder is refused; a symbolic link in it is read (Kaggle's /kaggle/input is links)."""
    write_images(tmp_path / "outside", ["secret", "linked"])
    write_images(tmp_path / "img2", ["sibling"])  # a folder whose name starts with the image folder's
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "link.png").symlink_to(tmp_path / "outside" / "linked.png")
    config = bad_table(tmp_path, "id,image,label\na,../outside/secret.png,x\nb,link.png,y\nc,/etc/hostname,x\n"
                       "e,../img2/sibling.png,y\n", image_dir=tmp_path / "img", image_col="image")
    with pytest.raises(DataError, match=r"3 image paths outside .*img: line 2 id 'a'.*line 4 id 'c'.*line 5 id 'e'") as error:
        load_train(config)
    assert "line 3" not in str(error.value)
    linked = bad_table(tmp_path, "id,image,label\nb,link.png,y\nd,link.png,x\n", image_dir=tmp_path / "img",
                       image_col="image")
    assert [path.name for path in load_train(linked).images] == ["link.png", "link.png"]


def test_ids_that_are_file_names_get_the_key_that_fixes_them(tmp_path, write_images):
    """Aerial Cactus names its rows ``0004be2c...jpg``: the files' own names, extension included."""
    write_images(tmp_path / "img", ["0004be2c", "0005a1b2"], ext="jpg")
    config = bad_table(tmp_path, "id,has_cactus\n0004be2c.jpg,1\n0005a1b2.jpg,0\n", image_dir=tmp_path / "img",
                       target="has_cactus")
    with pytest.raises(DataError, match=r"the ids are file names \('0004be2c.jpg' is in .*\): set data.image_col: id"):
        load_train(config)
    fixed = bad_table(tmp_path, "id,has_cactus\n0004be2c.jpg,1\n0005a1b2.jpg,0\n", image_dir=tmp_path / "img",
                      target="has_cactus", image_col="id")
    assert [path.name for path in load_train(fixed).images] == ["0004be2c.jpg", "0005a1b2.jpg"]
    other = bad_table(tmp_path, "id,has_cactus\nzz,1\nyy,0\n", image_dir=tmp_path / "img", target="has_cactus")
    with pytest.raises(DataError, match=r"holds files such as '0004be2c.jpg', '0005a1b2.jpg'"):
        load_train(other)


def test_content_hash_changes_with_labels(tmp_path):
    first = load_train(bad_table(tmp_path, "id,label\na,x\nb,y\n")).content_hash()
    assert first == load_train(bad_table(tmp_path, "id,label\na,x\nb,y\n")).content_hash()
    assert first != load_train(bad_table(tmp_path, "id,label\na,y\nb,x\n")).content_hash()


def test_one_hot_columns_with_task_multiclass_are_one_class_per_row(tmp_path):
    """Plant Pathology 2020 ships ``image_id,healthy,multiple_diseases,rust,scab`` with one 1 per row."""
    classes = ["healthy", "multiple_diseases", "rust", "scab"]
    rows = [[f"Train_{i}", *(int(i % 4 == c) for c in range(4))] for i in range(12)]
    pd.DataFrame(rows, columns=["image_id", *classes]).to_csv(tmp_path / "train.csv", index=False)
    config = dict(train_csv=tmp_path / "train.csv", id_col="image_id", target=classes)
    data = load_train(DataConfig(**config, task="multiclass"), with_images=False)
    assert data.task == "multiclass" and data.classes == classes
    assert data.targets.tolist() == [i % 4 for i in range(12)]
    assert load_train(DataConfig(**config), with_images=False).task == "multilabel"  # without task: as before
    rows[3][1:] = [1, 0, 1, 0]
    rows[7][1:] = [0, 0, 0, 0]
    pd.DataFrame(rows, columns=["image_id", *classes]).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"exactly one 1 per row; 2 rows differ: line 5 \(2 ones\), line 9 \(0 ones\)"):
        load_train(DataConfig(**config, task="multiclass"), with_images=False)


def test_a_test_folder_without_a_table_is_the_test_set_named_by_its_files(tmp_path, write_images):
    write_images(tmp_path / "test", ["b2", "a1", "c3"], ext="png")
    (tmp_path / "test" / "notes.txt").write_text("not an image")
    config = DataConfig(train_csv=tmp_path / "t.csv", test_image_dir=tmp_path / "test")
    assert config.has_test()
    test = load_test(config, ["x", "y"], "binary")
    assert test.ids.tolist() == ["a1", "b2", "c3"] and [p.name for p in test.images] == ["a1.png", "b2.png", "c3.png"]
    write_images(tmp_path / "test", ["a1"], ext="jpg")
    with pytest.raises(DataError, match=r"several files share a name without extension.*'a1'"):
        load_test(config, ["x", "y"], "binary")
    assert not DataConfig(train_csv=tmp_path / "t.csv").has_test()
    with pytest.raises(DataError, match="no test set: set data.test_csv, submit.sample or data.test_image_dir"):
        load_test(DataConfig(train_csv=tmp_path / "t.csv"), ["x", "y"], "binary")


def test_a_sample_submission_is_the_test_table_when_there_is_none(tmp_path):
    from kagglecv.core.config import validate_config

    base = {"experiment": "x", "data": {"train_csv": str(tmp_path / "t.csv")}}
    config = validate_config(base | {"submit": {"sample": str(tmp_path / "sample_submission.csv")}})
    assert config.data.test_csv == tmp_path / "sample_submission.csv"
    table = validate_config({**base, "data": {**base["data"], "test_csv": str(tmp_path / "test.csv")},
                             "submit": {"sample": str(tmp_path / "sample_submission.csv")}})
    assert table.data.test_csv == tmp_path / "test.csv", "a test table, when given, stays the source of the ids"
