import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from kagglecv.core.console import Console
from kagglecv.core.errors import DataError, KagglecvError
from kagglecv.data.load import load_train
from kagglecv.stages.predict import predict_run, tta_view
from kagglecv.stages.report import build_report
from kagglecv.stages.score import score_oof_file, score_run

QUIET = Console(quiet=True)


def test_tta_views_are_exact_tensor_transforms():
    import torch

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(tta_view("hflip")(x), x.flip(-1))
    assert torch.equal(tta_view("rot180")(x), x.flip(-1).flip(-2))
    assert torch.equal(tta_view("transpose")(tta_view("transpose")(x)), x)
    assert tta_view("scale:1.5")(x).shape == (2, 3, 6, 6)
    with pytest.raises(KagglecvError, match="unknown view 'spin'"):
        tta_view("spin")


def test_view_names_print_as_written(capsys):
    Console(interactive=False).line("TTA ['none', 'shift:-1:0']")  # rich would render ":-1:" as an emoji
    assert "shift:-1:0" in capsys.readouterr().out


def test_rotate_and_shift_views_move_pixels_where_they_say():
    import torch

    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    # A quarter turn lands every pixel centre on a pixel centre: bilinear rotation equals rot90, counter-clockwise.
    assert torch.allclose(tta_view("rotate:90")(x), tta_view("rot90")(x), atol=1e-4)
    assert torch.allclose(tta_view("rotate:-90")(x), tta_view("rot270")(x), atol=1e-4)
    assert torch.allclose(tta_view("rotate:0")(x), x, atol=1e-5)
    right_down = tta_view("shift:2:1")(x)
    assert torch.equal(right_down[..., 1:, 2:], x[..., :-1, :-2])
    # The uncovered border is reflected, as the training shifts fill it: column 0 mirrors column 2 about column 1.
    assert torch.equal(right_down[..., 1:, 0], x[..., :-1, 2]) and torch.equal(right_down[..., 0, 2:], x[..., 1, :-2])
    assert torch.equal(tta_view("shift:-1:0")(x)[..., :, :-1], x[..., :, 1:])
    assert torch.equal(tta_view("shift:-1:0")(x)[..., :, -1], x[..., :, -2])
    assert torch.equal(tta_view("shift:9:0")(x)[..., :, 1:], x[..., :, :1].expand(2, 3, 5, 4)), "repeated past the image"
    assert torch.equal(tta_view("hflip+shift:2:1")(x), tta_view("shift:2:1")(x.flip(-1))), "left to right"
    for bad in ("rotate:90:1", "rotate:400", "shift:1", "shift:0.5:0", "shift:99:0", "rotate:nan", "hflip+shift:1"):
        with pytest.raises(KagglecvError, match="expected"):
            tta_view(bad)


def test_predict_without_tta_reproduces_the_training_oof(trained_runs):
    config = trained_runs[("multiclass", 1)]
    before = pd.read_csv(config.run_dir / "oof.csv", dtype={"id": str})
    result = predict_run(config.run_dir, ["none"], console=QUIET)
    after = pd.read_csv(config.run_dir / "oof.csv", dtype={"id": str})
    assert after["id"].tolist() == before["id"].tolist()
    np.testing.assert_allclose(after.iloc[:, 2:].to_numpy(), before.iloc[:, 2:].to_numpy(), atol=1e-5)
    assert result.tta == ["none"]


def test_predict_with_hflip_averages_views_and_auto_records_its_choice(trained_runs):
    config = trained_runs[("multiclass", 2)]
    result = predict_run(config.run_dir, ["none", "hflip"], console=QUIET)
    assert set(result.candidate_scores) == {"none", "hflip"}
    recorded = json.loads((config.run_dir / "predict.json").read_text())
    assert recorded["tta"] == ["none", "hflip"] and recorded["oof_score"] == pytest.approx(result.oof_score)
    test = pd.read_csv(config.run_dir / "test.csv", dtype={"id": str})
    np.testing.assert_allclose(test.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)
    auto = predict_run(config.run_dir, "auto", console=QUIET)
    assert auto.tta[0] == "none" and set(auto.tta) <= set(auto.candidate_scores)
    assert auto.oof_score >= auto.candidate_scores["none"], "auto never keeps a view that lowers the score"


def test_score_matches_sklearn_overall_and_per_fold(trained_runs):
    config = trained_runs[("multiclass", 1)]
    result = score_run(config.run_dir)
    data = load_train(config.data)
    oof = pd.read_csv(config.run_dir / "oof.csv", dtype={"id": str})
    predicted = oof[data.classes].to_numpy().argmax(axis=1)
    assert result.overall == pytest.approx(accuracy_score(data.targets, predicted), abs=1e-12)
    for fold in (0, 1):
        mask = oof["fold"].to_numpy() == fold
        assert result.per_fold[fold] == pytest.approx(accuracy_score(data.targets[mask], predicted[mask]), abs=1e-12)
    assert result.fold_std == pytest.approx(np.std(list(result.per_fold.values())), abs=1e-12)
    assert json.loads((config.run_dir / "score.json").read_text())["overall"] == pytest.approx(result.overall)
    assert score_run(config.run_dir, "log_loss").higher_is_better is False


def test_score_an_oof_file_from_another_tool(trained_runs, tmp_path):
    config = trained_runs[("multiclass", 1)]
    oof = pd.read_csv(config.run_dir / "oof.csv", dtype={"id": str}).sample(frac=1, random_state=0)
    oof.drop(columns=["fold"]).to_csv(tmp_path / "other.csv", index=False)
    result = score_oof_file(tmp_path / "other.csv", config.data.train_csv)
    assert result.overall == pytest.approx(score_run(config.run_dir, write=False).overall, abs=1e-12)
    assert result.per_fold == {}
    oof.drop(columns=["fold"]).iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(DataError, match=r"short\.csv: ids differ .* 1 missing"):
        score_oof_file(tmp_path / "short.csv", config.data.train_csv)


def test_multilabel_score_reports_ap_per_class(trained_runs):
    result = score_run(trained_runs[("multilabel", 1)].run_dir)
    assert result.metric == "map" and result.per_class_kind == "AP"
    assert {"map_voc07", "map_voc", "micro_map"} <= set(result.other_metrics)


def test_report_ranks_runs_per_competition_and_draws_pictures(trained_runs):
    runs_dir = trained_runs[("multiclass", 1)].runs_dir
    report = build_report(runs_dir, submissions_dir=runs_dir.parent / "submissions")
    leaderboard, path = report.leaderboard, report.markdown
    assert [entry.name for entry in leaderboard] and len(leaderboard) == 2
    assert leaderboard[0].score.overall >= leaderboard[1].score.overall
    text = path.read_text()
    assert "### Leaderboard" in text and "### Journal" in text and "seed 1" in text
    journal_second = sorted(leaderboard, key=lambda entry: entry.created)[1]
    assert any("train.seed: 1 -> 2" in change or "train.seed: 2 -> 1" in change for change in journal_second.change)
    for entry in leaderboard:
        names = {picture.name for picture in entry.pictures}
        assert names == {"curves.png", "fold_scores.png", "confusion.png"}
        assert all(picture.stat().st_size > 5000 for picture in entry.pictures)
