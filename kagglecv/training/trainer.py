"""The train stage: one timm model per fold, with out-of-fold and test predictions.

``train_run`` trains the requested folds of an experiment (skipping those that are done) and, once every fold is
done, merges the folds' OOF files and averages their test predictions. ``FoldTrainer`` is the per-fold loop, to
be read top to bottom: set-up, then one loop over epochs (train, evaluate, keep the best, checkpoint), then the
fold's outputs. Everything it writes is atomic, and ``last.pt`` restores the exact state of an epoch boundary.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from kagglecv.training.averaging import WeightAverager
from kagglecv.training.checkpoint import Checkpoints
from kagglecv.training.components import build_fold_components
from kagglecv.core.config import Config
from kagglecv.core.console import Console, EpochProgress
from kagglecv.data.table import CompetitionData
from kagglecv.data.decoding import check_images
from kagglecv.core.errors import KagglecvError
from kagglecv.core.files import remove_stale_temporaries, write_csv, write_json
from kagglecv.nn.inference import FoldPredictor, probabilities_from_logits, run_inference
from kagglecv.data.inputs import StageInputs, load_stage_inputs
from kagglecv.core.metrics import DEFAULT_METRIC, get_metric, score
from kagglecv.nn.models import freeze_for_epoch, parameter_counts, set_frozen_batchnorm_eval
from kagglecv.core.plots import plot_curves
from kagglecv.core.predictions import average_predictions, merge_oof, write_predictions
from kagglecv.core.runs import RunDir, prepare_run_dir
from kagglecv.training.teaching import fold_teaching, uses_teacher
from kagglecv.nn.runtime import Runtime, all_gather, amp_name, autocast_dtype, barrier, setup_runtime
from kagglecv.nn.weights import save_weights


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
              console: Console | None = None, inputs: StageInputs | None = None,
              predict_test: bool = True) -> list[FoldOutcome]:
    """Train the given folds (all when None) of ``config``'s experiment; merge predictions when all are done.

    Args:
        folds: fold numbers to train; the others are left alone (run them elsewhere, in parallel).
        resume: continue a fold killed mid-training from its ``last.pt``.
        force: accept a config that differs from the one the run folder was started with.
        inputs: the tables and folds, when the caller has read them (``kagglecv run``).
        predict_test: predict the test set with each fold's best weights; off when a TTA predict stage follows.
    """
    console = console or Console()
    runtime = setup_runtime(config.train.device)
    inputs = inputs or load_stage_inputs(config)
    data, test = inputs.data, inputs.test if predict_test else None
    check_images(data.images)
    if inputs.test is not None:
        check_images(inputs.test.images)
    run = prepare_run_dir(config, force=force)
    chosen = list(folds) if folds is not None else list(range(inputs.n_folds))
    bad = [fold for fold in chosen if not 0 <= fold < inputs.n_folds]
    if bad:
        raise KagglecvError(f"--fold {bad[0]}: expected 0..{inputs.n_folds - 1} (the folds file has {inputs.n_folds} folds)")
    # The run's identity is written once a fold can start (so a failed start leaves none), and once per command.
    amp = amp_name(autocast_dtype(config.train.amp, runtime.device))
    console.line(f"{config.experiment}: training on {runtime.device}, autocast {amp} (train.amp: {config.train.amp})")
    write_identity = functools.cache(
        lambda params: run.write_identity(config, data, dict(params), inputs.n_folds, extra={"amp": amp})
        if runtime.is_main else None)
    outcomes = [_train_fold(config, data, inputs.fold_of, test, fold, run, runtime, console, resume, write_identity,
                            unlabeled=inputs.test) for fold in chosen]
    if runtime.is_main:
        finish_run(run, data, inputs.n_folds, console)
    return outcomes


def _train_fold(config: Config, data: CompetitionData, fold_of: np.ndarray, test: CompetitionData | None, fold: int,
                run: RunDir, runtime: Runtime, console: Console, resume: bool,
                write_identity: Callable[[tuple], None], unlabeled: CompetitionData | None = None) -> FoldOutcome:
    """Train one fold under its lock, unless it is done; ``write_identity`` is called once its trainer is built,
    with the model's parameter counts. ``unlabeled``: the test table, for pseudo-labels."""
    folder = run.fold(fold)
    with folder.lock() if runtime.is_main else contextlib.nullcontext():
        if folder.is_done():
            info = folder.read_done()
            console.line(f"fold {fold}: done already (best {info['metric']} {info['best_score']:.4f}), skipped")
            return FoldOutcome(fold, info["best_epoch"], info["best_score"], info["source"], 0.0, True)
        trainer = FoldTrainer(config, data, fold_of, test, fold, run, runtime, console, unlabeled=unlabeled)
        write_identity(tuple(parameter_counts(trainer.parts.model, config.model).items()))
        return trainer.fit(resume=resume)


