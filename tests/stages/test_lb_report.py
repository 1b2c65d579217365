"""CV against the leaderboard (submissions/log.csv, kagglecv lb), the HTML report in a real browser, and the MLflow
mirror with the real library."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.core.files import sha256_file
from kagglecv.core.runs import RunDir
from kagglecv.data.scoring import run_score
from kagglecv.data.submission_log import cv_vs_leaderboard, read_log
from kagglecv.stages.report import build_report

runner = CliRunner()


@pytest.fixture
def runs_copy(trained_runs, tmp_path):
    """The two multiclass runs (real digits, 2 folds), copied so that this module's writes stay its own."""
    source = trained_runs[("multiclass", 1)].runs_dir
    shutil.copytree(source, tmp_path / "runs")
    return tmp_path / "runs", trained_runs[("multiclass", 1)]


def write_sample(config, path):
    ids = pd.read_csv(config.data.test_csv, dtype=str)["id"]
    pd.DataFrame({"id": ids, "label": "zero"}).to_csv(path, index=False)
    return path


def test_submit_logs_each_submission_and_lb_records_the_score(runs_copy, tmp_path):
    runs_dir, config = runs_copy
    sample = write_sample(config, tmp_path / "sample.csv")
    subs = tmp_path / "subs"
    for run in ("multiclass-s1", "multiclass-s2"):
        assert runner.invoke(app, ["score", str(runs_dir / run)]).exit_code == 0
        result = runner.invoke(app, ["submit", str(runs_dir / run), "--sample", str(sample), "--out-dir", str(subs)])
        assert result.exit_code == 0, result.output
    log = read_log(subs / "log.csv")
    assert list(log["file"]) == ["multiclass-s1.csv", "multiclass-s2.csv"]
    for row in log.itertuples():
        score = json.loads((runs_dir / row.run / "score.json").read_text())
        assert float(row.cv) == pytest.approx(score["overall"], abs=1e-6) and row.metric == score["metric"]
        assert row.sha256 == sha256_file(subs / row.file) and row.public == ""
    result = runner.invoke(app, ["lb", "multiclass-s2", "--public", "0.8125", "--out-dir", str(subs)])
    assert result.exit_code == 0, result.output
    log = read_log(subs / "log.csv")
    assert list(log["public"]) == ["", "0.812500"] and list(log["private"]) == ["", ""]
    missing = runner.invoke(app, ["lb", "nope", "--public", "0.5", "--out-dir", str(subs)])
    assert missing.exit_code != 0 and "no submission named 'nope'" in str(missing.exception)
    refused = runner.invoke(app, ["submit", str(runs_dir / "multiclass-s1"), "--sample", str(sample), "--name", "log",
                                  "--out-dir", str(subs)])
    assert refused.exit_code != 0 and "submissions log" in str(refused.exception)
    assert read_log(subs / "log.csv").shape[0] == 2


def test_cv_vs_leaderboard_correlation_and_a_planted_outlier():
    cv = np.array([0.80, 0.82, 0.85, 0.86, 0.88, 0.90])
    public = cv + np.array([0.010, 0.012, 0.009, 0.011, -0.060, 0.010])  # the fifth overfits the CV
    log = pd.DataFrame({"time": "", "file": [f"s{i}.csv" for i in range(6)], "run": [f"r{i}" for i in range(6)],
                        "metric": "accuracy", "cv": [f"{value:.6f}" for value in cv],
                        "sha256": "", "public": [f"{value:.6f}" for value in public], "private": ""})
    log.loc[6] = ["", "unscored.csv", "r6", "accuracy", "0.9", "", "", ""]
    points, correlation = cv_vs_leaderboard(log)
    assert [point.file for point in points] == [f"s{i}.csv" for i in range(6)]
    assert [point.flagged for point in points] == [False, False, False, False, True, False]
    assert correlation == pytest.approx(pearsonr(cv, public).statistic, abs=1e-9)


