"""``kagglecv infer`` and ``kagglecv pack``: a run or ensemble replayed offline on a hidden test set that differs from
the public one, from a bundle copied away from the training machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from kagglecv.core.blending import StackModel, stack_model_from_state
from kagglecv.core.bundle import MANIFEST
from kagglecv.core.config import validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.stages.ensemble import make_ensemble
from kagglecv.stages.folds import make_folds
from kagglecv.stages.infer import infer_test
from kagglecv.stages.pack import pack_run, timing_warning
from kagglecv.stages.predict import predict_run
from kagglecv.stages.submit import write_submission
from kagglecv.stages.train import train_run
from tests.conftest import tiny_config

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def competition(tmp_path_factory, digits_root):
    """Two tiny trained runs (TTA hflip, one scoring EMA weights) with their test set in a folder of our own, and a
    power-blend ensemble of them."""
    root = tmp_path_factory.mktemp("infer")
    source = digits_root / "digits"
    shutil.copytree(source / "test", root / "public_test")
    runs = []
    for seed, ema in ((1, False), (2, True)):
        raw = tiny_config(root, digits_root, rows=64, train={"seed": seed, "ema": ema, "ema_decay": 0.9},
                          predict={"tta": ["none", "hflip"]})
        raw["experiment"] = f"digits-s{seed}"
        raw["data"]["test_image_dir"] = str(root / "public_test")
        config = validate_config(raw)
        if seed == 1:
            make_folds(config)
        train_run(config, console=QUIET, predict_test=False)
        predict_run(config.run_dir, console=QUIET)
        runs.append(config.run_dir)
    make_ensemble(runs, method="power", name="blend", power=3.0)
    for method in ("rank", "stack"):
        make_ensemble(runs, method=method, name=method)
    sample = root / "sample.csv"
    test = pd.read_csv(root / "test.csv", dtype=str)
    pd.DataFrame({"id": test["id"], "label": "zero"}).to_csv(sample, index=False)
    return {"root": root, "runs": runs, "ensemble": root / "runs" / "ens-blend", "sample": sample, "test": root / "test.csv"}


def _hidden_test(folder: Path, public_table: Path, public_images: Path, rows: int = 12) -> tuple[Path, Path, Path]:
    """A renamed hidden test: new ids, one image enlarged, one grey; with its sample submission."""
    folder.mkdir(parents=True, exist_ok=True)
    images = folder / "images"
    images.mkdir()
    public = pd.read_csv(public_table, dtype=str).head(rows)
    new_ids = [f"hidden_{index:03d}" for index in range(len(public))][::-1]
    for position, (old, new) in enumerate(zip(public["id"], new_ids)):
        image = Image.open(next(public_images.glob(f"{old}.*"))).convert("RGB")
        if position == 0:
            image = image.resize((40, 40))
        if position == 1:
            image = image.convert("L")
        image.save(images / f"{new}.png")
    table = folder / "test.csv"
    pd.DataFrame({"id": new_ids}).to_csv(table, index=False)
    sample = folder / "sample_submission.csv"
    pd.DataFrame({"id": sorted(new_ids), "label": "zero"}).to_csv(sample, index=False)
    return table, images, sample


def _expected_submission(competition, run_path: Path, table: Path, images: Path, sample: Path, tmp_path: Path) -> pd.DataFrame:
    """What predict (and ensemble) plus submit write when the run's own test set is replaced by the hidden one."""
    root = competition["root"]
    backup = tmp_path / "public_backup"
    shutil.copytree(root / "public_test", backup / "images")
    shutil.copy(competition["test"], backup / "test.csv")
    try:
        shutil.rmtree(root / "public_test")
        shutil.copytree(images, root / "public_test")
        shutil.copy(table, competition["test"])
        for run in competition["runs"]:
            predict_run(run, console=QUIET)
        if run_path == competition["ensemble"]:
            make_ensemble(competition["runs"], method="power", name="blend", power=3.0)
        written = write_submission(run_path, sample, "expected", out_dir=tmp_path / "expected")
        return pd.read_csv(written.path, dtype=str)
    finally:
        shutil.rmtree(root / "public_test")
        shutil.copytree(backup / "images", root / "public_test")
        shutil.copy(backup / "test.csv", competition["test"])
        for run in competition["runs"]:
            predict_run(run, console=QUIET)
        make_ensemble(competition["runs"], method="power", name="blend", power=3.0)


