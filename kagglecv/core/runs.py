"""The run folder ``runs/<experiment>/`` and its ``fold<K>/`` folders: the only code that knows their file names.

A stage asks for ``run.oof_path`` or ``run.fold(3).best_weights``, never writes ``"oof.csv"``. Reading a run's
recorded config, its identity (``run.json``) and its targets are methods here too, each turning a missing or
corrupt file into one clear error naming it. Nothing here imports torch, so scoring, ensembling, submitting and
reporting start quickly.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from kagglecv.core.config import (
    Config,
    OwnModelName,
    dump_config,
    parse_yaml,
    validate_config,
)
from kagglecv.core.errors import ConfigError, KagglecvError, summarize
from kagglecv.core.files import (
    output_lock,
    sha256_file,
    write_bytes,
    write_json,
    write_text,
)
from kagglecv.core.outputs import OutputRule
from kagglecv.core.predictions import average_predictions, write_predictions
from kagglecv.core.records import (
    BlendRecipe,
    DoneRecord,
    IdentityRecord,
    MemberReference,
    NormalizationRecord,
    PredictRecord,
    R,
    RunInfo,
    StackRecipe,
    read_record,
    record_json,
)


class RecordedTable(Protocol):
    """What a run records of the training table it was made from (the data layer's ``CompetitionData`` is one)."""

    task: str
    classes: list[str]
    dropped_ids: frozenset[str]
    unfixed_hash: str | None
    targets: Any

    def content_hash(self) -> str: ...

# Keys that change where or how fast a run goes, never its results: they may differ on resume.
RESULT_NEUTRAL_KEYS = {"data.cache", "train.num_workers", "train.device", "model.max_params", "tracking.backend", "tracking.uri",
                       "train.seeds"}
PACKAGES = ("kagglecv", "torch", "torchvision", "timm", "albumentations", "numpy", "scikit-learn", "pandas")
ENSEMBLE_PREFIX = "ens-"
STACK_PREFIX = "stack-"


def _file(name: str) -> property:
    """A file of the folder, ``self.path / name``."""
    return property(lambda self: self.path / name)


@dataclass(frozen=True)
class FoldDir:
    """``runs/<experiment>/fold<K>/``: one fold's weights, resumable state, history and predictions; each file
    names the stage that writes it."""

    path: Path
    index: int

    oof_path = _file("oof.csv")                   # train (the best epoch's held-out rows; predict rewrites the run's)
    test_path = _file("test.csv")                 # train (after fit), predict (with TTA)
    done_path = _file("done.json")                # train, last: the fold is finished
    best_weights = _file("best.safetensors")      # train
    ema_weights = _file("ema.safetensors")        # train
    avg_weights = _file("avg.safetensors")        # train: the best average of several epochs' weights
    epoch_weights_dir = _file("epochs")           # train: the epochs' weights that average is made of
    pseudo_path = _file("pseudo.csv")             # train: the pseudo-labels this fold trained on (teacher's fold model)
    teacher_path = _file("teacher.csv")           # train: distillation, the teacher's fold model on its train rows
    last_checkpoint = _file("last.pt")            # train
    previous_checkpoint = _file("last.prev.pt")   # train
    history_path = _file("history.csv")           # train
    normalization_path = _file("normalization.json")  # train: how the fold's inputs are normalised (pack copies it)
    gallery_path = _file("gallery.npy")           # predict: an identity fold's training embeddings (pack copies it)
    gallery_ids_path = _file("gallery.csv")       # predict: their ids and identities, row for row
    features_path = _file("features.json")        # train: a fusion head's feature scaling (pack copies it)
    curves_path = _file("curves.png")             # train
    lock_path = _file(".train.lock")              # train, while the fold trains
    launch_log_path = _file("launch.log")         # launch, tune: the fold's job output

    def write_test_predictions(self, ids, probabilities, classes: list[str]) -> None:
        """``test.csv``: this fold's test predictions (the recipe's, with the views chosen so far)."""
        write_predictions(self.test_path, ids, probabilities, classes)

    def stack_model(self, block: int, suffix: str) -> Path:
        """A stack's fold model, output block ``block`` (LightGBM text, XGBoost JSON, a linear model's numbers)."""
        return self.path / f"stack-{block}.{suffix}"

    def stack_models(self) -> list[Path]:
        return sorted(self.path.glob("stack-*.*"))

    def weights(self, source: str) -> Path:
        """The selected weights of ``source``: ``raw`` (best.safetensors), ``ema`` or ``avg``."""
        return {"raw": self.best_weights, "ema": self.ema_weights, "avg": self.avg_weights}[source]

    def epoch_weights(self, epoch: int) -> Path:
        return self.epoch_weights_dir / f"epoch{epoch}.safetensors"

    def is_done(self) -> bool:
        return self.done_path.is_file()

    def has_checkpoint(self) -> bool:
        return self.last_checkpoint.is_file() or self.previous_checkpoint.is_file()

    def read_done(self) -> DoneRecord:
        return read_record(DoneRecord, read_json(self.done_path, "a finished fold's record"), self.done_path)

    def write_done(self, record: DoneRecord | dict) -> None:
        """``done.json``, the one writer: checked against its schema first, as every reader checks it."""
        write_json(self.done_path, record_json(DoneRecord, record, self.done_path))

    def write_normalization(self, record: NormalizationRecord) -> None:
        write_json(self.normalization_path, record_json(NormalizationRecord, record, self.normalization_path))

    def read_normalization(self) -> NormalizationRecord | None:
        """The fold's recorded normalisation; None for a fold trained before it was recorded."""
        return _read_optional(NormalizationRecord, self.normalization_path, "a fold's normalisation")

    def read_history(self) -> pd.DataFrame | None:
        """``history.csv``, a row per finished epoch; None before the first epoch ends."""
        try:
            return pd.read_csv(self.history_path)
        except (FileNotFoundError, pd.errors.EmptyDataError):
            return None

    def lock(self):
        """Held while the fold trains: a second process training the same fold gets a clear error."""
        return output_lock(self.lock_path, f"fold {self.index} of {self.path.parent}")


@dataclass(frozen=True)
class RunDir:
    """``runs/<experiment>/`` of a run or an ensemble; each file names the stage that writes it."""

    path: Path

    config_path = _file("config.yaml")            # train (or ensemble)
    info_path = _file("run.json")                 # train, ensemble, pack (bundle)
    oof_path = _file("oof.csv")                   # train (folds merged), predict (TTA), ensemble (nested blend)
    test_path = _file("test.csv")                 # train, predict, ensemble: RunDir.write_test_predictions
    predict_path = _file("predict.json")          # predict; a full refit (train --full)
    score_path = _file("score.json")              # score, ensemble
    blend_score_path = _file("blend_score.json")  # ensemble
    weights_path = _file("weights.json")          # ensemble
    stack_path = _file("stack.json")              # stack: the second-stage model infer replays
    stack_score_path = _file("stack_score.json")  # stack: best single run, in-sample and nested scores
    identities_path = _file("identities.json")    # predict: a model.identity run's new label and its threshold
    curves_png = _file("curves.png")              # report, under runs/report.pictures/<run>/
    fold_scores_png = _file("fold_scores.png")    # report, under runs/report.pictures/<run>/
    confusion_png = _file("confusion.png")        # report, under runs/report.pictures/<run>/
    per_class_ap_png = _file("per_class_ap.png")  # report, under runs/report.pictures/<run>/
    model_code_path = _file("model_code.py")      # train: the copy of an own-model file
    thresholds_path = _file("thresholds.json")    # pack: a bundle's per-class thresholds, tuned on OOF
    other_path = _file("other.json")              # pack: a bundle's "other" label and its threshold, tuned on OOF
    cutoffs_path = _file("cutoffs.json")          # pack: a qwk_thresholds bundle's grade cut-offs, tuned on OOF
    inspect_path = _file("inspect.json")          # inspect: what the OOF predictions get wrong
    label_issues_path = _file("label_issues.csv") # inspect
    errors_png = _file("errors.png")              # inspect
    confused_pairs_png = _file("confused_pairs.png")# inspect
    duplicate_conflicts_png = _file("duplicate_conflicts.png")# inspect
    residuals_png = _file("residuals.png")        # inspect: a regression's predicted against true, and residuals

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    def fold(self, index: int) -> FoldDir:
        return FoldDir(self.path / f"fold{index}", index)

    def write_test_predictions(self, ids, probabilities, classes: list[str]) -> None:
        """``test.csv``, the one writer of a run's test predictions: the folds' mean (train, predict, a full refit:
        :meth:`write_fold_mean_test`) or an ensemble's blend."""
        write_predictions(self.test_path, ids, probabilities, classes)

    def write_fold_mean_test(self, classes: list[str], n_folds: int) -> None:
        """``test.csv``: the mean of the folds' ``fold<K>/test.csv``."""
        mean = average_predictions([self.fold(index).test_path for index in range(n_folds)], classes)
        self.write_test_predictions(mean["id"].to_numpy(), mean[classes].to_numpy(np.float64), classes)

    def fold_dirs(self) -> list[FoldDir]:
        """The fold folders present, by index."""
        found = [FoldDir(path, int(path.name[4:])) for path in self.path.glob("fold*")
                 if path.is_dir() and path.name[4:].isdigit()]
        return sorted(found, key=lambda fold: fold.index)

    def for_writing(self, stage: str) -> "RunDir":
        """This folder, checked by the output rule before ``stage`` writes its own files into it."""
        OutputRule().into_run(self.path, stage)
        return self

    def analysis_is_current(self) -> bool:
        """``inspect.json`` exists and is not older than the OOF predictions it analysed."""
        return self.inspect_path.is_file() and self.inspect_path.stat().st_mtime >= self.oof_path.stat().st_mtime

    def write_predict_record(self, record: PredictRecord | dict) -> None:
        """``predict.json``, the one writer: checked against its schema first, as every reader checks it."""
        write_json(self.predict_path, record_json(PredictRecord, record, self.predict_path))

    def write_identity_record(self, record: IdentityRecord | dict) -> None:
        """``identities.json`` (the new label's threshold, which submit and infer apply), the one writer."""
        write_json(self.identities_path, record_json(IdentityRecord, record, self.identities_path))

    def read_identity_record(self) -> IdentityRecord:
        if not self.identities_path.is_file():
            raise KagglecvError(f"{self.path}: no {self.identities_path.name}; run `kagglecv predict {self.path}` "
                                "(a model.identity run ranks its identities there)")
        return _read_optional(IdentityRecord, self.identities_path, "an identity run's record")

    def write_blend_recipe(self, record: BlendRecipe | dict) -> None:
        """``weights.json`` (an ensemble's blend, which ``infer`` replays), the one writer: checked first."""
        write_json(self.weights_path, record_json(BlendRecipe, record, self.weights_path))

    def read_blend_recipe(self) -> BlendRecipe:
        """``weights.json`` as a typed record; a missing one is an error naming the ensemble."""
        if not self.weights_path.is_file():
            raise KagglecvError(f"{self.path}: an ensemble without {self.weights_path.name}; re-run `kagglecv ensemble`")
        return read_record(BlendRecipe, read_json(self.weights_path, "the ensemble's weights"), self.weights_path)

    def write_stack_recipe(self, record: StackRecipe | dict) -> None:
        """``stack.json``, the one writer: checked against its schema first, as every reader checks it."""
        write_json(self.stack_path, record_json(StackRecipe, record, self.stack_path))

    def read_stack_recipe(self) -> StackRecipe:
        if not self.stack_path.is_file():
            raise KagglecvError(f"{self.path}: a stack without {self.stack_path.name}; re-run `kagglecv stack`")
        return read_record(StackRecipe, read_json(self.stack_path, "the stack's model"), self.stack_path)

    def write_info(self, record: RunInfo | dict) -> None:
        """``run.json``, the one writer: checked against its schema first, as every reader checks it."""
        write_json(self.info_path, record_json(RunInfo, record, self.info_path))

    def read_predict_record(self) -> PredictRecord | None:
        """``predict.json`` (the TTA the predict stage chose), or None before it ran."""
        return _read_optional(PredictRecord, self.predict_path, "the predict stage's record")

    def is_run(self) -> bool:
        """A folder holding a recorded config and merged OOF predictions (a finished run or an ensemble)."""
        return self.config_path.is_file() and self.oof_path.is_file()

    def read_config(self) -> Config:
        """The resolved config the run was started with."""
        if not self.config_path.is_file():
            raise KagglecvError(f"{self.path}: not a kagglecv run (no {self.config_path.name}); expected runs/<experiment>")
        raw = parse_yaml(_read_text(self.config_path), str(self.config_path))
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.config_path}: expected a mapping of sections, got {type(raw).__name__}")
        return validate_config(raw, source=str(self.config_path))

    def read_info(self) -> RunInfo:
        """``run.json``: task, classes, folds file and its sha256, provenance (and members for an ensemble)."""
        if not self.info_path.is_file():
            raise KagglecvError(f"{self.path}: not a run or ensemble folder (no {self.info_path.name})")

        return read_record(RunInfo, read_json(self.info_path, "a run's identity"), self.info_path)

    def recorded_kind(self) -> str | None:
        """``run.json``'s kind (``run``, ``full``, ``ensemble``; a run.json from before kinds were recorded is a CV
        run), or None when the folder has no run.json yet."""
        if not self.info_path.is_file():
            return None
        return self.read_info().kind

    def is_ensemble(self) -> bool:
        return self.read_info().kind == "ensemble"

    def is_full_fit(self) -> bool:
        """A refit on all training rows (``train --full``): test predictions, no OOF of its own."""
        return self.info_path.is_file() and self.read_info().kind == "full"

    def oof_source(self) -> "RunDir":
        """The run whose ``oof.csv`` stands for this one: itself, or for a full refit the CV run it was made from
        (its epochs and weights were chosen there), so ensembles can weigh it and thresholds can be tuned."""
        if not self.is_full_fit():
            return self
        cv_run = self.cv_run()
        if not cv_run.oof_path.is_file():
            raise KagglecvError(f"{self.path}: a full refit of {cv_run.path}, whose oof.csv is missing")
        return cv_run

    def cv_run(self) -> "RunDir":
        """A full refit's CV run: the sibling folder ``run.json`` names (its schema makes it a plain name)."""
        name = self.read_info().cv_run
        if name is None:
            raise KagglecvError(f"{self.info_path}: a full refit without its cv_run; train it again with --full")
        return RunDir(self.path.parent / name)

    def model_code(self) -> Path | None:
        """The run's copy of its own-model file, when it has one (models are rebuilt from it, not the original)."""
        return self.model_code_path if self.model_code_path.is_file() else None

    def check_config(self, config: Config, *, force: bool = False) -> None:
        """A config (or own-model file) differing from the recorded one (result-neutral keys aside) is an error
        unless forced."""
        if not self.config_path.is_file():
            return
        # Validating the recorded config through today's models fills keys added since with their defaults.
        changes = config_differences(self.read_config().model_dump(mode="json"), config.model_dump(mode="json"))
        own = OwnModelName.parse(config.model.name)
        if own is not None and self.model_code() is not None and own.file.is_file():
            before, after = sha256_file(self.model_code_path), sha256_file(own.file)
            if before != after:
                changes.append(f"model file {own.file}: sha256 {before[:12]} -> {after[:12]}")
        if changes and not force:
            raise KagglecvError(f"{self.path} was started with another config: {summarize(changes, 8)}; use a new "
                                "experiment name, or --force to continue with the new config")

    def write_identity(self, config: Config, data: RecordedTable, params: dict[str, int] | None = None,
                       n_folds: int | None = None, extra: dict | None = None) -> None:
        """``config.yaml``, ``run.json`` and the copy of an own-model file; written once training can start, so a
        failed start leaves none of them. ``params``: the model's total and trainable parameter counts;
        ``n_folds``: the folds of the folds file (so inference knows a fold folder is missing without it)."""
        folds_file = Path(config.folds.file)
        created = self._recorded_creation()
        own = OwnModelName.parse(config.model.name)
        model_file = None
        if own is not None:
            write_bytes(self.model_code_path, own.file.read_bytes())
            model_file = {"path": str(own.file), "name": own.name, "sha256": sha256_file(self.model_code_path),
                          "copy": self.model_code_path.name}
        write_text(self.config_path, dump_config(config))
        self.write_info({
            "experiment": config.experiment, "created": created, "task": data.task, "classes": data.classes,
            "folds_file": str(folds_file), "folds_sha256": sha256_file(folds_file), "n_folds": n_folds,
            "table_sha256": data.content_hash(), "params": params, "model_file": model_file,
            "label_fixes": _label_fixes_record(config, data), "target_range": target_range(config, data),
            "versions": package_versions(), "git_commit": git_commit(), "python": platform.python_version(),
            "kind": "run", **(extra or {}),
        })

    def _recorded_creation(self) -> str:
        """When the run was first started: kept from an existing run.json, else now."""
        try:
            return json.loads(self.info_path.read_text())["created"]
        except (OSError, ValueError, KeyError, TypeError):
            return datetime.now().isoformat(timespec="microseconds")


