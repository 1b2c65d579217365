"""A mirror of finished runs in MLflow (``pip install kagglecv[mlflow]``); kagglecv's run folders stay the truth.

``sync_runs`` imports run folders into an MLflow tracking store, by default ``sqlite:///<runs>/mlflow.db`` with
artifacts under ``<runs>/mlartifacts``, so ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`` shows every
experiment. One MLflow experiment per competition (training table and metric, as the report groups them), one
MLflow run per kagglecv run or ensemble: the resolved config as params, the OOF scores and every fold's per-epoch
history as metrics (``fold<K>/<column>`` at step = epoch), the pictures, score and label issues as artifacts.

It is the only writer: folds training in parallel never touch the database; ``kagglecv run`` (for its own run, when
the user's own config names ``tracking: mlflow``) and ``kagglecv track sync`` import finished folders, one at a time
under a file lock. A URI is never read from a run folder (a shared run could point it at any server). Import is
idempotent: each MLflow run carries the fingerprint (sha256) of the files it was made from, an unchanged run is
skipped, and a changed one (re-predicted, re-scored) replaces its earlier MLflow run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from kagglecv.core.errors import KagglecvError, require_extra
from kagglecv.core.files import output_lock, sha256_file
from kagglecv.core.outputs import OutputRule
from kagglecv.core.records import RunInfo
from kagglecv.core.runs import RunDir, read_json
from kagglecv.data.scoring import run_score

RUN_TAG = "kagglecv.run"
FINGERPRINT_TAG = "kagglecv.fingerprint"
PARAM_LIMIT = 500          # characters of one param value; longer values (augmentation lists) are cut
PARAMS_PER_BATCH = 100     # MLflow's log_batch limits
METRICS_PER_BATCH = 1000
LOCK_SECONDS = 600
ARTIFACTS = ("config.yaml", "score.json", "label_issues.csv", "weights.json", "curves.png", "fold_scores.png",
             "confusion.png", "per_class_ap.png", "errors.png", "confused_pairs.png", "duplicate_conflicts.png")


@dataclass
class SyncResult:
    uri: str
    logged: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def default_uri(runs_dir: Path) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def require_mlflow() -> None:
    """A clear error before any work when tracking is asked for but MLflow is not installed."""
    require_extra("mlflow", "mlflow", "MLflow tracking (track sync, tracking: mlflow)")


def sync_runs(runs_dir: Path, uri: str | None = None, only: list[str] | None = None) -> SyncResult:
    """Import every finished run under ``runs_dir`` (or the ``only`` names) into the MLflow store at ``uri``."""
    require_mlflow()
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # schema migrations of a new database are not the user's news
        logging.getLogger(name).setLevel(logging.WARNING)

    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise KagglecvError(f"{runs_dir}: not a folder of runs")
    uri = check_tracking_uri(uri or default_uri(runs_dir), runs_dir)
    result = SyncResult(uri)
    with output_lock(runs_dir / ".mlflow.lock", f"the MLflow mirror {uri}", wait=LOCK_SECONDS):
        records = [_RunRecord.read(RunDir(path)) for path in sorted(runs_dir.iterdir())
                   if not path.name.startswith(".") and RunDir(path).is_run()
                   and (only is None or path.name in only)]  # every run read (and checked) before the store opens
        with _mlflow_errors(uri):
            client = MlflowClient(tracking_uri=uri)
            for record in records:
                logged = _sync_run(client, record, runs_dir, uri)
                (result.logged if logged else result.unchanged).append(record.run.name)
    return result


URI_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
SQLITE_HEADER = b"SQLite format 3\x00"


def check_tracking_uri(uri: str, runs_dir: Path) -> str:
    """A tracking URI from the user's own command line or config (never from a run folder): a known scheme, and a
    SQLite store that is a new file or a SQLite database, under the output rule (not a folds file, not in a run)."""


    scheme = urlparse(uri).scheme
    if scheme not in URI_SCHEMES:
        raise KagglecvError(f"--uri {uri!r}: unknown tracking URI scheme {scheme!r}; expected sqlite:///path/mlflow.db, "
                            "file:///folder or http(s)://host:port")
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):])  # sqlite:///relative/path or sqlite:////absolute/path
        OutputRule.of().file(path, "--uri")
        if path.is_file():
            with open(path, "rb") as handle:
                if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise KagglecvError(f"--uri {uri!r}: {path} exists and is not a SQLite database; refused to use it")
    return uri


@contextlib.contextmanager
def _mlflow_errors(uri: str):
    """An MLflow or database error (a server that does not answer, a store it cannot open) is one line naming the
    URI, never a traceback."""
    try:
        yield
    except KagglecvError:
        raise
    except Exception as exc:  # MlflowException, SQLAlchemy and connection errors have no common base
        message = " ".join(str(exc).split())[:300]
        raise KagglecvError(f"MLflow at {uri}: {type(exc).__name__}: {message}") from None


@dataclass
class _RunRecord:
    run: RunDir
    config: dict
    info: RunInfo
    score: dict

    @classmethod
    def read(cls, run: RunDir) -> "_RunRecord":
        return cls(run, run.read_config().model_dump(mode="json"), run.read_info(), _score(run))


def _sync_run(client, record: _RunRecord, runs_dir: Path, uri: str) -> bool:
    """Log one kagglecv run unless an MLflow run with its fingerprint exists; returns whether it logged."""
    run, config, info, score = record.run, record.config, record.info, record.score
    experiment_id = _experiment(client, f"{config['data']['train_csv']} ({score['metric']})", runs_dir, uri)
    fingerprint = run_fingerprint(run)
    # Matched here rather than in a filter string, which a run name with a quote would break.
    earlier = [found for found in client.search_runs([experiment_id], max_results=50_000)
               if found.data.tags.get(RUN_TAG) == run.name]
    if any(found.data.tags.get(FINGERPRINT_TAG) == fingerprint for found in earlier):
        return False
    created = _milliseconds(info.created)
    mlflow_run = client.create_run(experiment_id, start_time=created, run_name=run.name, tags={
        RUN_TAG: run.name, FINGERPRINT_TAG: fingerprint, "kagglecv.kind": info.kind,
        "kagglecv.path": str(run.path.resolve()), "mlflow.note.content": config.get("notes") or ""})
    run_id = mlflow_run.info.run_id
    _log_params(client, run_id, flatten(config))
    _log_metrics(client, run_id, score, run)
    for name in ARTIFACTS:
        if (run.path / name).is_file():
            client.log_artifact(run_id, str(run.path / name))
    if not run.score_path.is_file():  # scored in memory: the record carries it, the run folder stays as it was
        client.log_dict(run_id, score, run.score_path.name)
    client.set_terminated(run_id, "FINISHED")
    for found in earlier:  # replaced by the run just logged
        client.delete_run(found.info.run_id)
    return True


def _score(run: RunDir) -> dict:
    """``score.json``, or the score computed now (in memory: track writes nothing into a run) when it has none."""
    if not run.score_path.is_file():
        return run_score(run).to_dict()
    return read_json(run.score_path, "a run's score")


def run_fingerprint(run: RunDir) -> str:
    """sha256 over the files a run's MLflow record is made from."""
    digest = hashlib.sha256()
    files = [run.config_path, run.oof_path, run.score_path, run.label_issues_path]
    files += [fold.history_path for fold in run.fold_dirs()]
    for path in files:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode() if path.is_file() else b"-")
    return digest.hexdigest()


