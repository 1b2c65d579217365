"""The one output rule: every path a command will write is checked, before anything is written, against what the
command read and what it does not own.

A command builds an :class:`OutputRule` from its inputs (the paths on its command line) and the configs it read,
then asks it for each output. An output is refused when it

* is one of the inputs, lies inside an input folder, or holds one (a folder output);
* is, lies inside or holds a path a config names: the training and test tables, their image folders, the classes
  and label-fix files, an own-model or pretrained-weights file, the folds file and its report, the config itself;
* is a folds file (a ``<name>.csv`` beside the ``<name>.json`` report ``kagglecv folds`` writes) the command does
  not own;
* lies inside a run, ensemble or bundle folder (a folder with a ``run.json`` or a bundle ``manifest.json``) the
  command does not own; a folder it owns must be a real folder, not a link that points elsewhere;
* exists and is not provably the command's own earlier output (``replace_if``: the same CSV header, a bundle's
  manifest listing exactly the folder's files).

The rule reads nothing but the file system: a folder is a run because it holds ``run.json``, not because a
registry says so, so a command cannot forget to protect another stage's folder.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from kagglecv.core.config import OwnModelName
from kagglecv.core.errors import OutputError

RUN_MARKER = "run.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
BUNDLE_MANIFEST = "manifest.json"


def _resolved(path: Path, option: str) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as exc:
        raise OutputError(f"{option}: cannot resolve {path}: {exc}") from None


def is_run_folder(folder: Path) -> bool:
    """A run, ensemble or bundle folder: it holds a ``run.json`` or a bundle manifest."""
    return (folder / RUN_MARKER).is_file() or (folder / BUNDLE_MANIFEST).is_file()


def is_folds_report(path: Path) -> bool:
    """The JSON report ``kagglecv folds`` writes beside a folds CSV, recognised by the sha256 it records."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and "folds_sha256" in report


def is_folds_file(path: Path) -> bool:
    """A folds CSV (or its JSON report): the pair ``kagglecv folds`` writes, recognised by the report's keys."""
    return path.suffix in (".csv", ".json") and path.with_suffix(".csv").is_file() \
        and is_folds_report(path.with_suffix(".json"))


def csv_header(path: Path) -> str | None:
    """The first line of a CSV (``.csv.gz`` too), or None when it cannot be read as text."""

    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            return handle.readline(1 << 20).rstrip("\r\n")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