def _probabilities_sample(table: Path, classes: list[str]) -> Path:
    sample = table.with_name("sample_probabilities.csv")
    ids = pd.read_csv(table, dtype=str)["id"]
    pd.DataFrame({"id": ids} | {name: 0.0 for name in classes}).to_csv(sample, index=False)
    return sample


def test_infer_on_the_public_test_set_equals_predict(competition, tmp_path):
    ensembles = [competition["ensemble"], competition["root"] / "runs" / "ens-rank", competition["root"] / "runs" / "ens-stack"]
    for source in [*competition["runs"], *ensembles]:
        out = tmp_path / f"{source.name}.csv"
        infer_test(source, competition["test"], competition["root"] / "public_test", out, console=QUIET)
        replayed = pd.read_csv(out, dtype={"id": str}).set_index("id")
        recorded = pd.read_csv(source / "test.csv", dtype={"id": str}).set_index("id")
        assert list(replayed.index) == list(recorded.index) and list(replayed.columns) == list(recorded.columns)
        np.testing.assert_allclose(replayed.to_numpy(), recorded.to_numpy(), atol=1e-6)


@pytest.mark.parametrize("which", ["run", "ensemble"])
def test_a_bundle_copied_away_predicts_a_renamed_hidden_test_like_predict(competition, tmp_path, which, monkeypatch):
    source = competition["runs"][1] if which == "run" else competition["ensemble"]
    bundle = pack_run(source, tmp_path / "bundle", timing_images=4)
    assert bundle.timing is not None and bundle.timing.per_image > 0
    files = set(json.loads((bundle.path / MANIFEST).read_text())["files"])
    assert not any(name.endswith(("oof.csv", "last.pt", "history.csv", "train.csv", "folds.csv")) for name in files)
    moved = tmp_path / "kaggle" / "input" / "my-bundle"
    shutil.copytree(bundle.path, moved)
    table, images, sample = _hidden_test(tmp_path / "hidden", competition["test"], competition["root"] / "public_test")
    expected = _expected_submission(competition, source, table, images, sample, tmp_path)
    monkeypatch.chdir(tmp_path / "kaggle")  # nothing relative to the training machine's folder can be found
    out = tmp_path / "kaggle" / "working" / "submission.csv"
    out.parent.mkdir()
    infer_test(moved, table, images, out, sample, console=QUIET)
    got = pd.read_csv(out, dtype=str)
    assert list(got.columns) == ["id", "label"] and list(got["id"]) == list(pd.read_csv(sample, dtype=str)["id"])
    pd.testing.assert_frame_equal(got, expected)


def test_probabilities_of_a_bundle_match_to_1e_6(competition, tmp_path):
    bundle = pack_run(competition["ensemble"], tmp_path / "bundle", timing_images=0)
    classes = json.loads((bundle.path / "run.json").read_text())["classes"]
    sample = _probabilities_sample(competition["test"], classes)
    infer_test(bundle.path, competition["test"], competition["root"] / "public_test", tmp_path / "p.csv", sample,
          console=QUIET)
    got = pd.read_csv(tmp_path / "p.csv", dtype={"id": str}).set_index("id")
    recorded = pd.read_csv(competition["ensemble"] / "test.csv", dtype={"id": str}).set_index("id").loc[got.index]
    np.testing.assert_allclose(got[classes].to_numpy(), recorded[classes].to_numpy(), atol=1e-6)


def test_one_image_is_a_test_set(competition, tmp_path):
    table, images, sample = _hidden_test(tmp_path / "one", competition["test"], competition["root"] / "public_test", rows=1)
    infer_test(competition["runs"][0], table, images, tmp_path / "one.csv", sample, console=QUIET)
    assert len(pd.read_csv(tmp_path / "one.csv")) == 1


def test_missing_images_are_all_listed_and_nothing_is_written(competition, tmp_path):
    table, images, sample = _hidden_test(tmp_path / "hidden", competition["test"], competition["root"] / "public_test")
    lost = sorted(images.iterdir())[:2]
    for path in lost:
        path.unlink()
    out = tmp_path / "submission.csv"
    with pytest.raises(KagglecvError, match="2 image files not found") as error:
        infer_test(competition["runs"][0], table, images, out, sample, console=QUIET)
    assert all(path.stem in str(error.value) for path in lost)
    assert not out.exists()


