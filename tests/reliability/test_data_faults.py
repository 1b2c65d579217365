"""Bad tables and labels: one clear error naming rows, columns and values (all at once, counted), or the
documented behaviour; never a silent bad split. Driven through the CLI as a user meets them."""

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kagglecv.cli import app

runner = CliRunner()


def folds_cli(tmp_path, csv_text: bytes | str, **data):
    path = tmp_path / "train.csv"
    path.write_bytes(csv_text if isinstance(csv_text, bytes) else csv_text.encode())
    config = {"experiment": "r", "data": {"train_csv": str(path), **data},
              "folds": {"n_splits": 3, "file": str(tmp_path / "folds.csv"), "near_duplicates": "off"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return runner.invoke(app, ["folds", str(tmp_path / "c.yaml")])


def balanced_rows(n=12, classes=("a", "b")):
    return "".join(f"{i:03d},{classes[i % len(classes)]}\n" for i in range(n))


def test_a_class_with_fewer_members_than_folds(tmp_path):
    result = folds_cli(tmp_path, "id,label\n" + balanced_rows() + "900,rare\n901,rare\n")
    assert result.exit_code != 0
    assert "1 classes have fewer rows than folds (n_splits=3): 'rare': 2" in str(result.exception)


def test_a_multilabel_class_with_fewer_positives_than_folds(tmp_path):
    rows = "".join(f"{i},a{' b' if i % 2 else ''}\n" for i in range(12)) + "50,a c\n"
    result = folds_cli(tmp_path, "id,labels\n" + rows, target="labels")
    assert "fewer rows than folds (n_splits=3): 'c': 1" in str(result.exception)


@pytest.mark.parametrize(("text", "data", "expected"), [
    ("id,a,b\n1,0,1\n2,2,0\n3,1,x\n", {"target": ["a", "b"]},
     ["2 label cells not in {0, 1}", "line 3 column 'a' = '2'", "line 4 column 'b' = 'x'"]),
    ("id,label\n1,a\n2,\n3,nan\n", {}, ["2 × empty or NaN value in column 'label'", "line 3 ''", "line 4 'nan'"]),
    ("id,label\n1,a\n2,zebra\n", {"classes": ["a", "b"]}, ["label not in data.classes (a, b): line 3 'zebra'"]),
    ("id,label\n7,a\n7,b\n8,a\n8,b\n", {}, ["4 × duplicate id in column 'id'", "line 2 '7'", "line 5 '8'"]),
])
def test_bad_labels_and_ids_are_named_with_lines_and_values(tmp_path, text, data, expected):
    result = folds_cli(tmp_path, text, **data)
    assert result.exit_code != 0
    for fragment in expected:
        assert fragment in str(result.exception)


def test_several_problems_are_reported_together(tmp_path):
    result = folds_cli(tmp_path, "id,label\n1,a\n1,b\n2,zebra\n", classes=["a", "b"])
    message = str(result.exception)
    assert "duplicate id" in message and "'zebra'" in message and message.count("\n") == 1


def test_leading_zeros_and_csv_dialects_give_the_same_folds(tmp_path):
    plain = "id,label\n" + balanced_rows(30)
    reference = folds_cli(tmp_path / "plain", plain) if (tmp_path / "plain").mkdir() is None else None
    assert reference.exit_code == 0
    expected = (tmp_path / "plain" / "folds.csv").read_text()
    assert expected.splitlines()[1].startswith("000,")
    for name, raw in {"bom": b"\xef\xbb\xbf" + plain.encode(), "semicolon": plain.replace(",", ";").encode(),
                      "crlf": plain.replace("\n", "\r\n").encode()}.items():
        (tmp_path / name).mkdir()
        result = folds_cli(tmp_path / name, raw)
        assert result.exit_code == 0, result.output
        folds = pd.read_csv(tmp_path / name / "folds.csv", dtype=str)
        assert folds.to_csv(index=False, lineterminator="\n") == expected, name
