"""The train stage: one timm model per fold, with out-of-fold and test predictions.

``train_run`` trains the requested folds of an experiment (skipping those that are done) and, once every fold is
done, merges the folds' OOF files and averages their test predictions. ``FoldTrainer`` is the per-fold loop, to
be read top to bottom: set-up, then one loop over epochs (train, evaluate, keep the best, checkpoint), then the
fold's outputs. Everything it writes is atomic, and ``last.pt`` restores the exact state of an epoch boundary.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from timm.data import Mixup
from timm.loss import create_classification_loss
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from .config import Config
from .console import Console, EpochProgress
from .data import CompetitionData, load_test, load_train
from .errors import KagglecvError
from .files import remove_stale_temporaries, write_bytes_keep_previous, write_csv, write_json
from .folds import read_folds
from .decoding import check_images
from .images import ImageDataset, build_augment
from .inference import FoldPredictor, probabilities_from_logits, run_inference
from .metrics import DEFAULT_METRIC, get_metric, score
from .models import create_model, freeze_for_epoch, input_normalization, set_frozen_batchnorm_eval
from .plots import plot_curves
from .predictions import average_predictions, merge_oof, write_predictions
from .run_dir import RunDir, prepare_run_dir
from .runtime import (Runtime, all_gather, autocast_dtype, barrier, capture_rng_state, restore_rng_state,
                      seed_everything, setup_runtime)
from .sampling import EpochSampler, balanced_weights, build_loader, collate_skipping_unreadable
from .weights import load_torch, save_weights


class TrainingDiverged(KagglecvError):
    """The loss became NaN or infinite."""


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


def train_run(config: Config, folds: list[int] | None = None, *, resume: bool = False, force: bool = False,
              console: Console | None = None) -> list[FoldOutcome]:
    """Train the given folds (all when None) of ``config``'s experiment; merge predictions when all are done.

    Args:
        folds: fold numbers to train; the others are left alone (run them elsewhere, in parallel).
        resume: continue a fold killed mid-training from its ``last.pt``.
        force: accept a config that differs from the one the run folder was started with.
    """
    console = console or Console()
    runtime = setup_runtime(config.train.device)
    data = load_train(config.data)
    fold_of = read_folds(Path(config.folds.file), data)
    test = load_test(config.data, data.classes, data.task) if config.data.test_csv else None
    check_images([*data.paths, *(test.paths if test is not None else [])])
    run = prepare_run_dir(config, force=force)
    n_folds = int(fold_of.max()) + 1
    chosen = list(folds) if folds is not None else list(range(n_folds))
    bad = [fold for fold in chosen if not 0 <= fold < n_folds]
    if bad:
        raise KagglecvError(f"--fold {bad[0]}: expected 0..{n_folds - 1} (the folds file has {n_folds} folds)")
    # The run's identity is written once a fold can start (so a failed start leaves none), and once per command.
    write_identity = functools.cache(lambda: run.write_identity(config, data) if runtime.is_main else None)
    outcomes = [_train_fold(config, data, fold_of, test, fold, run, runtime, console, resume, write_identity)
                for fold in chosen]
    if runtime.is_main:
        finish_run(run, data, n_folds, test is not None, console)
    return outcomes


def _train_fold(config: Config, data: CompetitionData, fold_of: np.ndarray, test: CompetitionData | None, fold: int,
                run: RunDir, runtime: Runtime, console: Console, resume: bool,
                write_identity: Callable[[], None]) -> FoldOutcome:
    """Train one fold under its lock, unless it is done; ``write_identity`` is called once its trainer is built."""
    folder = run.fold(fold)
    with folder.lock() if runtime.is_main else contextlib.nullcontext():
        if folder.is_done():
            info = folder.read_done()
            console.line(f"fold {fold}: done already (best {info['metric']} {info['best_score']:.4f}), skipped")
            return FoldOutcome(fold, info["best_epoch"], info["best_score"], info["source"], 0.0, True)
        trainer = FoldTrainer(config, data, fold_of, test, fold, run, runtime, console)
        write_identity()
        return trainer.fit(resume=resume)


def finish_run(run: RunDir, data: CompetitionData, n_folds: int, has_test: bool, console: Console) -> bool:
    """When every fold is done: write the run's ``oof.csv`` (every id once) and fold-averaged ``test.csv``."""
    folds = [run.fold(index) for index in range(n_folds)]
    if not all(fold.is_done() for fold in folds):
        return False
    oof = merge_oof([fold.oof_path for fold in folds], data.ids, data.classes)
    write_csv(run.oof_path, oof, float_format="%.7g")
    if has_test:
        test = average_predictions([fold.test_path for fold in folds], data.classes)
        write_csv(run.test_path, test, float_format="%.7g")
    console.line(f"all {n_folds} folds done: wrote {run.oof_path}" + (" and test.csv" if has_test else ""))
    return True


