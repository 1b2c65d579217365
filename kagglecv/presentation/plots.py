"""Pictures: learning curves, fold scores, confusion matrices, per-class scores, image galleries, CV against the
leaderboard. Figures are made without pyplot (matplotlib's advice for programs that only write files): no global
state (a user's backend is left as it was), nothing to close."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from kagglecv.core.files import write_bytes


def save_figure(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


def plot_curves(history: list[dict], metric: str, path: Path, title: str = "") -> None:
    """Two panels: train vs validation loss, and the validation metric (raw, EMA, averaged weights), by epoch."""
    epochs = [row["epoch"] + 1 for row in history]
    figure = Figure(figsize=(10, 3.8))
    loss_axis, metric_axis = figure.subplots(1, 2)
    loss_axis.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_axis.plot(epochs, [row["val_loss"] for row in history], "o-", color="C1", label="validation")
    metric_axis.plot(epochs, [row[f"val_{metric}"] for row in history], "o-", color="C1", label="validation")
    for source, label, colour in (("ema", "EMA", "C2"), ("avg", "averaged weights", "C4")):
        if any(f"{source}_val_loss" in row for row in history):  # averaged weights are scored from epoch 2 on
            loss_axis.plot(epochs, [row.get(f"{source}_val_loss", float("nan")) for row in history], "o--",
                           color=colour, label=f"validation ({label})")
            metric_axis.plot(epochs, [row.get(f"{source}_val_{metric}", float("nan")) for row in history], "o--",
                             color=colour, label=f"validation ({label})")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    metric_axis.set(xlabel="epoch", ylabel=metric, title=metric)
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title)
    save_figure(figure, path)


def plot_residuals(truth: np.ndarray, predicted: np.ndarray, names: list[str], path: Path, title: str) -> None:
    """Per target, two panels: predicted against true (with the line of perfect predictions), and the residual
    (predicted - true) against the prediction."""
    figure = Figure(figsize=(10, 3.8 * len(names)))
    axes = np.asarray(figure.subplots(len(names), 2)).reshape(len(names), 2)
    for column, (scatter, residual) in enumerate(axes):
        true, guess = truth[:, column], predicted[:, column]
        low, high = float(min(true.min(), guess.min())), float(max(true.max(), guess.max()))
        scatter.scatter(true, guess, s=10, alpha=0.6)
        scatter.plot([low, high], [low, high], "--", color="C3", label="predicted = true")
        scatter.set(xlabel=f"true {names[column]}", ylabel=f"predicted {names[column]}", title="predicted against true")
        scatter.legend(fontsize=8)
        residual.scatter(guess, guess - true, s=10, alpha=0.6, color="C1")
        residual.axhline(0, linestyle="--", color="C3")
        residual.set(xlabel=f"predicted {names[column]}", ylabel="predicted - true", title="residuals")
        for axis in (scatter, residual):
            axis.grid(alpha=0.3)
    figure.suptitle(title)
    save_figure(figure, path)


def plot_fold_curves(histories: dict[int, list[dict]], metric: str, path: Path, title: str) -> None:
    """Every fold's validation metric and train/validation loss by epoch, one colour per fold."""
    figure = Figure(figsize=(11, 4))
    loss_axis, metric_axis = figure.subplots(1, 2)
    for fold, history in sorted(histories.items()):
        epochs = [row["epoch"] + 1 for row in history]
        colour = f"C{fold % 10}"
        loss_axis.plot(epochs, [row["train_loss"] for row in history], "--", color=colour, alpha=0.6)
        loss_axis.plot(epochs, [row["val_loss"] for row in history], "-", color=colour, label=f"fold {fold}")
        metric_axis.plot(epochs, [row[f"val_{metric}"] for row in history], "o-", color=colour, label=f"fold {fold}")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss (solid: validation, dashed: train)")
    metric_axis.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title)
    save_figure(figure, path)


