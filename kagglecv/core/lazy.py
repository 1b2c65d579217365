"""Modules imported on their first use, for the heavy libraries only some commands need.

scikit-learn (with the scipy it loads) takes about 1.3 s to import, which every ``kagglecv train`` paid at its start
for blending and metrics it never called (BENCHMARKS.md, "Fixed work per fold"). ``skm = imported_on_first_use(
"sklearn.metrics")`` reads like the import it replaces and imports on the first attribute read.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class _ImportedOnFirstUse:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def imported_on_first_use(name: str) -> ModuleType:
    """The module ``name``, imported (once, through ``sys.modules``) when one of its attributes is first read."""
    return _ImportedOnFirstUse(name)  # type: ignore[return-value]
