"""Pseudo-labels and distillation: fold k learns only from the teacher's fold-k model (a planted leak proves it),
per-class selection rules, the teacher loss, and the report's pseudo-label counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kagglecv.core.config import PseudoConfig, validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError
from kagglecv.core.predictions import read_predictions
from kagglecv.core.runs import RunDir
from kagglecv.nn.losses import TeacherLoss
from kagglecv.stages.folds import make_folds
from kagglecv.training.teaching import select_pseudo_labels
from kagglecv.workflows.run import pseudo_config, run_pipeline
from tests.conftest import tiny_config

MEMORIZER = '''
from timm.models import register_model
from torch import nn


class Memorizer(nn.Module):
    """A linear layer on the raw pixels: it fits any few dozen noise images, and generalizes nothing."""

    def __init__(self, num_classes=3, in_chans=3, **kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(in_chans * 16 * 16, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes, global_pool=None):
        self.fc = nn.Linear(self.fc.in_features, num_classes)


@register_model
def memorizer(pretrained=False, **kwargs):
    return Memorizer(**kwargs)
'''


def _noise_competition(root: Path, write_images, rows: int = 48) -> dict:
    """Noise images with random labels, and a test set holding a copy of every training image under a new id:
    a test copy of a validation row is exactly what fold-averaged pseudo-labels leak through."""
    rng = np.random.default_rng(0)
    ids = [f"r{i:03d}" for i in range(rows)]
    labels = rng.permutation(np.repeat(["a", "b", "c"], rows // 3))
    pd.DataFrame({"id": ids, "label": labels}).to_csv(root / "train.csv", index=False)
    write_images(root / "train", ids, seed=1)
    (root / "test").mkdir()
    for image_id in ids:
        shutil.copy(root / "train" / f"{image_id}.png", root / "test" / f"copy-{image_id}.png")
    pd.DataFrame({"id": [f"copy-{image_id}" for image_id in ids]}).to_csv(root / "test.csv", index=False)
    (root / "nets.py").write_text(MEMORIZER)
    return {
        "experiment": "teacher", "runs_dir": str(root / "runs"),
        "data": {"train_csv": str(root / "train.csv"), "image_dir": str(root / "train"),
                 "test_csv": str(root / "test.csv"), "test_image_dir": str(root / "test")},
        "folds": {"method": "stratified", "n_splits": 4, "file": str(root / "folds.csv"), "near_duplicates": "off",
                  "duplicates": "ignore"},
        "model": {"name": f"{root / 'nets.py'}:memorizer", "img_size": 16},
        "augment": {"train": "none", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "train": {"epochs": 25, "batch_size": 12, "num_workers": 0, "lr": 0.02, "weight_decay": 0.0,
                  "sched": "none", "metric": "loss"},
    }


def _accuracy(run: Path) -> float:
    return float(pd.read_json(RunDir(run).score_path, typ="series")["overall"])


@pytest.mark.slow
def test_planted_leak_moves_the_fold_averaged_student_but_not_the_leak_free_one(tmp_path, write_images):
    raw = _noise_competition(tmp_path, write_images)
    quiet = Console(quiet=True)
    baseline = run_pipeline(validate_config(raw), console=quiet)
    teacher = RunDir(tmp_path / "runs" / "teacher")
    leak_free = run_pipeline(pseudo_config(teacher.path, "leak-free", None, 1.0, False), console=quiet)

    # The naive construction: every fold of the teacher "predicts" the fold-averaged test.csv.
    naive_teacher = tmp_path / "runs" / "naive-teacher"
    shutil.copytree(teacher.path, naive_teacher)
    for fold in RunDir(naive_teacher).fold_dirs():
        shutil.copy(teacher.test_path, fold.test_path)
    naive = run_pipeline(pseudo_config(naive_teacher, "naive", None, 1.0, False), console=quiet)

    chance = 1 / 3
    assert baseline.score.overall < chance + 0.25
    assert naive.score.overall > 0.9  # the other folds' models memorized fold k's rows: their labels leaked
    assert leak_free.score.overall < chance + 0.25
    assert abs(leak_free.score.overall - baseline.score.overall) < 0.25
    # Fold k's pseudo-labels are the teacher's fold-k predictions, row for row.
    for fold in RunDir(tmp_path / "runs" / "leak-free").fold_dirs():
        used = pd.read_csv(fold.pseudo_path, dtype={"id": str}).set_index("id")
        own = read_predictions(teacher.fold(fold.index).test_path).set_index("id").loc[used.index]
        assert (used.to_numpy().argmax(axis=1) == own.to_numpy().argmax(axis=1)).all()
        assert fold.read_done().pseudo.labels == 48  # top_frac 1.0: every test image


def test_distillation_uses_the_teacher_fold_model_on_the_fold_training_rows(tmp_path, digits_root):
    raw = tiny_config(tmp_path, digits_root)
    teacher = validate_config(raw)
    make_folds(teacher)
    run_pipeline(teacher, console=Console(quiet=True))
    student_raw = tiny_config(tmp_path, digits_root, distill={"teacher": str(teacher.run_dir), "weight": 0.7,
                                                              "temperature": 3.0})
    student_raw["experiment"] = "student"
    run_pipeline(validate_config(student_raw), console=Console(quiet=True))
    student = RunDir(tmp_path / "runs" / "student")
    folds = pd.read_csv(teacher.folds.file, dtype={"id": str}).set_index("id")["fold"]
    from kagglecv.data.load import load_train
    from kagglecv.nn.recipe import load_recipe

    data = load_train(teacher.data)
    recipe = load_recipe(teacher.run_dir)
    for fold in student.fold_dirs():
        targets = read_predictions(fold.teacher_path)
        assert (folds.loc[targets["id"]] != fold.index).all()  # only the fold's training rows
        assert len(targets) == int((folds != fold.index).sum())
        rows = np.flatnonzero(folds.loc[data.ids].to_numpy() != fold.index)
        expected = recipe.predict_fold(fold.index, data.images, rows)
        np.testing.assert_allclose(targets[data.classes].to_numpy(), expected, atol=1e-6)


def test_a_teacher_on_other_folds_is_refused(tmp_path, digits_root):
    raw = tiny_config(tmp_path, digits_root)
    teacher = validate_config(raw)
    make_folds(teacher)
    run_pipeline(teacher, console=Console(quiet=True))
    other = tiny_config(tmp_path / "other", digits_root, folds={"seed": 7, "file": str(tmp_path / "other-folds.csv")},
                        distill={"teacher": str(teacher.run_dir)})
    other["experiment"] = "student"
    with pytest.raises(KagglecvError, match="other folds"):
        run_pipeline(validate_config(other), console=Console(quiet=True))


def test_multiclass_selection_by_threshold_and_top_fraction():
    probabilities = np.array([[0.95, 0.03, 0.02], [0.4, 0.35, 0.25], [0.1, 0.85, 0.05], [0.2, 0.2, 0.6]])
    classes = ["a", "b", "c"]
    keep, targets = select_pseudo_labels(probabilities, PseudoConfig(teacher="t", threshold=0.8), "multiclass", classes)
    assert keep.tolist() == [0, 2]
    assert targets.tolist() == [[1, 0, 0], [0, 1, 0]]
    keep, targets = select_pseudo_labels(probabilities, PseudoConfig(teacher="t", top_frac=0.5, soft=True),
                                         "multiclass", classes)
    assert keep.tolist() == [0, 2]
    np.testing.assert_allclose(targets, probabilities[[0, 2]], atol=1e-7)
    per_class = PseudoConfig(teacher="t", threshold={"a": 0.99, "b": 0.8, "c": 0.55})
    keep, _ = select_pseudo_labels(probabilities, per_class, "multiclass", classes)
    assert keep.tolist() == [2, 3]


def test_multilabel_selection_leaves_unsure_labels_out_per_class():
    probabilities = np.array([[0.97, 0.5], [0.02, 0.91], [0.6, 0.4]])
    keep, targets = select_pseudo_labels(probabilities, PseudoConfig(teacher="t", threshold={"x": 0.95, "y": 0.9}),
                                         "multilabel", ["x", "y"])
    assert keep.tolist() == [0, 1]
    assert targets[0, 0] == 1 and np.isnan(targets[0, 1])
    assert targets[1].tolist() == [0, 1]


def test_teacher_loss_equals_its_definition():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    hard = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 0]), 4).float()
    teacher = torch.softmax(torch.randn(5, 4), dim=1)
    loss = TeacherLoss(4, True, distill_weight=0.3, temperature=2.0)(logits, torch.cat([hard, teacher], dim=1))
    ce = torch.nn.functional.cross_entropy(logits, hard.argmax(1))
    p_teacher = torch.softmax(torch.log(teacher) / 2.0, dim=1)
    kl = (p_teacher * (torch.log(p_teacher) - torch.log_softmax(logits / 2.0, dim=1))).sum(1).mean() * 4.0
    assert float(loss) == pytest.approx(float(0.7 * ce + 0.3 * kl), abs=1e-6)
    # Multi-label: a NaN label is left out of the mean.
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    masked = TeacherLoss(2, False)(torch.tensor([[2.0, -9.0], [-1.0, 0.5]]), targets)
    known = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0, 0.5]),
                                                                 torch.tensor([1.0, 0.0, 1.0]))
    assert float(masked) == pytest.approx(float(known), abs=1e-7)


def test_pseudo_command_makes_the_experiment_and_the_report_counts_its_labels(tmp_path, digits_root, monkeypatch,
                                                                            capsys):
    from typer.testing import CliRunner

    from kagglecv.cli import app, main
    from kagglecv.stages.report import build_report

    teacher = validate_config(tiny_config(tmp_path, digits_root))
    make_folds(teacher)
    run_pipeline(teacher, console=Console(quiet=True))
    result = CliRunner().invoke(app, ["pseudo", str(teacher.run_dir), "--name", "student", "--top-frac", "0.5",
                                      "--set", "train.seed=3"])
    assert result.exit_code == 0, result.output
    student = RunDir(tmp_path / "runs" / "student")
    recorded = student.read_config()
    assert recorded.pseudo.teacher == teacher.run_dir and recorded.pseudo.top_frac == 0.5
    assert recorded.train.seed == 3 and recorded.model == teacher.model
    for fold in student.fold_dirs():
        assert fold.read_done().pseudo.labels == 8  # half of the 16 test images
    markdown = build_report(tmp_path / "runs", pictures=False,
                            submissions_dir=tmp_path / "subs").markdown.read_text()
    assert "Pseudo-labels: fold 0: 8 of 16 test images pseudo-labelled; the student agrees with" in markdown
    assert "with its teacher on" in markdown and "of the 8 others" in markdown
    monkeypatch.setattr("sys.argv", ["kagglecv", "pseudo", str(teacher.run_dir), "--name", "x"])
    with pytest.raises(SystemExit) as refused:
        main()
    assert refused.value.code == 2 and "set threshold or top_frac" in capsys.readouterr().err


def test_multilabel_soft_pseudo_labels_and_distillation_with_mixup_train(tmp_path, digits_root):
    teacher = validate_config(tiny_config(tmp_path, digits_root, "multilabel"))
    make_folds(teacher)
    run_pipeline(teacher, console=Console(quiet=True))
    raw = tiny_config(tmp_path, digits_root, "multilabel", train={"mixup": 0.4, "label_smoothing": 0.1},
                      pseudo={"teacher": str(teacher.run_dir), "threshold": 0.55, "soft": True},
                      distill={"teacher": str(teacher.run_dir), "weight": 0.5})
    raw["experiment"] = "student"
    summary = run_pipeline(validate_config(raw), console=Console(quiet=True))
    assert np.isfinite(summary.score.overall)
    classes = RunDir(teacher.run_dir).read_info().classes
    for fold in RunDir(tmp_path / "runs" / "student").fold_dirs():
        used = pd.read_csv(fold.pseudo_path, dtype={"id": str})
        own = read_predictions(RunDir(teacher.run_dir).fold(fold.index).test_path).set_index("id").loc[used["id"]]
        values, probabilities = used[classes].to_numpy(np.float64), own[classes].to_numpy()
        sure = np.maximum(probabilities, 1 - probabilities) >= 0.55
        assert np.array_equal(~np.isnan(values), sure)  # unsure labels are NaN, left out of the loss
        np.testing.assert_allclose(values[sure], probabilities[sure], atol=1e-6)  # soft: the probabilities
        assert fold.teacher_path.is_file()
        assert fold.read_done().pseudo.labels == len(used)  # a fold may find no image it is sure of


def test_an_ensemble_teacher_predicts_each_fold_as_the_blend_of_its_members_folds(trained_runs, tmp_path):
    from kagglecv.nn.recipe import load_recipe
    from kagglecv.stages.ensemble import make_ensemble

    members = [trained_runs[("multiclass", seed)].run_dir for seed in (1, 2)]
    # Written to its own folder: the shared runs folder is what the report tests list.
    blend = make_ensemble(members, method="mean", name="teacher-mean", runs_dir=tmp_path)
    recipe = load_recipe(blend.path)
    classes = RunDir(members[0]).read_info().classes
    for fold in range(2):
        frames = [read_predictions(RunDir(run).fold(fold).test_path, classes) for run in members]
        ids = frames[0]["id"].to_numpy()
        expected = np.mean([frame.set_index("id").loc[ids, classes].to_numpy() for frame in frames], axis=0)
        np.testing.assert_allclose(recipe.fold_test_predictions(fold, ids), expected, atol=1e-6)


def test_a_student_of_a_teacher_with_focal_loss_is_refused():
    with pytest.raises(KagglecvError, match="train.loss"):
        validate_config({"experiment": "x", "data": {"train_csv": "t.csv"}, "train": {"loss": "focal"},
                         "distill": {"teacher": "runs/a"}})
