"""The five ways round three found to lose a user's files, the file-disclosure case, and a run folder from someone
else: each a test of its own, on the hostile-input world (48 digit images, two trained runs). The output rule is
also switched off once, to show that it is what keeps the file."""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from kagglecv.core.outputs import OutputRule

from .test_hostile_inputs import _run, snapshot, world  # noqa: F401  (the module-scoped world fixture)

INFER = ["infer", "runs/base", "--test", "data/test.csv", "--images", "data/test"]


@pytest.fixture
def here(world, tmp_path):  # noqa: F811
    copy = tmp_path / "w"
    shutil.copytree(world, copy, symlinks=True)
    return copy


def test_pack_keeps_every_file_of_a_folder_it_did_not_make(here):
    folder = here / "p"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"files": {}}')
    (folder / "notes.txt").write_text("three weeks of notes")
    code, output = _run(["pack", "runs/base", "--out", "p", "--timing-images", "0"], here)
    assert code == 2 and "not a kagglecv bundle" in output, output
    assert (folder / "notes.txt").read_text() == "three weeks of notes"
    shutil.rmtree(folder)
    code, output = _run(["pack", "runs/base", "--out", "p", "--timing-images", "0"], here)
    assert code == 0, output
    code, output = _run(["pack", "runs/base", "--out", "p", "--timing-images", "0"], here)
    assert code == 0, "its own earlier bundle is replaced"
    assert not [p for p in here.iterdir() if p.name.startswith(".p.")], "no temporary folder left beside it"


def test_infer_never_replaces_the_training_table_and_the_rule_is_what_keeps_it(here, monkeypatch):
    table = (here / "data" / "train.csv").read_bytes()
    code, output = _run(INFER + ["--out", "data/train.csv"], here)
    assert code == 2 and "the training table" in output, output
    assert (here / "data" / "train.csv").read_bytes() == table
    monkeypatch.setattr(OutputRule, "check", lambda self, path, option: Path(path).resolve())
    monkeypatch.setattr(OutputRule, "file", lambda self, path, option, **kwargs: Path(path))
    code, output = _run(INFER + ["--out", "data/train.csv"], here)
    assert code == 0, output
    assert (here / "data" / "train.csv").read_bytes() != table, "without the rule the table is lost"


def test_submit_never_overwrites_a_runs_own_files_or_the_folds_file(here):
    before = snapshot(here, ("submissions",))
    for out_dir, name in (("runs/base/fold0", "oof"), ("runs/base", "test"), ("runs/base/fold1", "history"),
                          ("folds", "digits")):
        code, output = _run(["submit", "runs/base", "--sample", "data/sample.csv", "--out-dir", out_dir, "--name", name],
                            here)
        assert code == 2 and f"{out_dir}/{name}.csv" in output, output
    assert snapshot(here, ("submissions",)) == before


def test_a_tune_name_never_leaves_the_runs_folder(here, tmp_path):
    (here / "space.yaml").write_text("train.lr: {type: float, low: 0.001, high: 0.01}\n")
    for name in ("../../../../x", "../../x", "/tmp/kagglecv-tune"):
        code, output = _run(["tune", "base.yaml", "--space", "space.yaml", "--name", name], here)
        assert code == 2 and "expected a plain name" in output, output
    assert not (tmp_path / "x").exists() and not (here / "runs" / "x").exists()
    assert not Path("/tmp/kagglecv-tune").exists() and not Path("/x").exists()


def test_training_never_mixes_into_an_ensemble_or_a_cv_run(here):
    code, output = _run(["ensemble", "runs/base", "runs/other", "--name", "pair", "--method", "mean"], here)
    assert code == 0, output
    ensemble = snapshot(here / "runs" / "ens-pair", ())
    code, output = _run(["train", "runs/ens-pair/config.yaml"], here)
    assert code == 2 and "is an ensemble" in output, output
    assert snapshot(here / "runs" / "ens-pair", ()) == ensemble
    shutil.copytree(here / "runs" / "base", here / "runs" / "base-full")
    cv_run = snapshot(here / "runs" / "base-full", ())
    code, output = _run(["train", "base.yaml", "--full", "--force"], here)
    assert code == 2 and "is a cross-validated run" in output, output
    assert snapshot(here / "runs" / "base-full", ()) == cv_run
    assert json.loads((here / "runs" / "base" / "run.json").read_text())["kind"] == "run", "CV runs record their kind"


