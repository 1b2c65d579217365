"""The training loop of one fold: built objects in (model, loaders, optimizer, ... from
:func:`~kagglecv.training.components.build_fold_components`), a trained fold out.

``FoldTrainer`` reads top to bottom: set-up, one loop over epochs (train, let the selection score and keep weights,
checkpoint), the outcome. What "best" means is the selection's (:mod:`kagglecv.training.selection`): the best
validation epoch, or the last epoch of a full refit. The trainer writes the fold's weights, ``oof.csv`` (through the
selection), ``history.csv``, curves and ``last.pt``, all atomically; ``last.pt`` restores the exact state of an
epoch boundary or, after SIGTERM / Ctrl-C, of a step. Test predictions and ``done.json`` are the train stage's.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from kagglecv.core.console import Console, EpochProgress
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import remove_stale_temporaries, write_csv
from kagglecv.core.predictions import probabilities_from_logits, write_predictions
from kagglecv.core.runs import FoldDir
from kagglecv.core.topk import top_k_of_scores, write_top_k
from kagglecv.nn.fusion import forward_batch
from kagglecv.nn.models import set_frozen_batchnorm_eval
from kagglecv.nn.runtime import Runtime, all_gather, barrier
from kagglecv.nn.weights import save_weights
from kagglecv.presentation.plots import plot_curves
from kagglecv.training.averaging import WeightAverager
from kagglecv.training.checkpoint import Checkpoints, PlateauCounters
from kagglecv.training.components import FoldComponents, LoopSettings
from kagglecv.training.selection import (
    BestEpoch,
    BestTracker,
    LastEpoch,
    score_predictions,
)
from kagglecv.training.validation import validation_logits


class TrainingDiverged(KagglecvError):
    """The loss became NaN or infinite."""


CURVES_EVERY_S = 60.0


class TrainingInterrupted(KagglecvError):
    """SIGTERM or Ctrl-C: the state was saved; the process exits with 128 + the signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@contextlib.contextmanager