def _experiment(client, name: str, runs_dir: Path, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:") or uri.startswith("file:"):  # a local store: artifacts beside it, not in the cwd
        slug = hashlib.sha256(name.encode()).hexdigest()[:12]
        artifacts = (Path(runs_dir).resolve() / "mlartifacts" / slug).as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}``; lists as JSON, values cut to PARAM_LIMIT."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text if len(text) <= PARAM_LIMIT else text[:PARAM_LIMIT - 3] + "..."
    return flat


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start:start + PARAMS_PER_BATCH])


def _log_metrics(client, run_id: str, score: dict, run: RunDir) -> None:
    from mlflow.entities import Metric

    now = int(datetime.now().timestamp() * 1000)
    values = {f"cv_{score['metric']}": score["overall"], "fold_mean": score["fold_mean"], "fold_std": score["fold_std"]}
    values.update({f"oof_{name}": value for name, value in score.get("other_metrics", {}).items()})
    values.update({f"fold{fold}_{score['metric']}": value for fold, value in score.get("per_fold", {}).items()})
    metrics = [Metric(key, float(value), now, 0) for key, value in values.items() if value == value]
    for fold in run.fold_dirs():
        history = fold.read_history()
        if history is not None:
            for column in history.columns.drop("epoch", errors="ignore"):
                metrics += [Metric(f"fold{fold.index}/{column}", float(value), now, int(epoch))
                            for epoch, value in zip(history["epoch"], history[column]) if value == value]
    for start in range(0, len(metrics), METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + METRICS_PER_BATCH])


def _milliseconds(created: str | None) -> int | None:
    try:
        return int(datetime.fromisoformat(created).timestamp() * 1000) if created else None
    except ValueError:
        return None