def finish_run(run: RunDir, data: CompetitionData, n_folds: int, console: Console) -> bool:
    """When every fold is done: write the run's ``oof.csv`` (every id once), and the fold-averaged ``test.csv``
    when every fold predicted the test set."""
    folds = [run.fold(index) for index in range(n_folds)]
    if not all(fold.is_done() for fold in folds):
        return False
    oof = merge_oof([fold.oof_path for fold in folds], data.ids, data.classes)
    write_csv(run.oof_path, oof, float_format="%.7g")
    has_test = all(fold.test_path.is_file() for fold in folds)
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
        self.by_source = {"raw": -math.inf, "ema": -math.inf, "avg": -math.inf}
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
        self.by_source = {"raw": state["raw"], "ema": state["ema"], "avg": state.get("avg", -math.inf)}
        self.score, self.epoch, self.source = state["overall"], state["epoch"], state["source"]
        self.epochs_since_best = state["stale"]


class FoldTrainer:
    """Trains one fold. Construct, then call :meth:`fit`.

    Three pieces do the work the loop reads as: :func:`~kagglecv.training.components.build_fold_components` (what it trains
    with), :class:`~kagglecv.training.checkpoint.Checkpoints` (``last.pt``) and :class:`BestTracker` (which epoch is best).
    """

    def __init__(self, config: Config, data: CompetitionData, fold_of: np.ndarray, test: CompetitionData | None,
                 fold: int, run: RunDir, runtime: Runtime, console: Console, *,
                 unlabeled: CompetitionData | None = None, full_source: str | None = None):
        """``unlabeled``: the test table pseudo-labels come from; ``full_source``: a full-data refit (no validation
        rows, every ``fold_of`` is -1): the weights (raw, ema, avg) of the last epoch are kept from this source."""
        self.config, self.cfg, self.data, self.test = config, config.train, data, test
        self.fold, self.runtime, self.console, self.folder = fold, runtime, console, run.fold(fold)
        self.metric, self.full_source = main_metric(config, data.task), full_source
        teaching = None
        if uses_teacher(config):
            teaching = fold_teaching(config, data, unlabeled, np.flatnonzero(fold_of != fold), self.folder, console,
                                     full_fit=full_source is not None)
        self.teaching_stats = teaching.stats if teaching else {}
        self.parts = build_fold_components(config, data, fold_of, fold, runtime, teaching)
        self.device = runtime.device
        self.epoch, self.global_step, self.history = 0, 0, []
        self.resume_step, self.partial_epoch, self.stop_signal, self.last_selection = 0, None, None, math.nan
        self.best = BestTracker()
        self.averager = WeightAverager(self.cfg.avg_weights, self.cfg.avg_count, self.folder, runtime.is_main) \
            if self.cfg.avg_weights else None
        self._averaged_model, self._average_changed = None, False
        parts = self.parts
        self.checkpoints = Checkpoints(self.folder, {
            "model": parts.model, "optimizer": parts.optimizer, "scheduler": parts.scheduler,
            "scaler": parts.scaler, "ema": parts.ema, "best": self.best, "averager": self.averager}, console.line)

    # ----- the loop ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> FoldOutcome:
        started = time.time()
        self._restore_or_start(resume)
        with _stop_requests(self), EpochProgress(self.console, self.fold, self.cfg.epochs, self.parts.batches_per_epoch,
                                                 enabled=self.runtime.is_main) as progress:
            while self.epoch < self.cfg.epochs and not self._patience_exhausted():
                row = self._train_epoch(progress)
                row |= self._evaluate_epoch()
                self.history.append(row)
                if self.parts.scheduler is not None and self.cfg.sched == "plateau":
                    self.parts.scheduler.step(self.epoch + 1, self.last_selection)
                self.epoch += 1
                self._save_last()
                progress.epoch_done(row, self.metric)
        if self.full_source is not None:
            self._keep_full_fit_weights()
        elif self.best.epoch < 0:
            raise KagglecvError(f"fold {self.fold}: {self.metric} could not be computed on any epoch (NaN); "
                                "is every class present in this fold's validation rows?")
        outcome = FoldOutcome(self.fold, self.best.epoch, self._reported(self.best.score), self.best.source,
                              time.time() - started)
        self._finish(outcome)
        return outcome

    def _train_epoch(self, progress: EpochProgress) -> dict:
        parts = self.parts
        self._set_training_size()
        frozen = freeze_for_epoch(parts.model, self.config.model, self.epoch)
        parts.train_model.train()
        set_frozen_batchnorm_eval(parts.model, frozen)
        parts.train_sampler.set_epoch(self.epoch)
        first_step, partial = self.resume_step, self.partial_epoch
        parts.train_sampler.set_start(first_step * self.cfg.batch_size)
        self.resume_step, self.partial_epoch = 0, None
        progress.start_epoch(self.epoch, first_step)
        loss_sum, seen, skipped, data_time, step_time = partial or (0.0, 0, 0, 0.0, 0.0)
        loss_sum = torch.tensor(loss_sum, device=self.device)
        tick = time.perf_counter()
        parts.optimizer.zero_grad(set_to_none=True)
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
        parts.train_sampler.set_start(0)
        return self._epoch_row(loss_sum.item(), seen, skipped, data_time, step_time)

    def _set_training_size(self) -> None:
        """``train.size_schedule``: the training loader of this epoch's image size (rebuilt when it changes)."""
        size = self.cfg.size_at(self.epoch, self.config.model.img_size)
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
        return (step + 1) % self.cfg.accum_steps == 0 or step + 1 == self.parts.batches_per_epoch

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor, step: int, need_update: bool) -> torch.Tensor:
        parts = self.parts
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if parts.mixup is not None and len(images) % 2 == 0:
            images, targets = parts.mixup(images, targets)
        with torch.autocast(self.device.type, dtype=parts.amp_dtype or torch.float32, enabled=parts.amp_dtype is not None):
            loss = parts.criterion(parts.train_model(images), targets)
        self._check_finite(loss, step)
        # Under DDP the micro-steps of an accumulation group skip the gradient all-reduce (nanoGPT, timm).
        skip_sync = parts.ddp_model is not None and not need_update
        with parts.ddp_model.no_sync() if skip_sync else contextlib.nullcontext():
            parts.scaler.scale(loss / self.cfg.accum_steps).backward()
        if need_update:
            self._optimizer_step()
        return loss

    def _optimizer_step(self) -> None:
        parts = self.parts
        if self.cfg.clip_grad is not None:
            parts.scaler.unscale_(parts.optimizer)
            nn.utils.clip_grad_norm_(parts.model.parameters(), self.cfg.clip_grad)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        parts.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if parts.ema is not None:
            parts.ema.update(parts.model, step=self.global_step)
        if parts.scheduler is not None and self.cfg.sched != "plateau":
            parts.scheduler.step_update(self.global_step)

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss).item():
            lr = self.parts.optimizer.param_groups[0]["lr"]
            kept = (f"{self.folder.last_checkpoint} keeps epoch {self.epoch}" if self.epoch > 0
                    else "no epoch finished, nothing was saved")
            raise TrainingDiverged(f"fold {self.fold}: loss is {loss.item()} at epoch {self.epoch + 1} step {step} "
                                   f"(lr {lr:.3g}); training stopped, {kept}")

    # ----- evaluation and the best epoch ------------------------------------------------------------------------
    def _evaluate_epoch(self) -> dict:
        if self.full_source is not None:  # a full-data refit: nothing to validate on
            if self.averager is not None:
                self.averager.add(self.epoch, math.nan, self.parts.model.state_dict())
            return {}
        row = {}
        for source in ("raw", "ema", "avg"):  # avg after raw: raw's score decides whether the epoch joins the average
            model = self._averaged() if source == "avg" else self._trained_model(source)
            if model is None:
                continue
            rows, logits, loss = self._predict_valid(model)
            probabilities = probabilities_from_logits(logits, self.data.task)
            selection = score_predictions(self.metric, self.data.task, self.data.targets[rows], probabilities, loss)
            prefix = "val" if source == "raw" else f"{source}_val"
            row |= {f"{prefix}_loss": loss, f"{prefix}_{self.metric}": self._reported(selection)}
            self._keep_if_best(source, model, selection, rows, probabilities)
            if source == "raw":
                self.last_selection = selection
                if self.averager is not None:
                    self._average_changed = self.averager.add(self.epoch, selection, self.parts.model.state_dict())
        return row

    def _trained_model(self, source: str) -> nn.Module | None:
        """The model holding a trained source's weights: ``raw``, or ``ema`` (None without EMA)."""
        if source == "ema":
            return self.parts.ema.module if self.parts.ema is not None else None
        return self.parts.model

    def _averaged(self) -> nn.Module | None:
        """The model holding the average of the kept epochs' weights; None without averaging, or before two
        epochs are kept, or when this epoch left the kept set unchanged (its score is already recorded)."""
        if self.averager is None or len(self.averager.kept) < 2 or not self._average_changed:
            return None
        if self._averaged_model is None:
            self._averaged_model = copy.deepcopy(self.parts.model)
        self._averaged_model.load_state_dict(self.averager.averaged_state())
        return self._averaged_model.eval()

    def _keep_full_fit_weights(self) -> None:
        """A full refit keeps its last epoch's weights of the source its CV folds chose (an average: the last
        avg_count epochs, since without validation rows there is no "best")."""
        source = self.full_source
        if (source == "ema" and self.parts.ema is None) or (source == "avg" and self.averager is None):
            source = "raw"
        state = self.averager.averaged_state() if source == "avg" else self._trained_model(source).state_dict()
        if self.runtime.is_main:
            save_weights(self.folder.weights(source), state)
        self.best.score, self.best.epoch, self.best.source = math.nan, self.epoch - 1, source

    def _reported(self, selection: float) -> float:
        """The metric's own value from the selection score (which is negated for lower-is-better metrics)."""
        lower_is_better = self.metric == "loss" or not get_metric(self.metric, self.data.task).higher_is_better
        return -selection if lower_is_better else selection

    def _predict_valid(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray, float]:
        parts = self.parts
        rows, by_view = run_inference(model, parts.valid_loader, self.device, parts.amp_dtype, self.cfg.channels_last)
        logits = by_view["none"]
        targets = torch.as_tensor(parts.loss_targets[rows])
        multiclass = self.data.task == "multiclass"
        loss_fn = nn.CrossEntropyLoss(reduction="sum") if multiclass else nn.BCEWithLogitsLoss(reduction="sum")
        loss_sum = float(loss_fn(torch.as_tensor(logits), targets)) if len(rows) else 0.0
        gathered = all_gather((rows, logits, loss_sum), self.runtime)
        rows = np.concatenate([g[0] for g in gathered])
        logits = np.concatenate([g[1] for g in gathered])
        order = np.argsort(rows)
        # Validation loss is CE per row, or BCE per label (whatever the training loss), so epochs and runs compare.
        per_row = 1 if multiclass else logits.shape[1]
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
    def _progress(self, step_in_epoch: int = 0, partial: tuple | None = None) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": step_in_epoch, "partial_epoch": list(partial or ()),
                "global_step": self.global_step, "history": self.history, "config": self.config.model_dump_json()}

    def _save_last(self) -> None:
        self.best.end_epoch()
        if self.runtime.is_main:
            self.checkpoints.save(self._progress())
            if self.averager is not None:
                self.averager.remove_dropped()
            write_csv(self.folder.history_path, pd.DataFrame(self.history), float_format="%.6g")
            if self.full_source is None:
                plot_curves(self.history, self.metric, self.folder.curves_path,
                            title=f"{self.config.experiment} fold {self.fold}")
        barrier(self.runtime)

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

    # ----- outputs ----------------------------------------------------------------------------------------------
    def _finish(self, outcome: FoldOutcome) -> None:
        if self.test is not None:
            self._predict_test(outcome.source)
        if self.runtime.is_main:
            full = self.full_source is not None
            write_json(self.folder.done_path, {
                "fold": self.fold, "best_epoch": outcome.best_epoch,
                "best_score": None if full else outcome.best_score, "full_fit": full,
                "metric": self.metric, "source": outcome.source, "epochs_run": self.epoch,
                "train_rows": int(np.sum(self.parts.train_rows < len(self.data))),
                "valid_rows": len(self.parts.valid_rows), "seconds": outcome.seconds, **self.teaching_stats,
            })
            self.console.line(f"full refit: {self.epoch} epochs on {len(self.parts.train_rows)} rows ({outcome.source} "
                              f"weights), {outcome.seconds:.0f} s" if full else
                              f"fold {self.fold}: best {self.metric} {outcome.best_score:.4f} at epoch "
                              f"{outcome.best_epoch + 1} ({outcome.source} weights), {outcome.seconds:.0f} s")
        barrier(self.runtime)

    def _predict_test(self, source: str) -> None:
        """Test predictions of the fold's selected weights, on rank 0 (the other ranks wait at the barrier)."""
        if not self.runtime.is_main:
            return
        predictor = FoldPredictor(self.config, RunDir(self.folder.path.parent), self.data.task, self.data.classes)
        model = predictor.load(self.fold, source)
        logits = predictor.views(model, self.test.images, np.arange(len(self.test)), ["none"])["none"]
        write_predictions(self.folder.test_path, self.test.ids, probabilities_from_logits(logits, self.data.task),
                          self.data.classes)