def test_an_altered_or_added_bundle_file_is_refused(competition, tmp_path):
    bundle = pack_run(competition["runs"][0], tmp_path / "bundle", timing_images=0).path
    table, images, sample = _hidden_test(tmp_path / "hidden", competition["test"], competition["root"] / "public_test")
    weights = bundle / "fold0" / "best.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(KagglecvError, match=r"altered \(sha256 differs\): 'fold0/best.safetensors'"):
        infer_test(bundle, table, images, tmp_path / "a.csv", sample, console=QUIET)
    weights.write_bytes(original)
    (bundle / "model_code.py").write_text("import os\n")
    with pytest.raises(KagglecvError, match="not in the manifest: 'model_code.py'"):
        infer_test(bundle, table, images, tmp_path / "a.csv", sample, console=QUIET)
    assert not (tmp_path / "a.csv").exists()


def test_a_fold_left_out_and_outputs_inside_inputs_are_refused(competition, tmp_path):
    bundle = pack_run(competition["runs"][0], tmp_path / "bundle", timing_images=0).path
    table, images, sample = _hidden_test(tmp_path / "hidden", competition["test"], competition["root"] / "public_test")
    with pytest.raises(KagglecvError, match="inside the input folder"):
        infer_test(bundle, table, images, bundle / "submission.csv", sample, console=QUIET)
    with pytest.raises(KagglecvError, match="is an input of this command"):
        infer_test(bundle, table, images, sample, sample, console=QUIET)
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / MANIFEST).unlink()
    with pytest.raises(KagglecvError, match="a kagglecv bundle without its manifest.json"):
        infer_test(copy, table, images, tmp_path / "b.csv", sample, console=QUIET)
    run_copy = competition["root"] / "runs" / "copy-of-run"
    shutil.copytree(competition["runs"][0], run_copy)
    shutil.rmtree(run_copy / "fold1")
    try:
        with pytest.raises(KagglecvError, match="fold 1 of 2 is not trained"):
            infer_test(run_copy, table, images, tmp_path / "b.csv", sample, console=QUIET)
    finally:
        shutil.rmtree(run_copy)
    assert not (tmp_path / "b.csv").exists() and not (bundle / "submission.csv").exists()


def test_pack_refuses_to_replace_a_folder_that_is_not_a_bundle(competition, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(KagglecvError, match="not a kagglecv bundle"):
        pack_run(competition["runs"][0], keep, timing_images=0)
    with pytest.raises(KagglecvError, match="overlaps the run"):
        pack_run(competition["runs"][0], competition["runs"][0] / "bundle", timing_images=0)
    assert (keep / "notes.txt").read_text() == "mine" and not (competition["runs"][0] / "bundle").exists()


def test_the_commands_print_one_line_results_and_one_line_errors(competition, tmp_path):
    from typer.testing import CliRunner

    from kagglecv.cli import app

    runner = CliRunner()
    packed = runner.invoke(app, ["pack", str(competition["runs"][0]), "--out", str(tmp_path / "b"), "--timing-images",
                                 "4", "--images", "1000000", "--max-minutes", "1"])
    assert packed.exit_code == 0, packed.output
    assert "s per 1,000 images" in packed.output and "warning: 1000000 images would take" in packed.output
    table, images, sample = _hidden_test(tmp_path / "hidden", competition["test"], competition["root"] / "public_test")
    inferred = runner.invoke(app, ["infer", str(tmp_path / "b"), "--test", str(table), "--images", str(images),
                                   "--sample", str(sample), "--out", str(tmp_path / "s.csv")])
    assert inferred.exit_code == 0 and "12 images in" in inferred.output, inferred.output
    no_images = runner.invoke(app, ["infer", str(tmp_path / "b"), "--test", str(table), "--out", str(tmp_path / "t.csv")])
    assert isinstance(no_images.exception, KagglecvError) and "give their folder with --images" in str(no_images.exception)
    assert not (tmp_path / "t.csv").exists()


def test_thresholds_tuned_on_oof_at_pack_time_make_the_label_lists_submit_makes(trained_runs, tmp_path):
    from kagglecv.core.runs import RunDir
    from kagglecv.data.submission import decide_submission

    config = trained_runs[("multilabel", 1)]
    run = tmp_path / "run"
    shutil.copytree(config.run_dir, run)  # the session's runs stay as other tests left them
    bundle = pack_run(run, tmp_path / "bundle", timing_images=0, threshold="oof").path
    classes = json.loads((bundle / "run.json").read_text())["classes"]
    packed = json.loads((bundle / "thresholds.json").read_text())
    decided = decide_submission(RunDir(run), classes, "multilabel", threshold="oof")
    assert packed == pytest.approx(decided.thresholds_for())
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"id": pd.read_csv(config.data.test_csv, dtype=str)["id"], "labels": ""}).to_csv(sample, index=False)
    expected = write_submission(run, sample, "expected", threshold="oof", out_dir=tmp_path / "submissions")
    assert expected.format == "labels"
    infer_test(bundle, config.data.test_csv, config.data.test_image_dir, tmp_path / "got.csv", sample, console=QUIET)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "got.csv", dtype=str, keep_default_na=False),
                                  pd.read_csv(expected.path, dtype=str, keep_default_na=False))
    recorded = run / "config.yaml"  # a run (not a bundle) whose config says submit.threshold: oof
    recorded_config = yaml.safe_load(recorded.read_text())
    recorded_config["submit"]["threshold"] = "oof"
    recorded.write_text(yaml.safe_dump(recorded_config))
    infer_test(run, config.data.test_csv, config.data.test_image_dir, tmp_path / "from-run.csv", sample, console=QUIET)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "from-run.csv", dtype=str, keep_default_na=False),
                                  pd.read_csv(expected.path, dtype=str, keep_default_na=False))
    infer_test(bundle, config.data.test_csv, config.data.test_image_dir, tmp_path / "half.csv", sample, threshold=0.5,
          console=QUIET)
    half = write_submission(run, sample, "half", threshold="0.5", out_dir=tmp_path / "submissions")
    assert pd.read_csv(tmp_path / "half.csv", dtype=str).equals(pd.read_csv(half.path, dtype=str))


