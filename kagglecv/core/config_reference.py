"""Every config key, its default and its description, written from the pydantic models themselves: the README's key
table is this text (a test compares them), so a key added to a model cannot be missing from the reference.

Keys that kagglecv only hands to timm (the optimizer and the schedule) are marked "(timm)": timm's documentation
is theirs.
"""

from __future__ import annotations

import enum
import json
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from kagglecv.core.config import Config

# The train keys kagglecv passes to timm's create_optimizer_v2 / create_scheduler_v2 as they are.
TIMM_KEYS = {"train.opt", "train.lr", "train.weight_decay", "train.momentum", "train.sched", "train.lr_decay_fn",
             "train.warmup_epochs", "train.warmup_lr", "train.min_lr", "train.decay_epochs", "train.decay_milestones",
             "train.decay_rate", "train.patience_epochs"}
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def config_reference() -> str:
    """The markdown tables: one per section, in the order of :class:`Config`'s fields."""
    top, sections = [], []
    for name, field in Config.model_fields.items():
        model = _section_model(field.annotation)
        if model is None:
            top.append((name, field))
        else:
            sections.append((name, model))
    blocks = [_table("top level", [(name, field) for name, field in top], "")]
    blocks += [_table(name, list(model.model_fields.items()), f"{name}.") for name, model in sections]
    return "\n\n".join(blocks) + "\n"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _table(title: str, fields: list, prefix: str) -> str:
    lines = [f"**{title}**", "", "| key | default | meaning |", "| --- | --- | --- |"]
    for name, field in fields:
        key = f"{prefix}{name}"
        meaning = " ".join((field.description or "").split()) or "described above"
        marker = " (timm)" if key in TIMM_KEYS else ""
        lines.append(f"| `{key}`{marker} | {_default(field)} | {meaning.replace('|', '/')} |")
    return "\n".join(lines)


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, enum.Enum):
        value = value.value
    return "" if value is None else f"`{json.dumps(value)}`"


def readme_block(readme: str) -> str:
    """The README's generated block, between its two markers."""
    start, end = readme.index(START) + len(START), readme.index(END)
    return readme[start:end].strip("\n") + "\n"