def main_metric(config: Config, task: str) -> str:
    """The metric that picks the best epoch: train.metric, else the competition metric, else the task's default."""
    name = config.train.metric if config.train.metric != "auto" else (config.metric or DEFAULT_METRIC[task])
    if name != "loss":
        try:
            get_metric(name, task)
        except ValueError as exc:
            raise KagglecvError(f"train.metric / metric: {exc}") from None
    return name


def score_predictions(metric: str, task: str, targets: np.ndarray, probabilities: np.ndarray, loss: float) -> float:
    """The epoch-selection score, higher is better (loss and log losses are negated)."""
    if metric == "loss":
        return -loss
    try:
        value = score(metric, task, targets, probabilities)
    except ValueError:  # e.g. ROC AUC of a fold holding one class: no score, never a best epoch
        return float("nan")
    return value if get_metric(metric, task).higher_is_better else -value


class BestTracker:
    """The best selection score of each weight source (raw, EMA), the best overall, and epochs since it improved.

    Scores are higher-is-better selection scores; NaN never counts as an improvement.
    """

    def __init__(self) -> None:
        self.by_source = {"raw": -math.inf, "ema": -math.inf}
        self.score, self.epoch, self.source = -math.inf, -1, "raw"
        self.epochs_since_best = 0

    def update(self, source: str, value: float, epoch: int) -> bool:
        """Record ``source``'s score of ``epoch``; True when it beats that source's best (its weights are kept)."""
        if not value > self.by_source[source]:
            return False
        self.by_source[source] = value
        if value > self.score:
            self.score, self.epoch, self.source = value, epoch, source
            self.epochs_since_best = -1  # end_epoch makes it 0
        return True

    def is_overall_best(self, source: str, epoch: int) -> bool:
        return self.epoch == epoch and self.source == source

    def end_epoch(self) -> None:
        self.epochs_since_best += 1

    def state_dict(self) -> dict:
        return {**self.by_source, "overall": self.score, "epoch": self.epoch, "source": self.source,
                "stale": self.epochs_since_best}

    def load_state_dict(self, state: dict) -> None:
        self.by_source = {"raw": state["raw"], "ema": state["ema"]}
        self.score, self.epoch, self.source = state["overall"], state["epoch"], state["source"]
        self.epochs_since_best = state["stale"]