@dataclass
class OutputRule:
    """What one command may write; see the module docstring for the rule."""

    protected: dict[Path, str] = field(default_factory=dict)  # resolved path -> what it is, for the message
    owned: list[Path] = field(default_factory=list)           # resolved folders the command writes into
    own_files: set[Path] = field(default_factory=set)         # resolved files only this command writes (folds)

    @classmethod
    def of(cls, inputs: Iterable = (), configs: Iterable = (), owned: Iterable = ()) -> "OutputRule":
        rule = cls()
        for path in inputs:
            if path is not None:
                rule.protect(Path(path), "the input folder" if Path(path).is_dir() else "an input of this command")
        for config in configs:
            rule.protect_config(config)
        for folder in owned:
            rule.own(Path(folder))
        return rule

    def protect(self, path: Path, what: str) -> None:
        try:
            self.protected.setdefault(Path(path).resolve(), what)
        except (OSError, RuntimeError):
            pass

    def protect_config(self, config) -> None:
        """Every path a config names that the competition or another stage owns."""
        data = config.data
        named = {"the training table (data.train_csv)": data.train_csv, "the test table (data.test_csv)": data.test_csv,
                 "the training images (data.image_dir)": data.image_dir,
                 "the classes file (data.classes_file)": data.classes_file,
                 "the folds file (folds.file)": config.folds.file,
                 "the folds report": Path(config.folds.file).with_suffix(".json")}
        if data.label_fixes is not None:
            named["the label fixes (data.label_fixes.file)"] = data.label_fixes.file
        if isinstance(config.model.pretrained, Path):
            named["the pretrained weights (model.pretrained)"] = config.model.pretrained
        own = OwnModelName.parse(config.model.name)
        if own is not None:
            named["the own-model file (model.name)"] = own.file
        for what, path in named.items():
            if path is not None:
                self.protect(Path(path), what)
        for folder in data.test_image_dirs():
            self.protect(Path(folder), "the test images (data.test_image_dir)")

    def own(self, folder: Path) -> None:
        """``folder`` is the command's own output folder (its run, ensemble or study); it must not be a link."""
        folder = Path(folder)
        if folder.is_symlink():
            raise OutputError(f"{folder}: is a link to {os.path.realpath(folder)}; kagglecv writes only into real "
                              "folders it made (copy the run instead of linking it)")
        self.owned.append(_resolved(folder, str(folder)))

    def named(self, folder: Path, name: str, option: str, *, prefix: str = "", suffix: str = "") -> Path:
        """``folder/<prefix><name><suffix>`` for a name the user gave (``--name``): a plain name (:func:`plain_name`)
        whose path resolves inside ``folder`` (no link out of it) and holds no input, then :meth:`check`'s rule."""
        folder = Path(folder)
        path = folder / f"{prefix}{plain_name(name, option)}{suffix}"
        resolved, root = _resolved(path, option), _resolved(folder, option)
        if not resolved.is_relative_to(root) or resolved == root:
            raise OutputError(f"{option}: {path} resolves to {resolved}, outside {folder}; refused")
        self.check(path, option)
        for protected, what in self.protected.items():
            if protected.is_relative_to(resolved):
                raise OutputError(f"{option} {path}: holds {what} ({protected}); refused to replace it")
        return path

    def into_run(self, folder: Path, stage: str) -> None:
        """A run or ensemble folder ``stage`` writes its own files into: a real folder (a link to a folder elsewhere
        is refused), a run or ensemble (it has a run.json), and not a bundle (``pack`` owns those)."""
        folder = Path(folder)
        self.own(folder)
        if not (folder / RUN_MARKER).is_file():
            raise OutputError(f"{folder}: not a run or ensemble folder (no {RUN_MARKER}); {stage} writes only into runs")
        if (folder / BUNDLE_MANIFEST).is_file():
            raise OutputError(f"{folder}: a bundle made by kagglecv pack; {stage} does not write into bundles")

    def file(self, path: Path, option: str, *, replace_if: Callable[[Path], bool] | None = None) -> Path:
        """``path`` as an output file, after the checks; an existing file is replaced only when ``replace_if``
        says it is this command's own earlier output (no ``replace_if``: any file that passes the checks)."""
        path = Path(path)
        self.check(path, option)
        if path.is_dir():
            raise OutputError(f"{option} {path}: is a folder; expected a file to write")
        if replace_if is not None and path.exists() and not replace_if(path):
            raise OutputError(f"{option} {path}: exists and is not an earlier output of this command; refused to "
                              "replace it (move it away, or choose another name)")
        return path

    def folder(self, path: Path, option: str, *, replace_if: Callable[[Path], bool],
               earlier: str = "an earlier output of this command") -> Path:
        """``path`` as an output folder to build aside and rename into place: new, empty, or this command's own
        earlier output (``replace_if``)."""
        path = Path(path)
        resolved = self.check(path, option)
        for protected, what in self.protected.items():
            if protected.is_relative_to(resolved):
                raise OutputError(f"{option} {path}: holds {what} ({protected}); refused to replace it")
        if path.exists():
            if not path.is_dir():
                raise OutputError(f"{option} {path}: is a file; expected a folder to write")
            if any(path.iterdir()) and not replace_if(path):
                raise OutputError(f"{option} {path}: exists and is not {earlier}; refused to replace it (its files "
                                  "stay as they are)")
        return path

    def check(self, path: Path, option: str) -> Path:
        """The resolved ``path``, after the rule's checks (see the module docstring)."""
        resolved = _resolved(path, option)
        for protected, what in self.protected.items():
            if resolved == protected:
                raise OutputError(f"{option} {path}: is {what}; refused to overwrite it")
            if resolved.is_relative_to(protected) and protected.is_dir():
                raise OutputError(f"{option} {path}: inside {what} ({protected}); write it elsewhere")
        if not any(resolved.is_relative_to(owned) for owned in self.owned):
            if is_folds_file(resolved) and resolved not in self.own_files:
                raise OutputError(f"{option} {path}: is a folds file (its report {resolved.with_suffix('.json').name} "
                                  "is beside it); refused to overwrite it")
            for parent in resolved.parents:
                if is_run_folder(parent):
                    raise OutputError(f"{option} {path}: inside the run folder {parent}, which this command does not "
                                      "write; write it elsewhere")
        return resolved


def plain_name(name: str, option: str) -> str:
    """A name that becomes a file or folder name: letters, digits, ``.``, ``_``, ``-``; no path, no leading dot."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise OutputError(f"{option} {name!r}: expected a plain name of letters, digits, '.', '_' and '-' "
                          "(at most 128, starting with a letter or digit), not a path")
    return name


def same_header(header: str) -> Callable[[Path], bool]:
    """``replace_if`` for a CSV output: the existing file has exactly this header line."""
    return lambda path: csv_header(path) == header