def test_the_report_embeds_no_file_an_inspect_record_names(here):
    secret = here.parent / "secret.txt"
    secret.write_text("the password is swordfish")
    code, output = _run(["inspect", "runs/base"], here)
    assert code == 0, output
    record = json.loads((here / "runs/base/inspect.json").read_text())
    record.update(pictures=["../../../secret.txt"], label_issues_file="/etc/passwd")
    (here / "runs/base/inspect.json").write_text(json.dumps(record))
    (here / "runs/other/inspect.json").write_text('{"pictures": []}')
    code, output = _run(["report"], here)
    assert code == 0, output
    html = (here / "runs" / "report.html").read_text()
    markdown = (here / "runs" / "report.md").read_text()
    for page in (html, markdown):
        assert "swordfish" not in page and "root:" not in page and "secret.txt" not in page
        assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert "runs/base/inspect.json: corrupt or not kagglecv" in html and "label_issues_file" in html
    assert "runs/other/inspect.json: corrupt" in html
    record.update(label_issues_file="label_issues.csv")  # only the pictures hostile now
    (here / "runs/base/inspect.json").write_text(json.dumps(record))
    code, output = _run(["report"], here)
    html = (here / "runs" / "report.html").read_text()
    assert code == 0 and "swordfish" not in html and "pictures.0" in html, output


def test_the_report_writes_only_its_own_files_and_follows_no_tracking_uri(here):
    store = here.parent / "elsewhere.db"
    config = here / "runs" / "base" / "config.yaml"
    config.write_text(config.read_text() + f"tracking: {{backend: mlflow, uri: 'sqlite:///{store}'}}\n")
    runs_before = snapshot(here / "runs", ())
    outside = {p.name for p in here.parent.iterdir()}
    code, output = _run(["report"], here)
    assert code == 0, output
    assert not store.exists() and {p.name for p in here.parent.iterdir()} == outside
    after = snapshot(here / "runs", ())
    assert {key: after.get(key) for key in runs_before} == runs_before, "no file of a run changed"
    written = {p.relative_to(here / "runs").parts[0] for p in (here / "runs").rglob("*")
               if p.relative_to(here / "runs").as_posix() not in runs_before and p.is_file()}
    assert written <= {"report.md", "report.html", "report.pictures"}, written
    assert not (here / "runs" / "mlflow.db").exists()


def test_an_ensemble_replays_its_own_members_from_any_working_folder(here, tmp_path):
    code, output = _run(["ensemble", "runs/base", "runs/other", "--name", "pair", "--method", "mean"], here)
    assert code == 0, output
    code, output = _run(INFER[:1] + ["runs/ens-pair"] + INFER[2:] + ["--out", str(tmp_path / "mine.csv")], here)
    assert code == 0, output
    stranger = tmp_path / "stranger"
    shutil.copytree(here, stranger, symlinks=True)
    shutil.rmtree(stranger / "runs" / "base")
    shutil.copytree(stranger / "runs" / "other", stranger / "runs" / "base")  # another project's runs/base
    args = ["infer", str(here / "runs" / "ens-pair"), "--test", str(here / "data/test.csv"), "--images",
            str(here / "data/test"), "--out", str(tmp_path / "from-elsewhere.csv")]
    code, output = _run(args, stranger)
    assert code == 0, output
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "mine.csv"), pd.read_csv(tmp_path / "from-elsewhere.csv"))
    info = json.loads((here / "runs" / "ens-pair" / "run.json").read_text())
    assert [member["path"] for member in info["members"]] == ["../base", "../other"]


def test_a_missing_optional_extra_is_one_line_naming_it(here, monkeypatch):
    (here / "space.yaml").write_text("train.lr: {type: float, low: 0.001, high: 0.01}\n")
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed
    code, output = _run(["tune", "base.yaml", "--space", "space.yaml"], here)
    assert code == 2 and "pip install 'kagglecv[tune]'" in output and "Traceback" not in output, output
    monkeypatch.setitem(sys.modules, "mlflow", None)
    code, output = _run(["track", "sync", "runs"], here)
    assert code == 2 and "pip install 'kagglecv[mlflow]'" in output, output
    monkeypatch.setitem(sys.modules, "ray", None)
    code, output = _run(["launch", "base.yaml", "--backend", "ray"], here)
    assert code == 2 and "pip install 'kagglecv[ray]'" in output, output


def test_a_run_named_with_a_quote_syncs_to_mlflow(here):
    pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install -e '.[dev,mlflow]'")
    shutil.copytree(here / "runs" / "base", here / "runs" / "it's")
    code, output = _run(["track", "sync", "runs", "--run", "it's"], here)
    assert code == 0 and "logged 1 run(s) (it's)" in output, output
    code, output = _run(["track", "sync", "runs", "--run", "it's"], here)
    assert code == 0 and "logged 0 run(s), 1 unchanged" in output, output
    assert yaml.safe_load((here / "runs" / "it's" / "config.yaml").read_text())["experiment"] == "base"
