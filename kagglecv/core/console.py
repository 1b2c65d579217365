"""Output for people: rich progress bars on a terminal, one plain line per epoch elsewhere (CI, nohup, logs)."""

from __future__ import annotations

import sys

from rich.console import Console as RichConsole
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Console:
    """Prints to stdout; ``interactive`` (a terminal) decides between progress bars and plain lines."""

    def __init__(self, interactive: bool | None = None, quiet: bool = False):
        self.rich = RichConsole(highlight=False, soft_wrap=True, emoji=False)  # ":-1:" in a TTA view is not 👎
        self.interactive = sys.stdout.isatty() if interactive is None else interactive
        self.quiet = quiet

    def line(self, text: str) -> None:
        if not self.quiet:
            self.rich.print(text, markup=False)

    def progress(self, label: str, total: int) -> "ImageProgress":
        return ImageProgress(self, label, total)


class ImageProgress:
    """A bar over the images of one prediction pass, with images/s and ETA on a terminal; silent elsewhere."""

    def __init__(self, console: Console, label: str, total: int):
        self.console, self.label, self.total = console, label, total
        self.bar: Progress | None = None
        self.task = None

    def __enter__(self) -> "ImageProgress":
        if self.console.interactive and not self.console.quiet:
            self.bar = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(),
                                TextColumn("{task.completed}/{task.total} images"),
                                TextColumn("{task.fields[rate]} images/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=self.console.rich, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, rate="-")
        return self

    def advance(self, images: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, images)
            speed = self.bar.tasks[0].speed
            self.bar.update(self.task, rate=f"{speed:.0f}" if speed else "-")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


class EpochProgress:
    """A progress bar over the steps of each epoch, with loss, speed and ETA; or a line per epoch."""

    def __init__(self, console: Console, fold: int, epochs: int, steps: int, enabled: bool = True):
        self.console, self.fold, self.epochs, self.steps = console, fold, epochs, steps
        self.enabled = enabled and not console.quiet
        self.progress: Progress | None = None
        self.task = None

    def __enter__(self) -> "EpochProgress":
        if self.enabled and self.console.interactive:
            self.progress = Progress(TextColumn("[bold]fold {task.fields[fold]}[/] epoch {task.fields[epoch]}"),
                                     BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                                     TimeRemainingColumn(), console=self.console.rich, transient=False)
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_epoch(self, epoch: int, first_step: int = 0) -> None:
        """A fresh bar for this epoch (starting at ``first_step`` when resumed mid-epoch)."""
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("", total=self.steps, completed=first_step, fold=self.fold,
                                           epoch=f"{epoch + 1}/{self.epochs}", loss=float("nan"))

    def step(self, step: int, loss) -> None:
        """Advance the bar; ``loss`` (a tensor) is read only when a bar is shown, to avoid a device sync."""
        if self.progress is None or self.task is None:
            return
        self.progress.update(self.task, completed=step, loss=float(loss))

    def epoch_done(self, row: dict, metric: str) -> None:
        if not self.enabled:
            return
        parts = [f"fold {self.fold} epoch {row['epoch'] + 1}/{self.epochs}", f"train_loss {row['train_loss']:.4f}"]
        if "val_loss" in row:  # a full-data refit has no validation rows
            parts += [f"val_loss {row['val_loss']:.4f}", f"val_{metric} {row[f'val_{metric}']:.4f}"]
        parts += [f"{source}_val_{metric} {row[f'{source}_val_{metric}']:.4f}" for source in ("ema", "avg")
                  if f"{source}_val_{metric}" in row]
        parts += [f"lr {row['lr']:.3g}", f"{row['images_per_sec']:.0f} img/s",
                  f"data {row['data_time']:.1f}s / step {row['step_time']:.1f}s"]
        self.console.line("  ".join(parts))
