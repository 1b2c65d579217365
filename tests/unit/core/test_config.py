from pathlib import Path

import pytest
import yaml

from kagglecv.core.config import (
    apply_override,
    dump_config,
    load_config,
    validate_config,
)
from kagglecv.core.errors import ConfigError


def write_yaml(path: Path, obj) -> Path:
    path.write_text(yaml.safe_dump(obj))
    return path


def test_defaults_fill_in_and_folds_file_is_derived(tmp_path):
    config = validate_config({"experiment": "e1", "data": {"train_csv": "comp/train.csv"}})
    assert config.folds.method == "auto" and config.folds.n_splits == 5 and config.folds.seed == 42
    assert config.folds.file == Path("folds/comp-auto-k5-s42.csv")
    assert config.data.id_col == "id" and config.data.target == "label"


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"experiment": "e", "data": {"train_csv": "t.csv", "taks": "binary"}})
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.taks: unknown key"):
        load_config(path)


def test_wrong_type_names_key_and_value(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"experiment": "e", "data": {"train_csv": "t.csv"}, "folds": {"n_splits": "five"}})
    with pytest.raises(ConfigError, match=r"folds\.n_splits: .*'five'"):
        load_config(path)


def test_missing_required_key_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"data: required key is missing"):
        load_config(write_yaml(tmp_path / "c.yaml", {"experiment": "e"}))
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_parsed_as_yaml_values(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"experiment": "e", "data": {"train_csv": "t.csv"}})
    config = load_config(path, ["folds.n_splits=3", "folds.method=kfold", "data.classes=[b, a]", "data.group_col=null"])
    assert config.folds.n_splits == 3 and config.folds.method == "kfold"
    assert config.data.classes == ["b", "a"] and config.data.group_col is None


def test_override_into_a_value_is_an_error():
    raw = {"experiment": "e"}
    with pytest.raises(ConfigError, match="experiment is not a section"):
        apply_override(raw, "experiment.x=1")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_override(raw, "folds.seed")


def test_python_yaml_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("experiment: !!python/object/apply:os.system ['echo pwned']\ndata: {train_csv: t.csv}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_dump_round_trips(tmp_path):
    config = validate_config({"experiment": "e", "data": {"train_csv": "t.csv", "target": ["a", "b"]}})
    again = validate_config(yaml.safe_load(dump_config(config)))
    assert again == config


def test_a_joined_tta_view_is_checked_part_by_part():
    config = validate_config({"experiment": "e", "data": {"train_csv": "t.csv"},
                              "predict": {"tta": ["none", "hflip+shift:1:1"]}})
    assert config.predict.tta == ["none", "hflip+shift:1:1"]
    with pytest.raises(ConfigError, match=r"predict\.tta: .*'shift:1'"):
        validate_config({"experiment": "e", "data": {"train_csv": "t.csv"}, "predict": {"tta": ["hflip+shift:1"]}})


def test_alternate_flip_needs_batch_flips():
    with pytest.raises(ConfigError, match=r"augment\.alternate_flip: .*batch 'none'"):
        validate_config({"experiment": "e", "data": {"train_csv": "t.csv"}, "augment": {"alternate_flip": True}})
