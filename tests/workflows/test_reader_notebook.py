"""ISIC 2024, a code competition whose hidden test exists only as ``test-image.hdf5``: ``init`` then ``run`` on its
shape, ``pack --notebook``, then the notebook executed for real (nbclient, a fresh kernel in a Kaggle-image stand-in
without kagglecv, no network) over a Kaggle tree whose competition folder holds a hidden test of new ids in a new
HDF5 file; the submission equals ``kagglecv infer``'s and nothing under the input changes."""

from __future__ import annotations

import io
import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.core.console import Console
from kagglecv.stages.infer import infer_test
from kagglecv.stages.pack import pack_run
from tests.stages.test_pack_infer import execute_offline, tree_checksums
from tests.workflows.kaggle_reader_shapes import isic_2024
from tests.workflows.test_kaggle_as_it_ships import TINY

pytestmark = pytest.mark.slow
HIDDEN_ROWS = 11


def _hidden_hdf5_test(folder, digits) -> list[str]:
    """A hidden test of new ids in a new test-image.hdf5 (larger images than the public ones), its table and sample."""
    folder.mkdir(parents=True)
    ids = [f"ISIC_{7_000_000 + index:07d}" for index in range(HIDDEN_ROWS)]
    with h5py.File(folder / "test-image.hdf5", "w") as handle:
        for image_id, digit in zip(ids, digits):
            encoded = io.BytesIO()
            Image.fromarray(np.kron(digit, np.ones((10, 10), dtype=np.uint8))).convert("RGB").save(encoded, "JPEG")
            handle[image_id] = np.bytes_(encoded.getvalue())
    pd.DataFrame({"isic_id": ids, "patient_id": "IP_9"}).to_csv(folder / "test-metadata.csv", index=False)
    pd.DataFrame({"isic_id": ids, "target": 0.3}).to_csv(folder / "sample_submission.csv", index=False)
    return ids


def test_isic_2024s_notebook_predicts_a_hidden_hdf5_test_offline(tmp_path, monkeypatch):
    from kagglecv.core.wheelhouse import requirement_closure
    from kagglecv.workflows.demo import digit_images

    competition = isic_2024(tmp_path / "input")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init", str(competition.folder), "--metric", competition.metric]).exit_code == 0
    ran = CliRunner().invoke(app, ["run", str(next(tmp_path.glob("*.yaml"))), *TINY])
    assert ran.exit_code == 0, ran.output
    everything = tuple(name for name in requirement_closure(["kagglecv"]) if name != "kagglecv")
    packed = pack_run(tmp_path / "runs" / competition.folder.name, tmp_path / "out" / "isic-bundle", wheels=True,
                      provided=everything, timing_images=0, notebook=True, competition=competition.folder.name)
    kaggle = tmp_path / "kaggle"
    inputs, working = kaggle / "input", kaggle / "working"
    working.mkdir(parents=True)
    shutil.copytree(packed.path, inputs / "isic-bundle")
    hidden = inputs / competition.folder.name
    ids = _hidden_hdf5_test(hidden, digit_images()[0][-HIDDEN_ROWS:])
    before = tree_checksums(inputs)
    for path in inputs.rglob("*"):
        path.chmod(path.stat().st_mode & ~0o222)
    execute_offline(packed.notebook / "submission.ipynb", inputs, working, tmp_path, monkeypatch)
    submission = pd.read_csv(working / "submission.csv", dtype=str)
    assert submission["isic_id"].tolist() == ids
    for path in inputs.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    expected = tmp_path / "expected.csv"
    infer_test(packed.path, hidden / "test-metadata.csv", hidden, expected, hidden / "sample_submission.csv",
               console=Console(quiet=True))
    pd.testing.assert_frame_equal(submission, pd.read_csv(expected, dtype=str))
    assert tree_checksums(inputs) == before, "nothing written under the input"


def test_a_six_channel_float_run_is_inspected_and_packed_as_onnx_predicting_what_the_run_does(tmp_path, monkeypatch):
    """SETI's shape: the fold's channel statistics are recorded, ``inspect`` draws the arrays, and an ONNX bundle
    (normalisation inside the graph, timed on arrays of the input's shape) infers the run's own submission."""
    pytest.importorskip("onnxruntime", reason="the onnx extra")
    from tests.workflows.kaggle_reader_shapes import seti

    competition = seti(tmp_path / "input")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init", str(competition.folder), "--metric", "roc_auc"]).exit_code == 0
    ran = CliRunner().invoke(app, ["run", str(next(tmp_path.glob("*.yaml"))), *TINY])
    assert ran.exit_code == 0, ran.output
    run = tmp_path / "runs" / competition.folder.name
    recorded = json.loads((run / "fold0" / "normalization.json").read_text())
    assert len(recorded["mean"]) == 6 and recorded["max_pixel_value"] == 1.0 and not recorded.get("per_sample")
    inspected = CliRunner().invoke(app, ["inspect", str(run)])
    assert inspected.exit_code == 0 and (run / "errors.png").is_file(), inspected.output
    packed = CliRunner().invoke(app, ["pack", str(run), "--out", str(tmp_path / "onnx"), "--format", "onnx"])
    assert packed.exit_code == 0, packed.output
    assert json.loads((tmp_path / "onnx" / "fold0" / "normalization.json").read_text()) == recorded
    sample = competition.folder / "sample_submission.csv"
    inferred = CliRunner().invoke(app, ["infer", str(tmp_path / "onnx"), "--images", str(competition.folder / "test"),
                                        "--sample", str(sample), "--out", str(tmp_path / "onnx.csv")])
    assert inferred.exit_code == 0, inferred.output
    mine = pd.read_csv(tmp_path / "submissions" / f"{competition.folder.name}.csv")
    theirs = pd.read_csv(tmp_path / "onnx.csv")
    assert theirs["id"].tolist() == mine["id"].tolist()
    np.testing.assert_allclose(theirs["target"], mine["target"], atol=1e-4)