def _stop_requests(trainer: "FoldTrainer"):
    """While a fold trains, SIGTERM and SIGINT ask it to stop at the next optimizer step (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, _frame):
        trainer.stop_signal = signum

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class FoldOutcome:
    fold: int
    best_epoch: int
    best_score: float
    source: str
    seconds: float
    skipped: bool = False
    epochs_run: int = 0


class HeldOutTable(Protocol):
    """What the trainer validates against and writes the OOF file of (the data layer's ``CompetitionData`` is one):
    every row's id and target, the classes and the task."""

    task: str
    classes: list[str]
    ids: np.ndarray
    targets: np.ndarray

    def score_of(self, metric, scores: np.ndarray, rows: np.ndarray | None = None) -> float: ...


class FoldTrainer:
    """Trains one fold with the built ``parts``; construct, then call :meth:`fit`.

    ``selection`` decides which epoch's weights are kept (:class:`~kagglecv.training.selection.BestEpoch` or
    :class:`~kagglecv.training.selection.LastEpoch`); :class:`~kagglecv.training.checkpoint.Checkpoints` keeps
    ``last.pt``.
    """

    def __init__(self, settings: LoopSettings, data: HeldOutTable, parts: FoldComponents, folder: FoldDir,
                 runtime: Runtime, console: Console, selection: BestEpoch | LastEpoch):
        self.settings, self.data, self.parts, self.selection = settings, data, parts, selection
        self.fold, self.runtime, self.console, self.folder = folder.index, runtime, console, folder
        self.device = runtime.device
        self.epoch, self.global_step, self.history = 0, 0, []
        self._curves_drawn_at, self._curves_drawn_for = time.monotonic(), 0
        self.resume_step, self.partial_epoch, self.stop_signal, self.last_selection = 0, None, None, float("nan")
        self.best = BestTracker()
        self.averager = WeightAverager(self.settings.avg_weights, self.settings.avg_count, folder, runtime.is_main) \
            if self.settings.avg_weights else None
        self._averaged_model, self._average_changed = None, False
        self.checkpoints = Checkpoints(folder, {
            "model": parts.model, "optimizer": parts.optimizer, "scheduler": parts.scheduler,
            "scaler": parts.scaler, "ema": parts.ema, "best": self.best, "averager": self.averager,
            "plateau": PlateauCounters(parts.scheduler) if self.settings.plateau_scheduler else None}, console.line)

    # ----- the loop ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> FoldOutcome:
        started = time.time()
        self._restore_or_start(resume)
        progress = EpochProgress(self.console, self.fold, self.settings.epochs, self.parts.batches_per_epoch,
                                 enabled=self.runtime.is_main)
        with _stop_requests(self), progress:
            while self.epoch < self.settings.epochs and not self._patience_exhausted():
                row = self._train_epoch(progress)
                row |= self._evaluate()
                self.history.append(row)
                if self.parts.scheduler is not None and self.settings.plateau_scheduler:
                    self.parts.scheduler.step(self.epoch + 1, self.last_selection)
                self.epoch += 1
                self._save_last()
                progress.epoch_done(row, self.selection.metric.name)
        self._draw_curves(final=True)
        self._finish_selection()
        best_score = self.selection.metric.objective(self.best.score)
        return FoldOutcome(self.fold, self.best.epoch, best_score, self.best.source, time.time() - started,
                           epochs_run=self.epoch)

    def _train_epoch(self, progress: EpochProgress) -> dict:
        parts = self.parts
        self._set_training_size()
        frozen = self.settings.freeze(parts.model, self.epoch)
        parts.train_model.train()
        set_frozen_batchnorm_eval(parts.model, frozen)
        parts.train_sampler.set_epoch(self.epoch)
        first_step, partial = self.resume_step, self.partial_epoch
        parts.train_sampler.set_start(first_step * self.settings.batch_size)
        self.resume_step, self.partial_epoch = 0, None
        progress.start_epoch(self.epoch, first_step)
        loss_sum, seen, skipped, data_time, step_time = partial or (0.0, 0, 0, 0.0, 0.0)
        loss_sum = torch.tensor(loss_sum, device=self.device)
        tick = time.perf_counter()
        parts.optimizer.zero_grad(set_to_none=True)
        for step, (images, targets, rows, n_skipped) in enumerate(self._batches(), start=first_step):
            fetched = time.perf_counter()
            data_time += fetched - tick
            skipped += n_skipped
            need_update = self._is_update_step(step)
            if len(images):
                loss = self._train_step(images, targets, rows, step, need_update)
                loss_sum += loss.detach() * len(images)
                seen += len(images)
                progress.step(step + 1, loss)
            tick = time.perf_counter()
            step_time += tick - fetched
            if self.stop_signal is not None and need_update:
                self._save_mid_epoch(step + 1, (loss_sum.item(), seen, skipped, data_time, step_time))
        parts.train_sampler.set_start(0)
        return self._epoch_row(loss_sum.item(), seen, skipped, data_time, step_time)

    def _set_training_size(self) -> None:
        """``train.size_schedule``: the training loader of this epoch's image size (rebuilt when it changes)."""
        size = self.settings.size_at(self.epoch)
        if size != self.parts.train_size:
            self.parts.train_loader = self.parts.make_train_loader(size)
            self.parts.train_size = size
            self.console.line(f"fold {self.fold} epoch {self.epoch + 1}: training at {size} px")

    def _epoch_row(self, loss_sum: float, seen: int, skipped: int, data_time: float, step_time: float) -> dict:
        totals = all_gather((loss_sum, seen, skipped, data_time, step_time), self.runtime)
        loss_total, seen_total, skipped_total = (sum(t[i] for t in totals) for i in range(3))
        if skipped_total:
            self.console.line(f"fold {self.fold} epoch {self.epoch + 1}: skipped {skipped_total} unreadable training "
                              "images (named in the warnings above)")
        epoch_seconds = max(data_time + step_time, 1e-9)
        return {"epoch": self.epoch, "lr": self.parts.optimizer.param_groups[0]["lr"], "train_size": self.parts.train_size,
                "train_loss": loss_total / max(seen_total, 1), "images_per_sec": seen_total / epoch_seconds,
                "data_time": data_time, "step_time": step_time, "skipped_images": skipped_total}

    def _batches(self):
        """The training loader's batches; a data-loading worker that dies becomes a clear error, not a hang."""
        try:
            yield from self.parts.train_loader
        except RuntimeError as exc:
            if "DataLoader worker" in str(exc):
                raise KagglecvError(f"fold {self.fold}: a data-loading worker died ({' '.join(str(exc).split())}); "
                                    f"out of memory? try train.num_workers=0 to see the error in the main process") from None
            raise

    def _is_update_step(self, step: int) -> bool:
        """The optimizer steps after every ``accum_steps`` batches and after the epoch's last batch (timm's
        ``need_update``), so no accumulated gradient is dropped."""
        return (step + 1) % self.settings.accum_steps == 0 or step + 1 == self.parts.batches_per_epoch

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, step: int,
                    need_update: bool) -> torch.Tensor:
        parts = self.parts
        images = parts.normalize(images)
        targets = targets.to(self.device, non_blocking=True)
        if parts.batch_augment is not None:
            images = parts.batch_augment(images, self.epoch, step, rows)
        if self.settings.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if parts.mixup is not None and len(images) % 2 == 0:
            images, targets = parts.mixup(images, targets)
        with torch.autocast(self.device.type, dtype=parts.amp_dtype or torch.float32, enabled=parts.amp_dtype is not None):
            loss = parts.criterion(forward_batch(parts.train_model, images, rows, targets), targets)
        self._check_finite(loss, step)
        # Under DDP the micro-steps of an accumulation group skip the gradient all-reduce (nanoGPT, timm).
        skip_sync = parts.ddp_model is not None and not need_update
        with parts.ddp_model.no_sync() if skip_sync else contextlib.nullcontext():
            parts.scaler.scale(loss / self.settings.accum_steps).backward()
        if need_update:
            self._optimizer_step()
        return loss

    def _optimizer_step(self) -> None:
        parts = self.parts
        if self.settings.clip_grad is not None:
            parts.scaler.unscale_(parts.optimizer)
            nn.utils.clip_grad_norm_(parts.model.parameters(), self.settings.clip_grad)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if parts.lookahead is not None:
            parts.lookahead.update(parts.model, self.global_step)
        elif parts.ema is not None:
            parts.ema.update(parts.model, step=self.global_step)
        if parts.scheduler is not None and not self.settings.plateau_scheduler:
            parts.scheduler.step_update(self.global_step)

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss).item():
            lr = self.parts.optimizer.param_groups[0]["lr"]
            kept = (f"{self.folder.last_checkpoint} keeps epoch {self.epoch}" if self.epoch > 0
                    else "no epoch finished, nothing was saved")
            raise TrainingDiverged(f"fold {self.fold}: loss is {loss.item()} at epoch {self.epoch + 1} step {step} "
                                   f"(lr {lr:.3g}); training stopped, {kept}")

    # ----- what the selection keeps -------------------------------------------------------------------------------
    def _evaluate(self) -> dict:
        """This epoch's validation loss and metric of every weight source; what the selection keeps is saved (a full
        refit validates nothing: the epoch only joins the weight average)."""
        if not self.selection.validates:
            if self.averager is not None:
                self.averager.add(self.epoch, math.nan, self.parts.model.state_dict())
            return {}
        metric, task, row = self.selection.metric, self.data.task, {}
        for source in ("raw", "ema", "avg"):  # avg after raw: raw's score decides whether the epoch joins the average
            model = self.averaged_model() if source == "avg" else self.source_model(source)
            if model is None:
                continue
            rows, logits, loss = validation_logits(model, self.parts, task, self.runtime, self.settings.channels_last,
                                                   self.data.classes)
            probabilities = probabilities_from_logits(logits, task)
            value = score_predictions(metric, self.data, rows, probabilities, loss)
            prefix = "val" if source == "raw" else f"{source}_val"
            row |= {f"{prefix}_loss": loss, f"{prefix}_{metric.name}": metric.objective(value)}
            if self.selection.keep(self.best, source, self.epoch, value):
                self._keep(source, model, rows, probabilities)
            if source == "raw":
                self.raw_score_of_epoch(value)
        return row

    def _keep(self, source: str, model: nn.Module, rows: np.ndarray, probabilities: np.ndarray) -> None:
        """A source's best weights so far; for the best overall, the fold's OOF predictions too."""
        if not self.runtime.is_main:
            return
        save_weights(self.folder.weights(source), model.state_dict())
        if not self.best.is_overall_best(source, self.epoch):
            return
        folds = np.full(len(rows), self.folder.index)
        if self.settings.top_k_oof is not None:
            write_top_k(self.folder.oof_path, top_k_of_scores(self.data.ids[rows], probabilities, self.data.classes,
                                                              self.settings.top_k_oof, folds))
        else:
            write_predictions(self.folder.oof_path, self.data.ids[rows], probabilities, self.data.classes, folds=folds)

    def _finish_selection(self) -> None:
        """A full refit keeps its last weights of the chosen source; the selection then checks what was kept."""
        if self.selection.full_fit:
            source = self.selection.final_source(self.parts.ema is not None, self.averager is not None)
            state = self.averager.averaged_state() if source == "avg" else self.source_model(source).state_dict()
            if self.runtime.is_main:
                save_weights(self.folder.weights(source), state)
            self.best.score, self.best.epoch, self.best.source = math.nan, self.epoch - 1, source
        self.selection.finish(self.best, self.fold)

    # ----- the models the selection scores ----------------------------------------------------------------------
    def source_model(self, source: str) -> nn.Module | None:
        """The model holding a trained source's weights: ``raw``, or ``ema`` (None without EMA)."""
        if source == "ema":
            return self.parts.ema.module if self.parts.ema is not None else None
        return self.parts.model

    def averaged_model(self) -> nn.Module | None:
        """The model holding the average of the kept epochs' weights; None without averaging, or before two
        epochs are kept, or when this epoch left the kept set unchanged (its score is already recorded)."""
        if self.averager is None or len(self.averager.kept) < 2 or not self._average_changed:
            return None
        if self._averaged_model is None:
            self._averaged_model = copy.deepcopy(self.parts.model)
        self._averaged_model.load_state_dict(self.averager.averaged_state())
        return self._averaged_model.eval()

    def raw_score_of_epoch(self, selection: float) -> None:
        """The raw weights' selection score of this epoch: the plateau scheduler's signal, and whether the epoch
        joins the weight average."""
        self.last_selection = selection
        if self.averager is not None:
            self._average_changed = self.averager.add(self.epoch, selection, self.parts.model.state_dict())

    def _patience_exhausted(self) -> bool:
        return self.settings.patience is not None and self.best.epochs_since_best >= self.settings.patience

    # ----- checkpoints ------------------------------------------------------------------------------------------
    def _progress(self, step_in_epoch: int = 0, partial: tuple | None = None) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": step_in_epoch, "partial_epoch": list(partial or ()),
                "global_step": self.global_step, "history": self.history, "config": self.settings.recorded_config}

    def _save_last(self) -> None:
        self.best.end_epoch()
        if self.runtime.is_main:
            self.checkpoints.save(self._progress())
            if self.averager is not None:
                self.averager.remove_dropped()
            write_csv(self.folder.history_path, pd.DataFrame(self.history), float_format="%.6g")
            self._draw_curves(final=False)
        barrier(self.runtime)

    def _draw_curves(self, final: bool) -> None:
        """``curves.png`` at the fold's end, and during it at most once every :data:`CURVES_EVERY_S` seconds:
        drawing costs about half a second, a tenth of a short fold's epoch."""
        now = time.monotonic()
        due = final or now - self._curves_drawn_at >= CURVES_EVERY_S
        if not due or not self.runtime.is_main or self.selection.full_fit or len(self.history) == self._curves_drawn_for:
            return
        plot_curves(self.history, self.selection.metric.name, self.folder.curves_path,
                    title=f"{self.settings.title} fold {self.fold}")
        self._curves_drawn_at, self._curves_drawn_for = now, len(self.history)

    def _save_mid_epoch(self, step_in_epoch: int, partial: tuple) -> None:
        """On SIGTERM / Ctrl-C: save the exact mid-epoch state, then stop with the signal's exit code."""
        last = self.folder.last_checkpoint
        if self.runtime.is_main and not self.runtime.distributed:
            self.checkpoints.save(self._progress(step_in_epoch, partial))
            where = f"saved epoch {self.epoch + 1} step {step_in_epoch} in {last}"
        else:  # ranks would have to agree on the step: keep the last epoch boundary
            where = f"{last} keeps the last finished epoch"
        raise TrainingInterrupted(f"fold {self.fold}: stopped by {signal.Signals(self.stop_signal).name}; {where}; "
                                  "continue with --resume", exit_code=128 + self.stop_signal)

    def _restore_or_start(self, resume: bool) -> None:
        if self.runtime.is_main:
            self.folder.path.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder.path)
        if not self.checkpoints.exists():
            return
        if not resume:
            raise KagglecvError(f"fold {self.fold}: {self.folder.last_checkpoint} holds an unfinished run; pass "
                                f"--resume to continue it, or delete {self.folder.path} to start the fold again")
        progress = self.checkpoints.restore()
        self.epoch, self.global_step, self.history = progress["epoch"], progress["global_step"], list(progress["history"])
        self.resume_step = progress.get("step_in_epoch", 0)
        self.partial_epoch = tuple(progress["partial_epoch"]) if self.resume_step else None
        where = f"epoch {self.epoch + 1} step {self.resume_step}" if self.resume_step else f"the end of epoch {self.epoch}"
        self.console.line(f"fold {self.fold}: resumed at {where} from {self.folder.last_checkpoint}")