def target_range(config: Config, data: RecordedTable) -> dict[str, list[float]] | None:
    """A regression target's range, per target: ``data.y_range``, else the training rows' lowest and highest value;
    what submissions are clipped to."""
    if data.task != "regression":
        return None
    if config.data.y_range is not None:
        return {name: list(config.data.y_range) for name in data.classes}
    return {name: [float(column.min()), float(column.max())] for name, column in zip(data.classes, data.targets.T)}


def _label_fixes_record(config: Config, data: RecordedTable) -> dict | None:
    """Which file changed the training table, and how, so the run says what it was trained on."""
    fixes = config.data.label_fixes
    if fixes is None:
        return None
    return {"file": str(fixes.file), "sha256": sha256_file(fixes.file), "action": fixes.action,
            "dropped_ids": len(data.dropped_ids), "unfixed_table_sha256": data.unfixed_hash}


def prepare_run_dir(config: Config, *, force: bool = False, kind: str = "run") -> RunDir:
    """``runs/<experiment>`` of ``config`` for training a run of ``kind`` (``run``: cross-validated, ``full``: a
    refit), after the output rule (not inside a data folder or another run, not a link) and checking a recorded
    config against it. A folder of another kind (an ensemble, a refit for a CV run) is refused, even with force:
    training into it would leave a folder mixing two runs' files."""

    run = RunDir(Path(config.run_dir))
    rule = OutputRule.of(configs=[config])
    rule.check(run.path, "experiment")
    rule.own(run.path)
    recorded = run.recorded_kind()
    if recorded is not None and recorded != kind:
        raise KagglecvError(f"{run.path}: is {KIND_NAMES.get(recorded, repr(recorded))} (run.json kind {recorded!r}); "
                            f"training {KIND_NAMES[kind]} into it would mix their files: choose another experiment name")
    run.check_config(config, force=force)
    return run


