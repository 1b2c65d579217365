"""Pictures: learning curves of a fold."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .files import write_bytes  # noqa: E402


def save_figure(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    write_bytes(path, buffer.getvalue())


def plot_curves(history: list[dict], metric: str, path: Path, title: str = "") -> None:
    """Two panels: train vs validation loss, and the validation metric (raw and EMA), by epoch."""
    epochs = [row["epoch"] + 1 for row in history]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_axis.plot(epochs, [row["val_loss"] for row in history], "o-", label="validation")
    if "ema_val_loss" in history[0]:
        loss_axis.plot(epochs, [row["ema_val_loss"] for row in history], "o--", label="validation (EMA)")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    metric_axis.plot(epochs, [row[f"val_{metric}"] for row in history], "o-", color="C1", label="validation")
    if f"ema_val_{metric}" in history[0]:
        metric_axis.plot(epochs, [row[f"ema_val_{metric}"] for row in history], "o--", color="C2", label="validation (EMA)")
    metric_axis.set(xlabel="epoch", ylabel=metric, title=metric)
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title)
    save_figure(figure, path)