def plot_confusion_matrix(matrix, classes: list[str], path: Path, title: str) -> None:
    """Row-normalized confusion matrix (true class by row), counts written in the cells when it fits."""

    n = len(classes)
    size = max(5.0, min(0.45 * n + 2.5, 22.0))
    figure = Figure(figsize=(size, size * 0.9))
    axis = figure.subplots()
    normalized = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axis.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8 if n > 20 else 9)
    axis.set_yticks(range(n), classes, fontsize=8 if n > 20 else 9)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    axis.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                              color="white" if normalized[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class")
    save_figure(figure, path)


def plot_per_class(values: dict[str, float], kind: str, path: Path, title: str) -> None:
    """Horizontal bars of a per-class score (AP or recall), worst at the top; classes without positives omitted."""
    items = sorted(((value, name) for name, value in values.items() if value == value), reverse=True)
    height = max(3.0, 0.22 * len(items) + 1.2)
    figure = Figure(figsize=(7, height))
    axis = figure.subplots()
    axis.barh([name for _, name in items], [value for value, _ in items], color="C0")
    axis.set(xlabel=kind, xlim=(0, 1), title=title)
    axis.tick_params(axis="y", labelsize=8 if len(items) > 30 else 9)
    axis.grid(axis="x", alpha=0.3)
    save_figure(figure, path)


def plot_fold_scores(per_fold: dict[int, float], metric: str, overall: float, path: Path, title: str) -> None:
    """The OOF score of each fold, with the score of all OOF rows as a line."""
    figure = Figure(figsize=(6, 3.5))
    axis = figure.subplots()
    folds = sorted(per_fold)
    axis.bar([f"fold {fold}" for fold in folds], [per_fold[fold] for fold in folds], color="C0")
    axis.axhline(overall, color="C3", linestyle="--", label=f"all OOF rows: {overall:.4f}")
    values = [per_fold[fold] for fold in folds]
    low, high = min(values + [overall]), max(values + [overall])
    margin = max((high - low) * 0.5, 0.01)
    axis.set(ylabel=metric, ylim=(max(0.0, low - margin), high + margin), title=title)
    axis.legend(loc="lower right")
    axis.grid(axis="y", alpha=0.3)
    save_figure(figure, path)


def plot_gallery(rows: list[list[tuple]], path: Path, title: str, row_titles: list[str] | None = None) -> None:
    """A grid of images, one list of ``(image, caption, colour)`` tiles per row; captions under each image.

    ``image`` is H x W x 3 (or x 1) uint8; small images are drawn with nearest-neighbour scaling so digits and
    32 px photos stay sharp.
    """
    columns = max((len(row) for row in rows), default=1)
    figure = Figure(figsize=(1.9 * columns, 2.35 * len(rows) + 0.5))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_axis_off()
            if c >= len(row):
                continue
            image, caption, colour = row[c]
            grey = image.ndim == 3 and image.shape[2] == 1
            axis.imshow(image[:, :, 0] if grey else image, cmap="gray" if grey else None,
                        interpolation="nearest" if max(image.shape[:2]) <= 64 else "antialiased")
            axis.set_title(caption, fontsize=7.5, color=colour, pad=3)
        if row_titles:
            axes[r][0].text(-0.08, 0.5, row_titles[r], transform=axes[r][0].transAxes, rotation=90, ha="right",
                            va="center", fontsize=8.5, fontweight="bold")
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    save_figure(figure, path)


def plot_cv_vs_leaderboard(points, correlation: float | None, path: Path) -> None:
    """Each submission's CV against its public leaderboard score; gaps out of line with the others in red."""
    figure = Figure(figsize=(6.4, 5))
    axis = figure.subplots()
    cv = [point.cv for point in points]
    public = [point.public for point in points]
    colours = ["C3" if point.flagged else "C0" for point in points]
    axis.scatter(cv, public, c=colours, s=36, zorder=3)
    for point in points:
        axis.annotate(point.file.removesuffix(".gz").removesuffix(".csv"), (point.cv, point.public), fontsize=7,
                      xytext=(4, 3), textcoords="offset points", color="C3" if point.flagged else "0.25")
    low, high = min(cv + public), max(cv + public)
    margin = max((high - low) * 0.08, 0.002)
    axis.plot([low - margin, high + margin], [low - margin, high + margin], ":", color="0.5", label="public = CV")
    r = "n/a (fewer than 3 submissions)" if correlation is None else f"{correlation:.3f}"
    flagged = sum(point.flagged for point in points)
    axis.set(xlabel="CV (out-of-fold)", ylabel="public leaderboard",
             title=f"CV vs public LB: Pearson r = {r}" + (f"; {flagged} gap(s) out of line (red)" if flagged else ""))
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    save_figure(figure, path)
