"""The run folder ``runs/<experiment>/``: resolved config, classes, provenance, and one ``fold<K>/`` per fold."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

import yaml

from .config import Config, dump_config, validate_config
from .data import CompetitionData
from .errors import KagglecvError, summarize
from .files import sha256_file, write_json, write_text

# Keys that change where or how fast a run goes, never its results: they may differ on resume.
RESULT_NEUTRAL_KEYS = {"train.num_workers", "train.device"}
PACKAGES = ("kagglecv", "torch", "torchvision", "timm", "albumentations", "numpy", "scikit-learn", "pandas")


@dataclass
class RunDir:
    path: Path

    def fold_dir(self, fold: int) -> Path:
        return self.path / f"fold{fold}"


def prepare_run_dir(config: Config, data: CompetitionData, *, force: bool = False, write: bool = True) -> RunDir:
    """Create or check ``runs/<experiment>``; a config that differs from the recorded one is an error unless forced."""
    run = RunDir(Path(config.run_dir))
    recorded = run.path / "config.yaml"
    if recorded.is_file():
        # Validating the recorded config through today's models fills keys added since with their defaults.
        previous = validate_config(yaml.safe_load(recorded.read_text()), source=str(recorded))
        changes = config_differences(previous.model_dump(mode="json"), config.model_dump(mode="json"))
        if changes and not force:
            raise KagglecvError(f"{run.path} was started with another config: {summarize(changes, 8)}; use a new "
                                "experiment name, or --force to continue with the new config")
    if write:
        folds_file = Path(config.folds.file)
        created = _recorded_creation(run.path / "run.json")
        write_text(recorded, dump_config(config))
        write_json(run.path / "run.json", {
            "experiment": config.experiment, "created": created, "task": data.task, "classes": data.classes,
            "folds_file": str(folds_file), "folds_sha256": sha256_file(folds_file),
            "table_sha256": data.content_hash(), "versions": package_versions(), "git_commit": git_commit(),
            "python": platform.python_version(),
        })
    return run


def _recorded_creation(path: Path) -> str:
    """When the run was first started: kept from an existing run.json, else now."""
    if path.is_file():
        try:
            return json.loads(path.read_text())["created"]
        except (json.JSONDecodeError, KeyError):
            pass
    return datetime.now().isoformat(timespec="seconds")


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
