"""The runs a second stage reads: their OOF and test predictions aligned by id to the first run's order, after
checking that they share folds, classes and ids. ``kagglecv ensemble`` blends them; ``kagglecv stack`` fits a model
on them and the table beside the images."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from kagglecv.core.errors import KagglecvError, summarize
from kagglecv.core.files import write_bytes, write_csv
from kagglecv.core.predictions import aligned, compare_ids, read_predictions
from kagglecv.core.records import RunInfo
from kagglecv.core.runs import FoldDir, RunDir
from kagglecv.core.topk import TopK, concat_top_k, read_top_k
from kagglecv.data.inputs import load_run_table
from kagglecv.data.readers.npy import npy_header
from kagglecv.data.table import CompetitionData, read_csv_strings


@dataclass
class Members:
    """The runs being blended, aligned by id to the first run's order."""

    paths: list[Path]
    data: CompetitionData
    classes: list[str]
    task: str
    folds: np.ndarray
    oof: np.ndarray            # runs x rows x classes (float32)
    test: np.ndarray | None    # runs x test rows x classes
    test_ids: np.ndarray | None
    config: dict               # the first run's resolved config
    folds_sha256: str


def load_members(paths: list[Path], minimum: int = 2, what: str = "an ensemble") -> Members:
    """Read and align the runs; different folds, classes or ids are an error naming the run and the first mismatch."""
    if len(paths) < minimum:
        raise KagglecvError(f"{what} needs at least {minimum} run{'s' if minimum > 1 else ''}")
    resolved = [Path(path).resolve() for path in paths]
    repeated = sorted({str(path) for path, real in zip(paths, resolved) if resolved.count(real) > 1})
    if repeated:
        raise KagglecvError(f"{summarize(repeated, quote=True)}: named more than once; {what} reads different runs")
    runs = [RunDir(path) for path in paths]
    first, info = runs[0], runs[0].read_info()
    config = first.read_config()
    data = load_run_table(first, config, info)
    classes = info.classes
    reference = read_predictions(first.oof_source().oof_path, classes, oof=True)
    ids = reference["id"].to_numpy()
    folds = reference["fold"].to_numpy()
    _check_same_ids(ids, data.ids, first.oof_path, data.source)
    position = {image_id: row for row, image_id in enumerate(ids)}
    oof, test, test_ids = [], [], None
    for run in runs:
        _check_compatible(run, info if run is first else run.read_info(), first, info)
        # A full refit is weighed by its CV run's OOF (the run its epochs and weights were chosen on).
        oof_path = run.oof_source().oof_path
        frame = read_predictions(oof_path, classes, oof=True)
        _check_same_ids(frame["id"].to_numpy(), ids, oof_path, first.oof_path)
        rows = np.array([position[image_id] for image_id in frame["id"]])
        if not np.array_equal(folds[rows], frame["fold"].to_numpy()):
            bad = frame["id"].to_numpy()[folds[rows] != frame["fold"].to_numpy()][0]
            raise KagglecvError(f"{oof_path}: id {bad!r} is in another fold than in {first.oof_path}")
        aligned = np.empty((len(ids), len(classes)), dtype=np.float32)
        aligned[rows] = frame[classes].to_numpy(np.float32)
        oof.append(aligned)
        test_matrix, test_ids = _read_test(run, classes, test_ids, first)
        test.append(test_matrix)
    has_test = all(matrix is not None for matrix in test)
    data_rows = pd.Series(np.arange(len(data)), index=data.ids).loc[ids].to_numpy()
    aligned_data = CompetitionData(data.ids[data_rows], None, data.task, data.classes, data.targets[data_rows],
                                   None, data.source,
                                   answers=None if data.answers is None else data.answers.take(data_rows),
                                   coarse=data.coarse)
    members = Members([run.path for run in runs], aligned_data, classes, data.task, folds, np.stack(oof),
                      np.stack(test) if has_test else None, test_ids if has_test else None,
                      config.model_dump(mode="json"), info.folds_sha256 or "")
    return _as_scored(members) if data.coarse is not None else members


