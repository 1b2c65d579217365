"""The command line, as a user types it (typer's CliRunner), over every folds method on the shared datasets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from kagglecv.cli import app, main
from tests.conftest import VOC_CLASSES, shared_dataset

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ["folds", "config", "data"]:
        assert command in result.output


def dataset_config(name: str) -> dict:
    root = shared_dataset(name)
    if name == "cifar10-mini":
        return {"train_csv": str(root / "train.csv"), "image_dir": str(root / "train")}
    if name == "gtsrb-mini":
        return {"train_csv": str(root / "train.csv"), "image_dir": str(root / "train"), "group_col": "track"}
    if name == "coco128-multilabel":
        return {"train_csv": str(root / "train.csv"), "image_dir": str(root / "train"), "target": "labels",
                "classes_file": str(root / "classes.txt")}
    return {"train_csv": str(root / "trainval_labels.csv"), "target": VOC_CLASSES}


CASES = [
    ("cifar10-mini", "kfold", []), ("cifar10-mini", "stratified", []),
    ("gtsrb-mini", "group", []), ("gtsrb-mini", "stratified_group", ["folds.n_splits=4"]),
    ("voc2007-labels", "multilabel", []), ("coco128-multilabel", "multilabel", ["folds.allow_rare_classes=true"]),
    ("coco128-multilabel", "multilabel_group", ["folds.allow_rare_classes=true", "folds.n_splits=3"]),
]


@pytest.mark.parametrize(("dataset", "method", "overrides"), CASES)
def test_folds_command_on_shared_datasets(tmp_path, monkeypatch, dataset, method, overrides):
    monkeypatch.chdir(tmp_path)
    config = {"experiment": "cli", "data": dataset_config(dataset), "folds": {"method": method}}
    if method == "multilabel_group":  # coco128 has no natural group: pretend ids close in number came together
        frame = pd.read_csv(config["data"]["train_csv"], dtype=str, keep_default_na=False)
        frame["batch"] = (frame["id"].astype(int) // 20).astype(str)
        frame.to_csv(tmp_path / "train.csv", index=False)
        config["data"] |= {"train_csv": str(tmp_path / "train.csv"), "group_col": "batch"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    args = ["folds", "c.yaml", "--set", "folds.near_duplicates=off"]
    for override in overrides:
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = list((tmp_path / "folds").glob("*.csv"))
    assert len(written) == 1 and written[0].name.endswith(f"-{method}-k{config_k(overrides)}-s42.csv")
    report = json.loads(written[0].with_suffix(".json").read_text())
    assert report["method"] == method and sum(report["fold_sizes"]) == report["rows"]
    assert "fold" in result.output and "rows" in result.output


def config_k(overrides):
    return next((o.split("=")[1] for o in overrides if o.startswith("folds.n_splits")), "5")


def test_config_show_prints_resolved_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("experiment: e\ndata: {train_csv: comp/train.csv}\n")
    result = runner.invoke(app, ["config", "show", str(tmp_path / "c.yaml"), "--set", "folds.seed=7"])
    assert result.exit_code == 0
    shown = yaml.safe_load(result.output)
    assert shown["folds"] == shown["folds"] | {"seed": 7, "n_splits": 5, "method": "auto",
                                                "file": "folds/comp-auto-k5-s7.csv"}


def test_errors_are_one_red_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "c.yaml").write_text("experiment: e\ndata: {train_csv: missing.csv}\nfolds: {n_splitz: 3}\n")
    monkeypatch.setattr("sys.argv", ["kagglecv", "folds", str(tmp_path / "c.yaml")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "folds.n_splitz: unknown key" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_readme_command_table_matches_the_app():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = set(re.findall(r"^\| `kagglecv ([a-z]+)", readme, flags=re.M))
    result = runner.invoke(app, ["--help"])
    listed = set(re.findall(r"^│ ([a-z]+) ", result.output, flags=re.M))
    assert listed and documented == listed, f"README lacks {listed - documented}, documents extra {documented - listed}"


def test_tables_in_a_log_file_are_printed_whole(tmp_path):
    import subprocess
    import sys

    pd.DataFrame({"id": [f"{i:03d}" for i in range(60)],
                  "label": [f"a-rather-long-class-name-{i % 12:02d}" for i in range(60)]}).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "c.yaml").write_text("experiment: x\ndata: {train_csv: t.csv}\nfolds: {n_splits: 5, file: f.csv}\n")
    with open(tmp_path / "log", "w") as log:
        result = subprocess.run([sys.executable, "-m", "kagglecv", "folds", "c.yaml"], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": ""})
    text = (tmp_path / "log").read_text()
    assert result.returncode == 0, text
    assert "…" not in text and "largest label-rate deviation" in text


PAGE_FAULTS_OF_A_FRESH_TENSOR = """
import resource, sys
from kagglecv.cli import share_cores
share_cores()
import torch
torch.ones(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(64 * 2**20 // 4)  # 64 MB, freed at once: what an activation of a training step is
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_a_fresh_tensor(**environment: str) -> int:
    env = {name: value for name, value in os.environ.items() if name != "THP_MEM_ALLOC_ENABLE"} | environment
    return int(subprocess.run([sys.executable, "-c", PAGE_FAULTS_OF_A_FRESH_TENSOR], env=env, check=True,
                              capture_output=True, text=True).stdout)


TRANSPARENT_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(not TRANSPARENT_HUGE_PAGES.exists() or "[never]" in TRANSPARENT_HUGE_PAGES.read_text(),
                    reason="the kernel has no transparent huge pages")
def test_the_entry_point_gives_large_tensors_huge_pages_unless_the_user_said_otherwise():
    assert faults_of_a_fresh_tensor() < 1000, "64 MB in 2 MB pages: a few dozen faults, not 16,384"
    assert faults_of_a_fresh_tensor(THP_MEM_ALLOC_ENABLE="0") > 10000, "a value in the environment is kept"


OBJECTS_FROZEN_AT_EXIT = """
import atexit, gc, sys
freeze, freezes = gc.freeze, []
gc.freeze = lambda: freezes.append(1) or freeze()
atexit.register(lambda: print(len(freezes), gc.get_freeze_count()))  # first in, so it runs after kagglecv's
from kagglecv.cli import main
sys.argv = ["kagglecv", "--help"]
for _ in range(2):  # twice in one process, as the tests call it
    try:
        main()
    except SystemExit:
        pass
print(len(freezes), gc.get_freeze_count())  # nothing frozen while the process lives
"""


def test_the_entry_point_spares_the_exit_a_sweep_of_every_object():
    """The interpreter's last collections skip what ``gc.freeze`` moved aside at exit (about 1 s of each command
    here), once however often ``main`` ran, and only at exit: objects made while a command runs stay collectable."""
    done = subprocess.run([sys.executable, "-c", OBJECTS_FROZEN_AT_EXIT], check=True, capture_output=True, text=True)
    (freezes_before, frozen_before), (freezes, frozen) = (map(int, line.split())
                                                          for line in done.stdout.strip().splitlines()[-2:])
    assert freezes_before == frozen_before == 0
    assert freezes == 1 and frozen > 10000