def test_the_stacking_model_replays_from_its_json_record():
    rng = np.random.default_rng(0)
    for task, classes in (("multiclass", 4), ("multilabel", 3)):
        predictions = rng.dirichlet(np.ones(classes), size=(3, 60)) if task == "multiclass" else rng.random((3, 60, classes))
        targets = rng.integers(0, classes, 60) if task == "multiclass" else (rng.random((60, classes)) > 0.5).astype(int)
        fitted = StackModel(task, seed=0).fit(predictions, targets)
        state = json.loads(json.dumps(fitted.state()))
        rebuilt = stack_model_from_state(task, state, 3, classes, Path("weights.json"))
        np.testing.assert_allclose(rebuilt.predict(predictions), fitted.predict(predictions), atol=1e-12)
        with pytest.raises(KagglecvError, match=r"weights.json: stack_model\[0\]: coef"):
            stack_model_from_state(task, state, 2, classes, Path("weights.json"))  # a member fewer than fitted
        with pytest.raises(KagglecvError, match=r"weights.json: stack_model\[0\]: expected a rate"):
            stack_model_from_state(task, [{"coef": "abc"}] + state[1:], 3, classes, Path("weights.json"))


def test_timing_warns_only_past_the_limit():
    from kagglecv.nn.budget import Timing

    timing = Timing(images=64, fixed=2.0, per_image=0.01)
    assert timing_warning(timing, images=1000, max_minutes=1) is None
    assert "about 1.7 minutes" in timing_warning(timing, images=10_000, max_minutes=1)


def test_the_default_wheelhouse_leaves_out_what_kaggle_has():
    from kagglecv.core.wheelhouse import KAGGLE_PROVIDES, missing_on_kaggle

    needed = missing_on_kaggle(KAGGLE_PROVIDES)
    assert {"torch", "numpy", "scipy", "timm", "pandas"}.isdisjoint(needed)  # scipy comes with scikit-learn
    assert {"typer", "imagehash"} <= set(needed)


def test_a_glibc_platform_names_every_older_manylinux_tag_for_pip():
    from kagglecv.core.wheelhouse import platform_options

    tags = platform_options("manylinux_2_35_x86_64")[1::2]
    assert tags[0] == "manylinux_2_35_x86_64" and "manylinux_2_17_x86_64" in tags and "manylinux_2_16_x86_64" not in tags
    assert tags[-3:] == ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    assert platform_options("macosx_11_0_arm64") == ["--platform", "macosx_11_0_arm64"]