class FoldTrainer:
    """Trains one fold. Construct, then call :meth:`fit`."""

    def __init__(self, config: Config, data: CompetitionData, fold_of: np.ndarray, test: CompetitionData | None,
                 fold: int, run: RunDir, runtime: Runtime, console: Console):
        self.config, self.data, self.test, self.fold, self.runtime, self.console = config, data, test, fold, runtime, console
        self.cfg = config.train
        self.folder = run.fold(fold)
        self.metric = main_metric(config, data.task)
        self.train_rows = np.flatnonzero(fold_of != fold)
        self.valid_rows = np.flatnonzero(fold_of == fold)
        self.num_outputs = 1 if data.task == "binary" else len(data.classes)
        seed_everything(self.cfg.seed + fold)
        self.device = runtime.device
        self.model = create_model(config.model, self.num_outputs).to(self.device)
        if self.cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_targets = self._loss_targets()
        self.train_loader, self.valid_loader = self._loaders()
        self.optimizer = create_optimizer_v2(self.model, opt=self.cfg.opt, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                             momentum=self.cfg.momentum, layer_decay=config.model.layer_decay)
        self.batches_per_epoch = len(self.train_loader)
        self.steps_per_epoch = max(1, math.ceil(self.batches_per_epoch / self.cfg.accum_steps))
        self.scheduler = self._scheduler()
        self.criterion = self._criterion().to(self.device)
        self.mixup = self._mixup()
        self.ema = ModelEmaV3(self.model, decay=self.cfg.ema_decay, use_warmup=True) if self.cfg.ema else None
        self.amp_dtype = autocast_dtype(self.cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.train_model = self._wrap_model()
        self.epoch, self.global_step, self.history = 0, 0, []
        self.resume_step, self.partial_epoch, self.stop_signal = 0, None, None
        self.best = BestTracker()
        # Every object with state_dict/load_state_dict, saved and restored by one loop: a new one is one new key.
        self.stateful = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                         "scaler": self.scaler, "ema": self.ema, "best": self.best}

    # ----- set-up -----------------------------------------------------------------------------------------------
    def _loss_targets(self) -> np.ndarray:
        if self.data.task == "multilabel":
            return (self.data.targets != 0).astype(np.float32)
        if self.data.task == "binary":
            return self.data.targets.astype(np.float32)[:, None]
        return self.data.targets

    def _loaders(self) -> tuple[DataLoader, DataLoader]:
        in_chans = self.config.model.in_chans
        mean, std = input_normalization(self.model, self.config.augment.mean, self.config.augment.std, in_chans)
        size, seed = self.config.model.img_size, self.cfg.seed + self.fold
        train_set = ImageDataset(self.data.paths, self.train_targets,
                                 build_augment(self.config.augment.train, size, mean, std, train=True,
                                               hflip=self.config.augment.hflip), seed,
                                 skip_unreadable=True, channels=in_chans)
        valid_set = ImageDataset(self.data.paths, self.train_targets,  # an OOF row is never dropped: errors raise
                                 build_augment(self.config.augment.eval, size, mean, std, train=False), None,
                                 channels=in_chans)
        weights = balanced_weights(self.data.targets[self.train_rows]) if self.cfg.sampler == "balanced" else None
        if weights is not None and self.data.task == "multilabel":
            raise KagglecvError("train.sampler=balanced needs one label per row; the task is multilabel")
        rank, world = self.runtime.rank, self.runtime.world_size
        self.train_sampler = EpochSampler(self.train_rows, shuffle=True, seed=seed, weights=weights, rank=rank, world_size=world)
        valid_sampler = EpochSampler(self.valid_rows, shuffle=False, rank=rank, world_size=world)
        drop_last = len(self.train_sampler) > self.cfg.batch_size
        train_loader = build_loader(train_set, self.train_sampler, self.cfg.batch_size, self.cfg.num_workers, self.device,
                                    drop_last, collate_fn=collate_skipping_unreadable)
        valid_loader = build_loader(valid_set, valid_sampler, self.cfg.batch_size, self.cfg.num_workers, self.device)
        return train_loader, valid_loader

    def _scheduler(self):
        if self.cfg.sched == "none":
            return None
        scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=self.cfg.sched, num_epochs=self.cfg.epochs, decay_epochs=self.cfg.decay_epochs,
            decay_milestones=self.cfg.decay_milestones, decay_rate=self.cfg.decay_rate, min_lr=self.cfg.min_lr,
            warmup_lr=self.cfg.warmup_lr, warmup_epochs=self.cfg.warmup_epochs, plateau_mode="max",
            step_on_epochs=self.cfg.sched == "plateau", updates_per_epoch=self.steps_per_epoch)
        return scheduler

    def _criterion(self) -> nn.Module:
        multi_label = self.data.task != "multiclass"
        soft = self.cfg.mixup > 0 or self.cfg.cutmix > 0
        kind = {"auto": None, "focal": "poly"}.get(self.cfg.loss, self.cfg.loss)
        options = {"poly_epsilon": 0.0, "poly_gamma": 2.0} if self.cfg.loss == "focal" else {}
        if self.cfg.class_weights:
            weight = self._inverse_frequency_weights(multi_label)
            if not multi_label:  # timm's factory weights only BCE/ASL; torch's CE takes weights, soft targets too
                if self.cfg.loss not in ("auto", "ce"):
                    raise KagglecvError(f"train.class_weights works with loss ce for multiclass, got {self.cfg.loss!r}")
                return nn.CrossEntropyLoss(weight=weight, label_smoothing=0.0 if soft else self.cfg.label_smoothing)
            options["pos_weight"] = weight
        return create_classification_loss(kind, multi_label=multi_label, smoothing=self.cfg.label_smoothing,
                                          soft_targets=soft and not multi_label, **options)

    def _inverse_frequency_weights(self, multi_label: bool) -> torch.Tensor:
        """Per class: rows / (classes x rows of the class) for CE; negatives / positives for BCE's pos_weight."""
        targets = self.train_targets[self.train_rows]
        if multi_label:
            positives = targets.sum(axis=0)
            return torch.tensor((len(targets) - positives) / np.maximum(positives, 1), dtype=torch.float32)
        counts = np.bincount(targets, minlength=self.num_outputs)
        return torch.tensor(len(targets) / (self.num_outputs * np.maximum(counts, 1)), dtype=torch.float32)

    def _mixup(self) -> Mixup | None:
        if self.cfg.mixup <= 0 and self.cfg.cutmix <= 0:
            return None
        return Mixup(mixup_alpha=self.cfg.mixup, cutmix_alpha=self.cfg.cutmix, prob=self.cfg.mixup_prob,
                     label_smoothing=self.cfg.label_smoothing, num_classes=self.num_outputs,
                     multi_label=self.data.task != "multiclass")

    def _wrap_model(self) -> nn.Module:
        model = self.model
        self.ddp_model = None
        if self.runtime.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=device_ids, find_unused_parameters=self.config.model.freeze is not None)
        if self.cfg.compile:
            model = torch.compile(model)
        return model

    # ----- the loop ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> FoldOutcome:
        started = time.time()
        self._restore_or_start(resume)
        with _stop_requests(self), EpochProgress(self.console, self.fold, self.cfg.epochs, len(self.train_loader), enabled=self.runtime.is_main) as progress:
            while self.epoch < self.cfg.epochs and not self._patience_exhausted():
                row = self._train_epoch(progress)
                row |= self._evaluate_epoch()
                self.history.append(row)
                if self.scheduler is not None and self.cfg.sched == "plateau":
                    self.scheduler.step(self.epoch + 1, self.last_selection)
                self.epoch += 1
                self._save_last()
                progress.epoch_done(row, self.metric)
        if self.best.epoch < 0:
            raise KagglecvError(f"fold {self.fold}: {self.metric} could not be computed on any epoch (NaN); "
                                "is every class present in this fold's validation rows?")
        outcome = FoldOutcome(self.fold, self.best.epoch, self._reported(self.best.score), self.best.source,
                              time.time() - started)
        self._finish(outcome)
        return outcome

    def _train_epoch(self, progress: EpochProgress) -> dict:
        frozen = freeze_for_epoch(self.model, self.config.model, self.epoch)
        self.train_model.train()
        set_frozen_batchnorm_eval(self.model, frozen)
        self.train_sampler.set_epoch(self.epoch)
        first_step, partial = self.resume_step, self.partial_epoch
        self.train_sampler.set_start(first_step * self.cfg.batch_size)
        self.resume_step, self.partial_epoch = 0, None
        progress.start_epoch(self.epoch, first_step)
        loss_sum, seen, skipped, data_time, step_time = partial or (0.0, 0, 0, 0.0, 0.0)
        loss_sum = torch.tensor(loss_sum, device=self.device)
        tick = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        for step, (images, targets, _, n_skipped) in enumerate(self._batches(), start=first_step):
            fetched = time.perf_counter()
            data_time += fetched - tick
            skipped += n_skipped
            need_update = self._is_update_step(step)
            if len(images):
                loss = self._train_step(images, targets, step, need_update)
                loss_sum += loss.detach() * len(images)
                seen += len(images)
                progress.step(step + 1, loss)
            tick = time.perf_counter()
            step_time += tick - fetched
            if self.stop_signal is not None and need_update:
                self._save_mid_epoch(step + 1, (loss_sum.item(), seen, skipped, data_time, step_time))
        self.train_sampler.set_start(0)
        totals = all_gather((loss_sum.item(), seen, skipped, data_time, step_time), self.runtime)
        loss_total, seen_total, skipped_total = (sum(t[i] for t in totals) for i in range(3))
        if skipped_total:
            self.console.line(f"fold {self.fold} epoch {self.epoch + 1}: skipped {skipped_total} unreadable training "
                              "images (named in the warnings above)")
        epoch_seconds = max(data_time + step_time, 1e-9)
        return {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"],
                "train_loss": loss_total / max(seen_total, 1), "images_per_sec": seen_total / epoch_seconds,
                "data_time": data_time, "step_time": step_time, "skipped_images": skipped_total}

    def _batches(self):
        """The training loader's batches; a data-loading worker that dies becomes a clear error, not a hang."""
        try:
            yield from self.train_loader
        except RuntimeError as exc:
            if "DataLoader worker" in str(exc):
                raise KagglecvError(f"fold {self.fold}: a data-loading worker died ({' '.join(str(exc).split())}); "
                                    f"out of memory? try train.num_workers=0 to see the error in the main process") from None
            raise

    def _is_update_step(self, step: int) -> bool:
        """The optimizer steps after every ``accum_steps`` batches and after the epoch's last batch (timm's
        ``need_update``), so no accumulated gradient is dropped."""
        return (step + 1) % self.cfg.accum_steps == 0 or step + 1 == self.batches_per_epoch

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int, need_update: bool) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixup is not None and len(images) % 2 == 0:
            images, targets = self.mixup(images, targets)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loss = self.criterion(self.train_model(images), targets)
        self._check_finite(loss, step)
        # Under DDP the micro-steps of an accumulation group skip the gradient all-reduce (nanoGPT, timm).
        skip_sync = self.runtime.distributed and not need_update
        with self.ddp_model.no_sync() if skip_sync else contextlib.nullcontext():
            self.scaler.scale(loss / self.cfg.accum_steps).backward()
        if need_update:
            self._optimizer_step()
        return loss

    def _optimizer_step(self) -> None:
        if self.cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        if self.scheduler is not None and self.cfg.sched != "plateau":
            self.scheduler.step_update(self.global_step)

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss).item():
            lr = self.optimizer.param_groups[0]["lr"]
            kept = (f"{self.folder.last_checkpoint} keeps epoch {self.epoch - 1}" if self.epoch > 0
                    else "no epoch finished, nothing was saved")
            raise TrainingDiverged(f"fold {self.fold}: loss is {loss.item()} at epoch {self.epoch} step {step} "
                                   f"(lr {lr:.3g}); training stopped, {kept}")

    def _evaluate_epoch(self) -> dict:
        row = {}
        for source, model in (("raw", self.model), ("ema", self.ema.module if self.ema else None)):
            if model is None:
                continue
            rows, logits, loss = self._predict_valid(model)
            probabilities = probabilities_from_logits(logits, self.data.task)
            selection = score_predictions(self.metric, self.data.task, self.data.targets[rows], probabilities, loss)
            prefix = "val" if source == "raw" else "ema_val"
            row |= {f"{prefix}_loss": loss, f"{prefix}_{self.metric}": self._reported(selection)}
            self._keep_if_best(source, model, selection, rows, probabilities)
            if source == "raw":
                self.last_selection = selection
        return row

    def _reported(self, selection: float) -> float:
        """The metric's own value from the selection score (which is negated for lower-is-better metrics)."""
        lower_is_better = self.metric == "loss" or not get_metric(self.metric, self.data.task).higher_is_better
        return -selection if lower_is_better else selection

    def _predict_valid(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray, float]:
        rows, by_view = run_inference(model, self.valid_loader, self.device, self.amp_dtype, self.cfg.channels_last)
        logits = by_view["none"]
        targets = torch.as_tensor(self.train_targets[rows])
        loss_fn = nn.BCEWithLogitsLoss(reduction="sum") if self.data.task != "multiclass" else nn.CrossEntropyLoss(reduction="sum")
        loss_sum = float(loss_fn(torch.as_tensor(logits), targets)) if len(rows) else 0.0
        gathered = all_gather((rows, logits, loss_sum), self.runtime)
        rows = np.concatenate([g[0] for g in gathered])
        logits = np.concatenate([g[1] for g in gathered])
        order = np.argsort(rows)
        # Validation loss is CE per row, or BCE per label (whatever the training loss), so epochs and runs compare.
        per_row = 1 if self.data.task == "multiclass" else self.num_outputs
        return rows[order], logits[order], sum(g[2] for g in gathered) / max(len(rows) * per_row, 1)

    def _keep_if_best(self, source: str, model: nn.Module, score: float, rows: np.ndarray, probabilities: np.ndarray) -> None:
        if not self.best.update(source, score, self.epoch):
            return
        if self.runtime.is_main:
            save_weights(self.folder.weights(source), model.state_dict())
            if self.best.is_overall_best(source, self.epoch):
                write_predictions(self.folder.oof_path, self.data.ids[rows], probabilities, self.data.classes,
                                  folds=np.full(len(rows), self.fold))

    def _patience_exhausted(self) -> bool:
        return self.cfg.patience is not None and self.best.epochs_since_best >= self.cfg.patience

    # ----- checkpoints ------------------------------------------------------------------------------------------
    def _state(self, step_in_epoch: int = 0, partial: tuple | None = None) -> dict:
        state = {name: part.state_dict() for name, part in self.stateful.items() if part is not None}
        return state | {
            "epoch": self.epoch, "step_in_epoch": step_in_epoch, "partial_epoch": list(partial or ()),
            "global_step": self.global_step, "history": self.history, "rng": capture_rng_state(),
            "config": self.config.model_dump_json(),
        }

    def _load_state(self, state: dict) -> None:
        for name, part in self.stateful.items():
            if part is not None:
                part.load_state_dict(state[name])
        self.epoch, self.global_step, self.history = state["epoch"], state["global_step"], list(state["history"])
        self.resume_step = state.get("step_in_epoch", 0)
        self.partial_epoch = tuple(state["partial_epoch"]) if self.resume_step else None
        restore_rng_state(state["rng"])

    def _save_last(self) -> None:
        self.best.end_epoch()
        if not self.runtime.is_main:
            barrier(self.runtime)
            return
        write_bytes_keep_previous(self.folder.last_checkpoint, _serialize(self._state()), self.folder.previous_checkpoint)
        write_csv(self.folder.history_path, pd.DataFrame(self.history), float_format="%.6g")
        plot_curves(self.history, self.metric, self.folder.curves_path, title=f"{self.config.experiment} fold {self.fold}")
        barrier(self.runtime)

    def _save_mid_epoch(self, step_in_epoch: int, partial: tuple) -> None:
        """On SIGTERM / Ctrl-C: save the exact mid-epoch state, then stop with the signal's exit code."""
        if self.runtime.is_main and not self.runtime.distributed:
            write_bytes_keep_previous(self.folder.last_checkpoint, _serialize(self._state(step_in_epoch, partial)),
                                      self.folder.previous_checkpoint)
            where = f"saved epoch {self.epoch} step {step_in_epoch} in {self.folder.last_checkpoint}"
        else:  # ranks would have to agree on the step: keep the last epoch boundary
            where = f"{self.folder.last_checkpoint} keeps the last finished epoch"
        raise TrainingInterrupted(f"fold {self.fold}: stopped by {signal.Signals(self.stop_signal).name}; {where}; "
                                  "continue with --resume", exit_code=128 + self.stop_signal)

    def _restore_or_start(self, resume: bool) -> None:
        last = self.folder.last_checkpoint
        if self.runtime.is_main:
            self.folder.path.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder.path)
        if not self.folder.has_checkpoint():
            return
        if not resume:
            raise KagglecvError(f"fold {self.fold}: {last} holds an unfinished run; pass --resume to continue it, "
                                f"or delete {self.folder.path} to start the fold again")
        self._load_state(self._load_checkpoint(last))
        where = f"epoch {self.epoch} step {self.resume_step}" if self.resume_step else f"the end of epoch {self.epoch - 1}"
        self.console.line(f"fold {self.fold}: resumed at {where} from {last}")

    def _load_checkpoint(self, last: Path) -> dict:
        """``last.pt``, or the previous checkpoint when it is unreadable; an error naming both when neither loads."""
        previous = self.folder.previous_checkpoint
        try:
            return load_torch(last)
        except KagglecvError as exc:
            if not previous.is_file():
                raise KagglecvError(f"fold {self.fold}: cannot resume: {exc}; delete {self.folder.path} to start the fold "
                                    "again") from None
            self.console.line(f"fold {self.fold}: {last} is unreadable ({type(exc).__name__}); resuming from {previous}")
            return load_torch(previous)

    # ----- outputs ----------------------------------------------------------------------------------------------
    def _finish(self, outcome: FoldOutcome) -> None:
        if self.test is not None:
            self._predict_test(outcome.source)
        if self.runtime.is_main:
            write_json(self.folder.done_path, {
                "fold": self.fold, "best_epoch": outcome.best_epoch, "best_score": outcome.best_score,
                "metric": self.metric, "source": outcome.source, "epochs_run": self.epoch,
                "train_rows": len(self.train_rows), "valid_rows": len(self.valid_rows), "seconds": outcome.seconds,
            })
            self.console.line(f"fold {self.fold}: best {self.metric} {outcome.best_score:.4f} at epoch "
                              f"{outcome.best_epoch} ({outcome.source} weights), {outcome.seconds:.0f} s")
        barrier(self.runtime)

    def _predict_test(self, source: str) -> None:
        """Test predictions of the fold's selected weights, on rank 0 (the other ranks wait at the barrier)."""
        if not self.runtime.is_main:
            return
        predictor = FoldPredictor(self.config, self.data, RunDir(self.folder.path.parent))
        model = predictor.load(self.fold, source)
        logits = predictor.views(model, self.test.paths, np.arange(len(self.test)), ["none"])["none"]
        write_predictions(self.folder.test_path, self.test.ids, probabilities_from_logits(logits, self.data.task),
                          self.data.classes)


def _serialize(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