KIND_NAMES = {"run": "a cross-validated run", "full": "a full refit", "ensemble": "an ensemble", "stack": "a stack"}


def replay_fingerprint(run: RunDir) -> str:
    """sha256 of what replaying ``run`` reads: its TTA record, test predictions, blend recipe, own-model file and
    every fold's selectable weights (``run.json`` is rewritten at every training start, so it is not included)."""

    files = [run.predict_path, run.test_path, run.weights_path, run.stack_path, run.model_code_path]
    for fold in run.fold_dirs():
        files += [fold.best_weights, fold.ema_weights, fold.avg_weights, *fold.stack_models()]
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(f"{path.relative_to(run.path).as_posix()}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def member_reference(member: Path, ensemble: Path) -> dict:
    """How an ensemble records a member: its path relative to the ensemble's folder, and its replay fingerprint."""

    return {"path": Path(os.path.relpath(Path(member).resolve(), Path(ensemble).resolve())).as_posix(),
            "fingerprint": replay_fingerprint(RunDir(member))}


def resolve_member(ensemble: RunDir, reference: MemberReference) -> RunDir:
    """The member run a recorded reference names (``run.json``'s schema makes it a relative path and a fingerprint),
    relative to the ensemble's own folder wherever kagglecv runs from, after checking it is still the run the
    ensemble was made of."""
    member = RunDir(ensemble.path / reference.path)
    if not member.info_path.is_file():
        raise KagglecvError(f"{ensemble.info_path}: member {member.path} is missing (expected beside the ensemble, "
                            "as when it was made)")
    if replay_fingerprint(member) != reference.fingerprint:
        raise KagglecvError(f"{member.path}: changed since the ensemble {ensemble.path} was made (its weights, TTA or "
                            "test predictions differ); re-run `kagglecv ensemble` on the runs as they are now")
    return member


def history_metric(columns) -> str:
    """The validation metric a fold's ``history.csv`` records as ``val_<metric>`` (``loss`` when it has none)."""
    return next((column[4:] for column in columns if column.startswith("val_") and column != "val_loss"), "loss")


def _read_optional(schema: type[R], path: Path, what: str) -> R | None:
    """The record at ``path`` read through ``schema``; None when the file is not there (yet)."""
    if not path.is_file():
        return None
    return read_record(schema, read_json(path, what), path)


def read_json(path: Path, what: str) -> Any:
    """A JSON file kagglecv wrote; a corrupt one is an error naming it."""
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise KagglecvError(f"{path}: corrupt ({what}, not valid JSON: {exc.msg} at line {exc.lineno}); "
                            "re-create it with the command that wrote it") from None


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise KagglecvError(f"{path}: corrupt (not UTF-8 text at byte {exc.start})") from None
    except OSError as exc:
        raise KagglecvError(f"{path}: cannot read: {exc.strerror or exc}") from None


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs, except result-neutral keys."""
    changes = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changes += config_differences(before, after, path + ".")
        elif before != after and path not in RESULT_NEUTRAL_KEYS:
            changes.append(f"{path}: {before!r} -> {after!r}")
    return changes


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None