def kaggle_image(tmp_path: Path) -> Path:
    """A fresh virtual environment whose site sees this one's packages except kagglecv: the stand-in for a Kaggle
    image (torch, timm, ... installed; kagglecv not)."""
    image = tmp_path / "image"
    site_packages = Path(next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()))
    image.mkdir()
    for entry in site_packages.iterdir():
        if not entry.name.lower().startswith(("kagglecv", "__editable__")):
            (image / entry.name).symlink_to(entry)
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)  # pip too comes from the stand-in image (a pip of its own would bring an old setuptools)
    fresh_site = next((fresh / "lib").glob("python*/site-packages"))
    (fresh_site / "kaggle-image.pth").write_text(f"{image}\n")
    return fresh


def execute_offline(path: Path, inputs: Path, working: Path, tmp_path: Path, monkeypatch) -> tuple[Path, object]:
    """The notebook at ``path`` executed for real (nbclient) in a fresh kernel of the Kaggle-image stand-in, with
    ``inputs`` and ``working`` as /kaggle/input and /kaggle/working and no network (pip and proxies unreachable);
    returns the stand-in's environment and the executed notebook. Skips when no kernel can start here."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient is a dev dependency")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is a dev dependency")
    fresh = kaggle_image(tmp_path)
    spec = tmp_path / "jupyter" / "kernels" / "kaggle-image"
    spec.mkdir(parents=True)
    unreachable = "http://127.0.0.1:9"
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(fresh / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Kaggle image stand-in", "language": "python",
        "env": {"KAGGLE_INPUT": str(inputs), "KAGGLE_WORKING": str(working), "PYTHONPATH": "", "PIP_NO_INDEX": "1",
                "PIP_INDEX_URL": unreachable, "http_proxy": unreachable, "https_proxy": unreachable}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    notebook = nbformat.read(path, as_version=4)
    try:
        nbclient.NotebookClient(notebook, kernel_name="kaggle-image", timeout=600,
                                resources={"metadata": {"path": str(working)}}).execute()
    except RuntimeError as exc:
        if "Kernel died" in str(exc) or "kernel" in str(exc).lower() and "start" in str(exc).lower():
            pytest.skip(f"a Jupyter kernel could not start here: {exc}")
        raise
    return fresh, notebook


@pytest.mark.slow
def test_kagglecv_installs_offline_from_the_wheelhouse_and_infers(competition, tmp_path):
    """A fresh virtual environment whose site sees this one's packages except kagglecv (the stand-in for a Kaggle
    image), ``pip install --no-index --find-links wheels kagglecv``, then ``kagglecv infer`` from it."""
    from kagglecv.core.wheelhouse import requirement_closure

    everything = tuple(name for name in requirement_closure(["kagglecv"]) if name != "kagglecv")
    bundle = pack_run(competition["runs"][0], tmp_path / "bundle", wheels=True, provided=everything, timing_images=0).path
    assert [path.name.split("-")[0] for path in (bundle / "wheels").glob("*.whl")] == ["kagglecv"]
    fresh = kaggle_image(tmp_path)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    install = subprocess.run([str(fresh / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index",
                              "--find-links", str(bundle / "wheels"), "kagglecv"], capture_output=True, text=True,
                             env=environment, check=False)
    assert install.returncode == 0, install.stderr[-2000:]
    table, images, sample = _hidden_test(tmp_path / "hidden", competition["test"], competition["root"] / "public_test")
    out = tmp_path / "submission.csv"
    result = subprocess.run([str(fresh / "bin" / "kagglecv"), "infer", str(bundle), "--test", str(table), "--images",
                             str(images), "--sample", str(sample), "--out", str(out)], capture_output=True, text=True,
                            env=environment, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    located = subprocess.run([str(fresh / "bin" / "python"), "-c", "import kagglecv; print(kagglecv.__file__)"],
                             capture_output=True, text=True, env=environment, cwd=tmp_path, check=True)
    assert located.stdout.strip().startswith(str(fresh))
    assert len(pd.read_csv(out)) == len(pd.read_csv(sample))


def test_pack_times_a_run_whose_ids_are_its_file_names(trained_runs, tmp_path):
    config = trained_runs[("multiclass", 1)]
    run = tmp_path / "run"
    shutil.copytree(config.run_dir, run)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    recorded["data"]["image_col"] = recorded["data"]["id_col"]  # Cassava's shape: ids are 1000015157.jpg
    (run / "config.yaml").write_text(yaml.safe_dump(recorded))
    result = pack_run(run, tmp_path / "bundle", timing_images=8)
    assert result.timing is not None and result.timing.per_image > 0
    assert not [p for p in (tmp_path / "bundle").rglob("*") if "timing" in p.name], "timing images stay out"
    table = tmp_path / "hidden.csv"
    ids = pd.read_csv(config.data.test_csv, dtype=str)["id"].head(6)
    pd.DataFrame({"id": ids + ".png"}).to_csv(table, index=False)
    inferred = infer_test(result.path, table, config.data.test_image_dir, tmp_path / "named.csv", console=QUIET)
    assert inferred.rows == 6


def test_infer_without_a_test_table_reads_the_ids_from_the_sample_or_the_folder(competition, tmp_path):
    """Kaggle ships many competitions with no test.csv: the sample's rows, or the test folder's files, are the set."""
    run, images = competition["runs"][0], tmp_path / "test"
    images.mkdir()
    ids = sorted(pd.read_csv(competition["test"], dtype=str)["id"])
    for image_id in ids:
        shutil.copy(next((competition["root"] / "public_test").glob(f"{image_id}.*")), images)
    sample = tmp_path / "sample.csv"
    pd.DataFrame({"id": ids[::-1], "label": "x"}).to_csv(sample, index=False)
    infer_test(run, None, images, tmp_path / "from-sample.csv", sample, console=QUIET)
    assert pd.read_csv(tmp_path / "from-sample.csv", dtype=str)["id"].tolist() == ids[::-1]
    infer_test(run, None, images, tmp_path / "from-folder.csv", console=QUIET)
    by_table = tmp_path / "by-table.csv"
    infer_test(run, competition["test"], images, by_table, console=QUIET)
    from_folder = pd.read_csv(tmp_path / "from-folder.csv", dtype={"id": str}).set_index("id")
    assert from_folder.index.tolist() == ids
    pd.testing.assert_frame_equal(from_folder.sort_index(), pd.read_csv(by_table, dtype={"id": str}).set_index("id")
                                  .sort_index(), check_exact=False, atol=1e-7)
    with pytest.raises(KagglecvError, match="no test set; give --test TABLE, or --sample"):
        infer_test(run, None, None, tmp_path / "none.csv", console=QUIET)


def tree_checksums(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_the_notebook_runs_offline_in_a_fresh_kernel_and_writes_the_submission(competition, tmp_path, monkeypatch):
    """pack --notebook, then the notebook executed for real (nbclient, an ipykernel in a Kaggle-image stand-in
    without kagglecv, no network) over a Kaggle-like tree with a renamed hidden test: it installs kagglecv from the
    wheelhouse and writes the submission ``kagglecv infer`` writes, changing nothing under the read-only input."""
    from kagglecv.core.wheelhouse import requirement_closure

    everything = tuple(name for name in requirement_closure(["kagglecv"]) if name != "kagglecv")
    packed = pack_run(competition["runs"][0], tmp_path / "out" / "digits-bundle", wheels=True, provided=everything,
                      timing_images=0, notebook=True, competition="digits-comp")
    assert sorted(path.name for path in packed.notebook.iterdir()) == ["kernel-metadata.json", "submission.ipynb"]
    metadata = json.loads((packed.notebook / "kernel-metadata.json").read_text())
    assert metadata["enable_internet"] is False and metadata["competition_sources"] == ["digits-comp"]
    kaggle = tmp_path / "kaggle"
    inputs, working = kaggle / "input", kaggle / "working"
    working.mkdir(parents=True)
    shutil.copytree(packed.path, inputs / "digits-bundle")
    table, images, sample = _hidden_test(inputs / "digits-comp", competition["test"], competition["root"] / "public_test")
    images = images.rename(images.parent / "public_test")  # the names the run's own data had
    before = tree_checksums(inputs)
    for path in inputs.rglob("*"):
        path.chmod(path.stat().st_mode & ~0o222)
    fresh, notebook = execute_offline(packed.notebook / "submission.ipynb", inputs, working, tmp_path, monkeypatch)
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "kagglecv 0." in printed and "device cpu" in printed and "wrote" in printed, printed
    expected = tmp_path / "expected.csv"
    for path in inputs.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    infer_test(packed.path, table, images, expected, sample, console=QUIET)
    pd.testing.assert_frame_equal(pd.read_csv(working / "submission.csv", dtype=str), pd.read_csv(expected, dtype=str))
    assert tree_checksums(inputs) == before, "nothing written under the input"
    located = subprocess.run([str(fresh / "bin" / "python"), "-c", "import kagglecv; print(kagglecv.__file__)"],
                             capture_output=True, text=True, cwd=tmp_path, check=True,
                             env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    assert located.stdout.strip().startswith(str(fresh)), "installed from the wheelhouse by the notebook"


def test_a_repack_keeps_the_users_kaggle_metadata_and_never_replaces_a_folder_it_did_not_write(competition, tmp_path):
    run, out = competition["runs"][0], tmp_path / "bundle"
    packed = pack_run(run, out, timing_images=0, notebook=True, provided=("kagglecv",))
    dataset, kernel = out / "dataset-metadata.json", packed.notebook / "kernel-metadata.json"
    assert json.loads(dataset.read_text())["id"].endswith("/bundle")
    dataset.write_text(json.dumps({"title": "digits", "id": "someone/digits-bundle", "licenses": []}))
    kernel.write_text(json.dumps({"id": "someone/digits-submission", "code_file": "submission.ipynb"}))
    pack_run(run, out, timing_images=0, notebook=True, provided=("kagglecv",))
    assert json.loads(dataset.read_text())["id"] == "someone/digits-bundle"
    assert json.loads(kernel.read_text())["id"] == "someone/digits-submission"
    table, images, sample = _hidden_test(tmp_path / "hidden", competition["test"], competition["root"] / "public_test")
    infer_test(out, table, images, tmp_path / "s.csv", sample, console=QUIET)  # the user's file is outside the manifest
    mine = tmp_path / "other-notebook"
    mine.mkdir()
    (mine / "notes.md").write_text("mine")
    with pytest.raises(KagglecvError, match=r"--notebook .*other-notebook: exists and is not a kagglecv notebook folder"):
        pack_run(run, tmp_path / "other", timing_images=0, notebook=True, provided=("kagglecv",))
    assert (mine / "notes.md").read_text() == "mine" and not (tmp_path / "other").exists()


@pytest.mark.slow
def test_an_onnx_bundle_predicts_as_pytorch_with_onnx_runtime_and_no_torch(competition, tmp_path):
    """pack --format onnx: each fold's graph (normalization, TTA views, softmax inside) within 1e-4 of PyTorch on
    the run's own images (stated in the manifest); infer runs it in a process that never imports torch."""
    pytest.importorskip("onnxruntime", reason="the onnx extra")
    pytest.importorskip("onnxscript", reason="the onnx extra")
    table, images, sample = _hidden_test(tmp_path / "hidden", competition["test"], competition["root"] / "public_test")
    for source in (competition["runs"][1], competition["ensemble"]):  # an EMA run with hflip TTA; a power blend
        bundle = tmp_path / f"onnx-{source.name}"
        pack_run(source, bundle, timing_images=0, format="onnx")
        manifest = json.loads((bundle / MANIFEST).read_text())
        assert manifest["format"] == "onnx" and manifest["onnx_parity"]["max_abs_difference"] <= 1e-4
        assert manifest["onnx_parity"]["images"] > 0
        assert not list(bundle.rglob("*.safetensors")) and list(bundle.rglob("model.onnx"))
        expected = tmp_path / f"torch-{source.name}.csv"
        infer_test(source, table, images, expected, console=QUIET)
        got = tmp_path / f"onnx-{source.name}.csv"
        code = ("import sys\nfrom pathlib import Path\nfrom kagglecv.stages.infer import infer_test\n"
                f"infer_test(Path({str(bundle)!r}), Path({str(table)!r}), Path({str(images)!r}), Path({str(got)!r}))\n"
                "print('imported:', ','.join(m for m in ('torch', 'timm', 'albumentations') if m in sys.modules))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == "imported:", result.stdout
        classes = [column for column in pd.read_csv(expected).columns if column != "id"]
        np.testing.assert_allclose(pd.read_csv(got)[classes], pd.read_csv(expected)[classes], atol=1e-4)
        assert pd.read_csv(got, dtype=str)["id"].tolist() == pd.read_csv(expected, dtype=str)["id"].tolist()