def browser():
    """A Chromium that playwright can drive, or a skip saying why not."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "bench"))
    from report_screenshot import find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium package)")


@pytest.mark.slow
def test_html_report_loads_in_chromium_with_every_image_and_sorts(runs_copy, tmp_path):
    browser()
    from playwright.sync_api import sync_playwright
    from report_screenshot import find_chromium

    runs_dir, config = runs_copy
    subs = tmp_path / "subs"
    sample = write_sample(config, tmp_path / "sample.csv")
    for run, public in (("multiclass-s1", "0.61"), ("multiclass-s2", "0.64")):
        runner.invoke(app, ["submit", str(runs_dir / run), "--sample", str(sample), "--out-dir", str(subs)])
        runner.invoke(app, ["lb", run, "--public", public, "--out-dir", str(subs)])
    result = runner.invoke(app, ["report", str(runs_dir), "--inspect", "--submissions", str(subs)])
    assert result.exit_code == 0 and result.output.count("inspected ") == 2, result.output
    report = build_report(runs_dir, submissions_dir=subs)
    html = report.html.read_text()
    assert "http://" not in html and "https://" not in html and "src='data:image/png;base64," in html
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox"])
        page = chromium.new_page()
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(report.html.resolve().as_uri())
        page.wait_for_load_state("load")
        names = page.eval_on_selector_all("table.leaderboard tbody tr", "rows => rows.map(r => r.cells[1].textContent)")
        assert names == [entry.name for entry in report.leaderboard]
        images = page.evaluate("() => Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        pictures = sum(len(entry.pictures) + len(entry.analysis["pictures"]) for entry in report.leaderboard) + 1
        assert len(images) == pictures and all(done and width > 0 for done, width in images)
        journal = page.eval_on_selector_all("table.journal tbody tr", "rows => rows.map(r => r.cells[5].textContent)")
        assert sorted(journal) == ["0.610000", "0.640000"]
        cv_header = page.locator("table.leaderboard th", has_text="folds mean")
        for expected in (sorted, lambda values: sorted(values, reverse=True)):
            cv_header.click()
            values = page.eval_on_selector_all("table.leaderboard tbody tr",
                                               "rows => rows.map(r => parseFloat(r.cells[8].dataset.sort))")
            assert values == expected(values)
        chromium.close()
    assert all(url.startswith(("file:", "data:")) for url in requests)


def sync(runs_dir, *extra):
    return subprocess.run([sys.executable, "-m", "kagglecv", "track", "sync", str(runs_dir), *extra],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_mlflow_sync_mirrors_runs_once_even_from_two_processes_at_once(runs_copy):
    pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install -e '.[dev,mlflow]'")
    from mlflow.tracking import MlflowClient

    runs_dir, _ = runs_copy
    scored = {path.parent.name for path in runs_dir.glob("*/score.json")}
    first, second = (subprocess.Popen([sys.executable, "-m", "kagglecv", "track", "sync", str(runs_dir)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2))
    outputs = [process.communicate(timeout=300) for process in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert sorted("logged 2 run(s)" in out for out, _ in outputs) == [False, True]  # one logged, one found them
    client = MlflowClient(f"sqlite:///{runs_dir.resolve() / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments() if e.name != "Default"]
    found = client.search_runs(experiments)
    assert sorted(run.info.run_name for run in found) == ["multiclass-s1", "multiclass-s2"]
    for run in found:
        recorded = runs_dir / run.info.run_name / "score.json"
        assert recorded.exists() == (run.info.run_name in scored), "track writes nothing into a run"
        score = json.loads(recorded.read_text()) if recorded.exists() else run_score(RunDir(recorded.parent)).to_dict()
        assert run.data.metrics[f"cv_{score['metric']}"] == pytest.approx(score["overall"], abs=1e-12)
        history = pd.read_csv(runs_dir / run.info.run_name / "fold0" / "history.csv")
        logged = client.get_metric_history(run.info.run_id, "fold0/val_loss")
        logged = sorted(logged, key=lambda metric: metric.step)
        assert [metric.step for metric in logged] == list(history["epoch"])
        assert [metric.value for metric in logged] == pytest.approx(list(history["val_loss"]), abs=1e-12)
        assert run.data.params["train.seed"] in ("1", "2")
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "score.json"} <= artifacts
        assert str(runs_dir.resolve()) in run.info.artifact_uri
    assert "logged 0 run(s)" in sync(runs_dir).stdout
    oof = runs_dir / "multiclass-s1" / "oof.csv"
    oof.write_text(oof.read_text().replace("\n", "\n", 1))  # unchanged bytes: still nothing to do
    assert "logged 0 run(s)" in sync(runs_dir).stdout
    frame = pd.read_csv(oof, dtype={"id": str})
    frame.iloc[:, 2:] = frame.iloc[:, 2:].to_numpy()[:, ::-1]  # re-predicted differently: replaced, not duplicated
    frame.to_csv(oof, index=False)
    assert runner.invoke(app, ["score", str(runs_dir / "multiclass-s1")]).exit_code == 0
    assert "logged 1 run(s) (multiclass-s1)" in sync(runs_dir).stdout
    names = sorted(run.info.run_name for run in client.search_runs(experiments))
    assert names == ["multiclass-s1", "multiclass-s2"]