def _as_scored(members: Members) -> Members:
    """Runs that learned a finer label (``data.finer``) blended as the competition scores them: their coarse
    classes' probabilities; the ensemble is a run of the coarse target (its config without ``data.finer``)."""
    coarse = members.data.coarse

    def as_coarse(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else np.stack([coarse.probabilities(run).astype(np.float32) for run in values])

    config = members.config | {"data": members.config["data"] | {"finer": None, "task": coarse.task}}
    return replace(members, data=members.data.scored(), classes=coarse.classes, task=coarse.task,
                   oof=as_coarse(members.oof), test=as_coarse(members.test), config=config)


def _check_compatible(run: RunDir, info: RunInfo, first: RunDir, first_info: RunInfo) -> None:
    """Same class order and same folds file as the first run."""
    classes, theirs = first_info.classes, info.classes
    if theirs != classes:
        mismatch = next((i for i, (a, b) in enumerate(zip(theirs, classes)) if a != b), min(len(classes), len(theirs)))
        raise KagglecvError(f"{run.path}: class order differs from {first.path} at position {mismatch}: "
                            f"{theirs[mismatch] if mismatch < len(theirs) else '(none)'!r} vs "
                            f"{classes[mismatch] if mismatch < len(classes) else '(none)'!r}")
    if info.folds_sha256 != first_info.folds_sha256:
        raise KagglecvError(f"{run.path}: made with other folds ({info.folds_file}) than {first.path} "
                            f"({first_info.folds_file}); OOF blending needs the same folds file")


def _read_test(run: RunDir, classes, test_ids, first: RunDir):
    if not run.test_path.is_file():
        return None, test_ids
    frame = read_predictions(run.test_path, classes)
    if test_ids is None:
        return frame[classes].to_numpy(np.float32), frame["id"].to_numpy()
    _check_same_ids(frame["id"].to_numpy(), test_ids, run.test_path, first.test_path)
    return aligned(frame, test_ids, classes, run.test_path, first.test_path, dtype=np.float32), test_ids


def _check_same_ids(ids: np.ndarray, reference: np.ndarray, path: Path, reference_path: Path) -> None:
    differences = compare_ids(ids, reference)
    if not differences:
        return
    first = (differences.missing or differences.extra or differences.doubled)[0]
    raise KagglecvError(f"{path}: ids differ from {reference_path}: first mismatching id {first!r} "
                        f"({len(differences.missing)} missing: {summarize(differences.missing, 3, quote=True)}; "
                        f"{len(differences.extra)} extra: {summarize(differences.extra, 3, quote=True)}; "
                        f"{len(differences.doubled)} doubled: {summarize(differences.doubled, 3, quote=True)})")


@dataclass
class IdentityMembers:
    """``model.identity`` runs' top-k predictions aligned to the first run's training table (and test ids)."""

    paths: list[Path]
    data: CompetitionData
    oof: list[TopK]
    test: list[TopK] | None
    config: dict
    folds_sha256: str
    task: str = "multiclass"

    @property
    def classes(self) -> list[str]:
        return self.data.classes


def load_identity_members(paths: list[Path]) -> IdentityMembers:
    """The runs' top-k OOF (in the table's order, folds checked equal) and test files (in the first's order)."""
    runs = [RunDir(path) for path in paths]
    first, info = runs[0], runs[0].read_info()
    config = first.read_config()
    data = load_run_table(first, config, info)
    oof, test = [], []
    for run in runs:
        _check_compatible(run, info if run is first else run.read_info(), first, info)
        if not run.identities_path.is_file():
            raise KagglecvError(f"{run.path}: not a model.identity run (no {run.identities_path.name}); an ensemble "
                                f"of identity runs blends their top-k files, as {first.path}'s")
        oof.append(concat_top_k([read_top_k(run.oof_path)], data.ids))
        if not np.array_equal(oof[-1].folds, oof[0].folds):
            raise KagglecvError(f"{run.oof_path}: rows in other folds than in {first.oof_path}")
        if run.test_path.is_file():
            top = read_top_k(run.test_path)
            test.append(concat_top_k([top], test[0].ids if test else top.ids))
    return IdentityMembers([run.path for run in runs], data, oof, test if len(test) == len(runs) else None,
                           config.model_dump(mode="json"), info.folds_sha256 or "")


def widest_range(paths: list[Path]) -> dict | None:
    """The members' regression target ranges joined (they hold the same table: the same range, or a y_range)."""
    ranges = [RunDir(path).read_info().target_range for path in paths]
    if any(value is None for value in ranges):
        return None
    return {name: [min(r[name][0] for r in ranges), max(r[name][1] for r in ranges)] for name in ranges[0]}


EMBEDDINGS = "embeddings"
MAX_EMBEDDING_WIDTH = 65_536


@dataclass
class RunEmbeddings:
    """A run's ``kagglecv embed`` output aligned to given ids: the held-out rows' features and each fold's test
    rows' features."""

    oof: np.ndarray              # rows x width, float32
    test: dict[int, np.ndarray]  # fold -> test rows x width


def read_embeddings(run: Path, ids: np.ndarray, test_ids: np.ndarray | None) -> RunEmbeddings:
    """``run/embeddings/`` for ``ids`` (and ``test_ids``), in their order; every array's header checked before it
    is mapped (never unpickled); a missing or misfit file is an error naming it."""
    folder = Path(run) / EMBEDDINGS
    if not (folder / "oof.npy").is_file():
        raise KagglecvError(f"{run}: no {EMBEDDINGS}/oof.npy; run `kagglecv embed {run}` first")
    oof_ids = read_csv_strings(folder / "oof_ids.csv")
    oof = embedding_matrix(folder / "oof.npy", len(oof_ids), None)
    width = oof.shape[1]
    oof = _aligned_rows(oof, oof_ids["id"].to_numpy(), ids, folder / "oof_ids.csv")
    test = {}
    if test_ids is not None:
        listed = read_csv_strings(folder / "test_ids.csv")["id"].to_numpy() if (folder / "test_ids.csv").is_file() \
            else np.array([], dtype=object)
        for path in sorted(folder.glob("test_fold*.npy")):
            values = embedding_matrix(path, len(listed), width)
            test[int(path.stem.removeprefix("test_fold"))] = _aligned_rows(values, listed, test_ids,
                                                                          folder / "test_ids.csv")
    return RunEmbeddings(oof, test)


def embedding_matrix(path: Path, rows: int, width: int | None) -> np.ndarray:
    def check(shape: tuple, name: str) -> None:
        if len(shape) != 2 or shape[0] != rows or not 0 < shape[1] <= MAX_EMBEDDING_WIDTH or \
                (width is not None and shape[1] != width):
            raise KagglecvError(f"{name}: an array of shape {shape}; expected {rows} rows (its ids file) of "
                                f"{width or f'at most {MAX_EMBEDDING_WIDTH}'} values")
    npy_header(path, check)
    values = np.load(path, allow_pickle=False, mmap_mode="r")
    if not np.isfinite(values).all():
        raise KagglecvError(f"{path}: holds NaN or infinite values; embed the run again")
    return values


def _aligned_rows(values: np.ndarray, listed: np.ndarray, ids: np.ndarray, source: Path) -> np.ndarray:
    position = pd.Series(np.arange(len(listed)), index=listed)
    missing = [image_id for image_id in ids if image_id not in position.index]
    if missing or position.index.duplicated().any():
        raise KagglecvError(f"{source}: does not list each id once: {summarize(missing, quote=True) or 'duplicates'}; "
                            "embed the run again")
    return np.asarray(values[position.loc[list(ids)].to_numpy()], dtype=np.float32)


def write_gallery(fold: FoldDir, embeddings: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> None:
    """An identity fold's gallery: its training rows' embeddings (float32 ``.npy``) and their ids and identities."""
    write_csv(fold.gallery_ids_path, pd.DataFrame({"id": ids, "label": labels}))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(embeddings, dtype=np.float32), allow_pickle=False)
    write_bytes(fold.gallery_path, buffer.getvalue())


def read_gallery(fold: FoldDir) -> tuple[np.ndarray, np.ndarray]:
    """An identity fold's gallery embeddings and identities; the ``.npy`` header is checked against the ids file
    before the array is mapped (never unpickled), and a missing or misfit file is an error naming it."""
    if not fold.gallery_path.is_file() or not fold.gallery_ids_path.is_file():
        raise KagglecvError(f"{fold.path}: no {fold.gallery_path.name} and {fold.gallery_ids_path.name} (the fold's "
                            "training embeddings); run `kagglecv predict` on the run first")
    listed = read_csv_strings(fold.gallery_ids_path)
    if list(listed.columns) != ["id", "label"]:
        raise KagglecvError(f"{fold.gallery_ids_path}: expected columns id,label, got "
                            f"{summarize(list(listed.columns), quote=True)}")
    return embedding_matrix(fold.gallery_path, len(listed), None), listed["label"].to_numpy(dtype=object)
