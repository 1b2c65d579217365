"""Round four's write-outside and code-execution classes, each shown twice: the guard holds, and with the guard
switched off the harm happens (a folder name that became config, a cache folder linked into the inputs, ``run DIR``
writing into the competition folder, a metadata link that copies a secret into an upload, a run folder's metric
code that runs). On the hostile-input world (48 digit images, two trained runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kagglecv.core import metric_file, notebook
from kagglecv.core.config import load_config
from kagglecv.data import cache
from kagglecv.stages import init

from .test_hostile_inputs import PLANTED, _run, planted_metric, snapshot, world  # noqa: F401  (module-scoped world)

TINY = ["--set", "model.name=test_resnet", "--set", "model.pretrained=false", "--set", "model.img_size=16",
        "--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.num_workers=0",
        "--set", "folds.n_splits=2", "--set", "folds.allow_rare_classes=true", "--set", "folds.near_duplicates=off"]


@pytest.fixture
def here(world, tmp_path):  # noqa: F811
    copy = tmp_path / "w"
    shutil.copytree(world, copy, symlinks=True)
    return copy


def competition(here: Path, name: str) -> Path:
    folder = here / name
    shutil.copytree(here / "data", folder)
    (folder / "sample.csv").rename(folder / "sample_submission.csv")
    return folder


def test_a_folder_name_never_becomes_config_and_the_escaping_is_what_stops_it(here, monkeypatch):
    escaped = "ESCAPED"  # a folder name holds no slash; a relative runs_dir is as much an escape from runs/
    folder = competition(here, f'comp\nruns_dir: "{escaped}"\ntracking: mlflow\n#')
    code, output = _run(["init", folder.name, "--metric", "accuracy", "--out", "c.yaml"], here)
    assert code == 2 and "holds a line break" in output and output.count("error:") == 1, output
    assert not (here / "c.yaml").exists() and not (here / escaped).exists()
    entries = [("experiment", "comp", "the competition folder's name"), ("data.train_csv", "train.csv", "found")]
    written = yaml.safe_load(init.render(entries, folder))  # the first line records the folder, escaped
    assert "runs_dir" not in written and "tracking" not in written
    assert json.loads(init.recorded_folder(folder)) == str(folder.resolve())
    monkeypatch.setattr(init, "recorded_folder", lambda folder: str(Path(folder).resolve()))
    injected = yaml.safe_load(init.render(entries, folder))
    assert injected["runs_dir"] == escaped and injected["tracking"] == "mlflow", \
        "without the escaping the folder's name sets runs_dir and tracking"


def test_a_linked_cache_folder_is_refused_and_the_check_is_what_keeps_the_inputs(here, monkeypatch):
    from kagglecv.core.errors import DataError
    from kagglecv.data.inputs import load_stage_inputs

    (here / "runs" / ".cache").mkdir(exist_ok=True)
    shutil.rmtree(here / "runs" / ".cache")
    (here / "runs" / ".cache").symlink_to(here / "data" / "train", target_is_directory=True)
    monkeypatch.chdir(here)
    config = load_config("base.yaml", ["data.cache=disk"])
    before = snapshot(here / "data", ())
    with pytest.raises(DataError, match="not a link"):
        load_stage_inputs(config)
    assert snapshot(here / "data", ()) == before
    monkeypatch.setattr(cache, "checked_cache_folder", lambda folder: folder)
    load_stage_inputs(config)
    assert list((here / "data" / "train").glob("images-*.npy")), "without the check the cache lands in the inputs"


def test_run_dir_never_writes_into_the_competition_folder_and_the_check_is_what_keeps_it(here, monkeypatch):
    folder = competition(here, "comp")
    code, output = _run(["init", "comp", "--metric", "accuracy"], here)
    assert code == 0, output
    before = snapshot(folder, ())
    args = ["run", "comp", "--set", "folds.file=comp/folds.csv", *TINY]
    code, output = _run(args, here)
    assert code == 2 and "never writes into the competition folder" in output, output
    assert snapshot(folder, ()) == before
    monkeypatch.setattr(init, "check_outputs_outside", lambda folder, config: None)
    code, output = _run(args, here)
    assert code == 0, output
    assert (folder / "folds.csv").is_file(), "without the check the folds file lands in the competition folder"


def test_a_metadata_link_never_copies_its_target_into_the_upload_and_the_check_is_what_stops_it(here, monkeypatch):
    secret = here / "kaggle.json"
    secret.write_text(json.dumps({"username": "me", "key": "api-key-123"}))
    pack = ["pack", "runs/base", "--out", "bundle", "--timing-images", "0"]
    code, output = _run(pack, here)
    assert code == 0, output
    (here / "bundle" / "dataset-metadata.json").unlink()
    (here / "bundle" / "dataset-metadata.json").symlink_to(secret)
    code, output = _run(pack, here)
    assert code == 2 and "is a link" in output, output
    monkeypatch.setattr(notebook, "refuse_link", lambda path: None)
    code, output = _run(pack, here)
    assert code == 0, output
    assert "api-key-123" in (here / "bundle" / "dataset-metadata.json").read_text(), \
        "without the check the secret is in the bundle to upload"


def test_a_run_folders_metric_file_never_runs_and_naming_it_is_what_lets_it(here, monkeypatch):
    planted_metric()(here)
    source = here / "evil.py"
    source.write_text(PLANTED.replace("0.5", "0.25"))  # content no earlier command of this process loaded
    code, output = _run(["score", "runs/base"], here)
    assert code == 2 and "not by you" in output, output
    assert not (here / "pwned").exists()
    code, output = _run(["score", "runs/base", "--metric", "evil.py"], here)
    assert code == 0 and (here / "pwned").read_text() == "ran\n", output
    source.write_text(PLANTED.replace("0.5", "0.125"))
    monkeypatch.setattr(metric_file, "forget_named_metric_files", lambda: None)
    monkeypatch.setattr(metric_file, "_NAMED_BY_USER", {metric_file._digest(source): "switched off"})
    code, output = _run(["score", "runs/base"], here)
    assert code == 0 and (here / "pwned").read_text() == "ran\nran\n", "without the rule the run's code runs"


def test_a_command_that_scores_nothing_never_loads_the_runs_metric_file(here):
    planted_metric()(here)  # inspect ranks errors by probability: the metric travels only to what scores
    code, output = _run(["inspect", "runs/base"], here)
    assert code == 0 and "evil.py" not in output, output
    assert not (here / "pwned").exists()


def test_twenty_thousand_labels_are_scored_from_indices_under_the_memory_limit(tmp_path):
    """A 20,000 x 20,000 one-hot would take 3 GiB; the bound is 1.5 GiB above the imports, and accuracy is exact."""
    import numpy as np
    import pandas as pd

    from .test_hostile_inputs import _run_bounded

    rng = np.random.default_rng(0)
    truth, guess = rng.integers(0, 20_000, 20_000), rng.integers(0, 20_000, 20_000)
    guess[:5_000] = truth[:5_000]
    pd.DataFrame({"id": range(20_000), "label": [f"c{k}" for k in truth]}).to_csv(tmp_path / "solution.csv", index=False)
    pd.DataFrame({"id": range(20_000), "label": [f"c{k}" for k in guess]}).to_csv(tmp_path / "sub.csv", index=False)
    code, output = _run_bounded(["score", "--submission", "sub.csv", "--solution", "solution.csv", "--metric",
                                 "accuracy"], tmp_path)
    assert code == 0, output
    assert float(output.split()[-1]) == pytest.approx(float(np.mean(truth == guess)), abs=1e-6)


def test_init_reads_only_the_head_of_a_300_mb_sample(here):
    """Kaggle samples run to hundreds of MB (one row per hidden test id): init needs the header and a few rows.
    Its peak resident memory (``VmHWM`` at exit): about 0.2 GB here, where reading the whole sample took 2.5 GB."""
    import subprocess
    import sys

    folder = competition(here, "comp")
    row = "".join(f"{index:032x},0\n" for index in range(100_000)).encode()
    with open(folder / "sample_submission.csv", "wb") as handle:
        handle.write(b"id,label\n")
        for _ in range(80):  # 80 x 3.5 MB
            handle.write(row)
    assert (folder / "sample_submission.csv").stat().st_size > 280e6
    code = ("import atexit, sys\n"
            "def peak():\n"
            "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "    print('peak', int(line.split()[1]) * 1024, file=sys.stderr)\n"
            "atexit.register(peak)\n"
            "sys.argv = ['kagglecv', 'init', 'comp', '--metric', 'accuracy', '--out', 'c.yaml']\n"
            "from kagglecv.cli import main\nmain()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    peak = int(result.stderr.split("peak")[-1].split()[0])  # VmHWM: this process's own, not the forking parent's
    assert peak < 1 << 30, f"init held {peak / 1e9:.2f} GB"
    assert load_config(here / "c.yaml").submit.sample == Path("comp/sample_submission.csv")
