"""``kagglecv init``: a commented config from a competition folder as Kaggle ships it.

The folder decides the data keys (``kagglecv.data.survey``); ``init`` adds defaults that fit the data, each written
out with its reason: the model, the input size, the augmentation (no flips and no preset for pixel tables and small
grey images: digits, text and signs change meaning when flipped), the folds, the epochs. ``--set`` overrides any
key before it is written. The config never goes into the competition folder (``/kaggle/input`` is read-only), and
an existing file is replaced only when ``init`` wrote it.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from kagglecv.core.config import Config, apply_override, validate_config
from kagglecv.core.errors import ConfigError, KagglecvError
from kagglecv.core.files import write_text
from kagglecv.core.outputs import OutputRule
from kagglecv.data.archives import unpacked_view
from kagglecv.data.survey import Finding, Survey, survey_competition

MARKER = "# kagglecv init:"
SECTION_ORDER = ("experiment", "metric", "data", "folds", "model", "augment", "train", "predict", "submit")


@dataclass
class InitResult:
    path: Path
    findings: list[Finding]


def init_config(folder: Path, out: Path | None = None, metric: str | None = None,
                overrides: list[str] | None = None, train: Path | None = None,
                sample: Path | None = None) -> InitResult:
    """Write the config of the competition in ``folder`` to ``out`` (``./<folder name>.yaml``); ``train`` and
    ``sample`` settle which table is which when the folder cannot."""
    folder = Path(folder)
    out = Path(out) if out is not None else Path(f"{experiment_name(folder)}.yaml")
    OutputRule.of([folder]).file(out, "--out", replace_if=written_by_init)  # before reading anything
    survey = _survey_unpacked(folder, metric, train, sample)
    entries = _entries(survey, folder)
    raw: dict[str, Any] = {}
    for key, value, _ in entries:
        _set(raw, key, value)
    for override in overrides or []:
        apply_override(raw, override)
        key = override.partition("=")[0].strip()
        entries = [entry for entry in entries if entry[0] != key] + [(key, _get(raw, key), "--set")]
    validate_config(raw, source=str(out))
    write_text(out, render(entries, folder))
    return InitResult(out, survey.findings)


def config_for_folder(folder: Path, metric: str | None = None) -> tuple[Path, InitResult | None]:
    """``kagglecv run FOLDER``: ``./<folder name>.yaml``, written by ``init`` now, or kept (with your edits) when
    ``init`` wrote it before for this same folder (resolved: ``A/data`` and ``B/data`` share the file name only).

    Raises:
        ConfigError: the file was written by ``init`` for another folder.
    """
    path = Path(f"{experiment_name(folder)}.yaml")
    if path.is_file() and written_by_init(path):
        made_for = folder_of_init(path)
        if made_for != str(Path(folder).resolve()):
            raise ConfigError(f"{path}: written by kagglecv init for {made_for or 'a folder it does not record'}, not "
                              f"for {Path(folder).resolve()}; run it from another folder, or `kagglecv init {folder} "
                              f"--out <name>.yaml` then `kagglecv run <name>.yaml`")
        unpacked(folder)  # the view its keys name, made again when an archive changed or the view was removed
        return path, None
    result = init_config(folder, path, metric)
    return result.path, result


def unpacked(folder: Path) -> Path:
    """The competition folder as the survey and the config see it: itself, or with its archives unpacked into
    ``./<folder name>.unpacked/`` (:mod:`kagglecv.data.archives`), never into the input."""
    return unpacked_view(folder, _view_path(folder))


def _view_path(folder: Path) -> Path:
    return Path(f"{experiment_name(folder)}.unpacked")


def _survey_unpacked(folder: Path, metric: str | None, train: Path | None, sample: Path | None) -> Survey:
    """The survey of the unpacked folder; a view this call made is removed again when the survey fails, so a
    refused folder leaves nothing behind."""
    existed = _view_path(folder).exists()
    seen = unpacked(folder)
    try:
        return survey_competition(seen, metric, train, sample)
    except KagglecvError:
        if seen != folder and not existed:
            shutil.rmtree(seen, ignore_errors=True)
        raise


def check_outputs_outside(folder: Path, config: Config) -> None:
    """``run DIR`` never writes into the competition folder (``/kaggle/input`` is read-only): the folds file, the
    runs folder, the submissions folder and a file tracking store are checked against it before anything runs."""
    competition = Path(folder).resolve()
    outputs = {"folds.file": config.folds.file, "runs_dir": config.runs_dir, "submit.dir": config.submit.dir}
    uri = config.tracking.uri or ""
    if uri.startswith("sqlite:///") or uri.startswith("file:"):
        outputs["tracking.uri"] = uri.removeprefix("sqlite:///").removeprefix("file://").removeprefix("file:")
    for key, path in outputs.items():
        if Path(path).resolve().is_relative_to(competition):
            raise ConfigError(f"{key}: {path} is inside the input folder {folder}; kagglecv run DIR never writes "
                              "into the competition folder: choose a path outside it")


def written_by_init(path: Path) -> bool:
    return _first_line(path).startswith(MARKER)


def folder_of_init(path: Path) -> str | None:
    """The resolved competition folder ``init`` recorded in the first line of ``path`` (a JSON string), or None."""
    recorded = _first_line(path).removeprefix(MARKER).strip().partition(" on ")[0]
    try:
        folder = json.loads(recorded)
    except ValueError:
        return None
    return folder if isinstance(folder, str) else None


def recorded_folder(folder: Path) -> str:
    """The resolved folder as the config's first line records it: a JSON string, ASCII, every control and
    line-break character escaped, so no folder name can end the comment and start a key."""
    return json.dumps(str(Path(folder).resolve()))


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline(4096)
    except (OSError, UnicodeDecodeError):
        return ""


def experiment_name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(folder).resolve().name).strip("-._") or "competition"
    return name if name[0].isalnum() else f"c{name}"


def _entries(survey: Survey, folder: Path) -> list[tuple[str, Any, str]]:
    """(key, value, reason) for every key the config gets, data keys from the survey and the defaults after them."""
    found = [(f.key, _plain(f.value), f.why) for f in survey.findings if not f.key.startswith("image.")]
    keys = {key for key, _, _ in found}
    small_grey = bool(survey.value("image.small_grey"))
    size = survey.value("model.img_size", 224)
    defaults = [
        ("model.name", "resnet18", "a small timm backbone for a first baseline; any timm name or file.py:name"),
        ("model.pretrained", True, "ImageNet weights from the Hugging Face hub on first use; false offline"),
        ("augment.train", "none" if small_grey else "light",
         "no preset for small grey images (digits, text)" if small_grey else "random flips and crops (shifts for "
         "small images, rescaled crops for larger); medium and heavy add more, colour only for eight-bit photographs"),
        ("augment.hflip", not small_grey, "flips change digits, text and signs: off for small grey images"
         if small_grey else "photos survive a flip; set false for digits, text or signs"),
        ("folds.n_splits", 5, "5 folds: 80 % of the rows train each fold model"),
        ("train.epochs", 10, "a first baseline; raise it once the folds and the score look right"),
        ("train.batch_size", 64, "fits a 16 GB GPU at 224 px with resnet18"),
    ]
    if size <= 64:
        defaults.append(("model.small_input", True, f"{size} px: a stride-1 stem without max-pool keeps the detail"))
    if survey.value("data.task") == "multilabel" and survey.value("submit.format") == "labels":
        defaults.append(("submit.threshold", "oof", "per-tag thresholds tuned on the OOF predictions for the metric"))
    return [("experiment", experiment_name(folder), "the competition folder's name"), *found,
            *(entry for entry in defaults if entry[0] not in keys)]


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _set(raw: dict, key: str, value: Any) -> None:
    *sections, last = key.split(".")
    for section in sections:
        raw = raw.setdefault(section, {})
    raw[last] = value


def _get(raw: dict, key: str) -> Any:
    for part in key.split("."):
        raw = raw[part]
    return raw


def render(entries: list[tuple[str, Any, str]], folder: Path) -> str:
    """The YAML text: sections in pipeline order, each key with its reason as a comment."""
    lines = [f"{MARKER} {recorded_folder(folder)} on {date.today().isoformat()}; each key says why. Edit any of "
             "them, then",
             "# `kagglecv run <this file>`. Paths are relative to the folder you run kagglecv in."]
    by_section: dict[str, list[tuple[str, Any, str]]] = {}
    for key, value, why in entries:
        section, _, rest = key.partition(".")
        by_section.setdefault(section, []).append((rest, value, why))
    for section in sorted(by_section, key=lambda name: SECTION_ORDER.index(name) if name in SECTION_ORDER else 99):
        items = by_section[section]
        if len(items) == 1 and items[0][0] == "":
            lines.append(f"{section}: {_scalar(section, items[0][1])}  # {_comment(items[0][2])}")
            continue
        lines.append(f"{section}:")
        lines += _section_lines(section, items)
    return "\n".join(lines) + "\n"


def _section_lines(section: str, items: list[tuple[str, Any, str]]) -> list[str]:
    """A section's keys, two-part ones (``features.numeric``) under their own sub-mapping, each once."""
    lines, opened = [], set()
    for key, value, why in items:
        parent, _, child = key.partition(".")
        if not child:
            lines.append(f"  {key}: {_scalar(f'{section}.{key}', value)}  # {_comment(why)}")
            continue
        if parent not in opened:
            opened.add(parent)
            lines.append(f"  {parent}:")
        lines.append(f"    {child}: {_scalar(f'{section}.{key}', value)}  # {_comment(why)}")
    return lines


# What YAML (PyYAML reads 1.1) takes for a line break, and the other control characters: never raw in the text.
_BREAKING = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def _comment(text: str) -> str:
    """A reason as a one-line comment: names from the folder in it are shown with their control characters
    escaped, so no file or folder name can end the comment and start a key."""
    return _BREAKING.sub(lambda match: json.dumps(match.group())[1:-1], str(text))


def _scalar(key: str, value: Any) -> str:
    """``value`` as one line of flow YAML, through the emitter; a value holding a line break is refused."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and _BREAKING.search(item):
            raise ConfigError(f"{key}: {item!r} holds a line break or control character; kagglecv init writes no "
                              "such value (rename the file or folder, or write the config by hand)")
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.strip().removesuffix("\n...").strip()
