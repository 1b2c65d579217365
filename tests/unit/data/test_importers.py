import pytest

from kagglecv.core.config import DataConfig
from kagglecv.core.errors import DataError
from kagglecv.data.importers import import_image_folder, import_voc
from kagglecv.data.load import load_train
from kagglecv.data.table import DIFFICULT


def test_image_folder_layout_becomes_a_readable_train_csv(tmp_path, write_images):
    write_images(tmp_path / "root" / "cat", ["c1", "c2"])
    write_images(tmp_path / "root" / "dog", ["d1"], ext="jpg")
    frame = import_image_folder(tmp_path / "root", tmp_path / "train.csv")
    assert frame.to_dict("list") == {"id": ["c1", "c2", "d1"], "image": ["cat/c1.png", "cat/c2.png", "dog/d1.jpg"],
                                     "label": ["cat", "cat", "dog"]}
    data = load_train(DataConfig(train_csv=tmp_path / "train.csv", image_dir=tmp_path / "root", image_col="image"))
    assert data.classes == ["cat", "dog"] and data.targets.tolist() == [0, 0, 1]


def test_image_folder_with_clashing_stems_gets_unique_ids(tmp_path, write_images):
    write_images(tmp_path / "root" / "cat", ["x"])
    write_images(tmp_path / "root" / "dog", ["x"])
    frame = import_image_folder(tmp_path / "root", tmp_path / "train.csv")
    assert frame["id"].tolist() == ["cat__x", "dog__x"]


VOC_XML = """<annotation><filename>{id}.jpg</filename>{objects}</annotation>"""
OBJECT = "<object><name>{name}</name><difficult>{difficult}</difficult></object>"


def test_voc_xml_gives_image_level_labels_with_difficult(tmp_path):
    annotations = tmp_path / "VOC" / "Annotations"
    annotations.mkdir(parents=True)
    images = {
        "000001": [("dog", 0), ("person", 1)],
        "000002": [("dog", 1), ("dog", 0), ("cat", 1)],
        "000003": [("zebra", 0)],
    }
    for image_id, objects in images.items():
        body = "".join(OBJECT.format(name=name, difficult=difficult) for name, difficult in objects)
        (annotations / f"{image_id}.xml").write_text(VOC_XML.format(id=image_id, objects=body))
    frame = import_voc(tmp_path / "VOC", tmp_path / "train.csv")
    assert list(frame.columns) == ["id", "cat", "dog", "person", "zebra"]
    assert frame.set_index("id").loc["000002"].tolist() == [0, 1, -1, -1]
    assert frame.set_index("id").loc["000001"].tolist() == [-1, 1, 0, -1]
    data = load_train(DataConfig(train_csv=tmp_path / "train.csv", target=["cat", "dog", "person", "zebra"]))
    assert data.ids.tolist() == ["000001", "000002", "000003"]
    assert data.targets[0].tolist() == [0, 1, DIFFICULT, 0]


def test_voc_bad_xml_names_the_file(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"x\.xml: not valid XML"):
        import_voc(tmp_path, tmp_path / "train.csv")
