"""The layout's rules: import-linter's contracts (pyproject.toml) hold, and fail when a module breaks them; no
imports hidden inside functions outside cli.py; the torch-free stages load without torch (in a subprocess)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "kagglecv"
# Function-level imports that are deliberate: optional extras, and reading a run without torch.
LAZY_EXTERNAL = ("mlflow", "ray", "optuna", "cleanlab", "onnx", "onnxruntime", "onnxscript")
LAZY_INTERNAL = {("kagglecv/nn/recipe.py", "kagglecv.nn.inference"),  # a recipe is read without torch
                 ("kagglecv/stages/pack.py", "kagglecv.nn.export")}     # torch only to export an ONNX bundle


def lint(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` with the repository's contracts."""
    env = os.environ | {"PYTHONPATH": str(root)}
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(REPO / 'pyproject.toml')!r}, no_cache=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "6 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, planted, contract", [
    ("core/errors.py", "import kagglecv.stages.report", "Layers"),          # core reaching up to a stage
    ("stages/score.py", "import kagglecv.stages.submit", "Stages are independent"),
    ("stages/submit.py", "import kagglecv.stages.score", "Stages are independent"),  # what the order allowed
    ("stages/report.py", "import torch", "No torch"),                       # a light stage pulling torch in
    ("data/pixels.py", "import kagglecv.data.load", "No import cycles"),      # load -> table -> pixels -> load
    ("training/trainer.py", "import kagglecv.core.config", "know no config"),  # the loop reading config keys again
    ("training/selection.py", "import kagglecv.data.table", "know no config"),
])
def test_a_planted_import_breaks_its_contract(tmp_path, module, planted, contract):
    copy = tmp_path / "kagglecv"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{planted}\n")
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout[-2000:]
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line or contract in line]
    assert any(contract in line for line in broken), result.stdout[-3000:]


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import inside a function or class body (not at module level, not under
    ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level == 0:
                    found.append((inner.lineno, inner.module))
                elif isinstance(inner, ast.Import):
                    found.extend((inner.lineno, alias.name) for alias in inner.names)
    return found


def test_no_imports_inside_functions_outside_the_cli():
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative == "kagglecv/cli.py":
            continue
        for line, module in function_level_imports(path):
            if module.split(".")[0] in LAZY_EXTERNAL or (relative, module) in LAZY_INTERNAL:
                continue
            hidden.append(f"{relative}:{line}: {module}")
    assert not hidden, "imports inside functions (hoist them, or list a deliberate lazy one): " + ", ".join(hidden)


def test_the_scan_finds_an_import_inside_a_function(tmp_path):
    planted = tmp_path / "m.py"
    planted.write_text("import os\n\ndef f():\n    from kagglecv.core import errors\n    return errors\n")
    assert function_level_imports(planted) == [(4, "kagglecv.core")]


def test_every_module_is_in_a_subpackage_of_the_layout():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py"], top
    assert sorted(path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__") == \
        ["core", "data", "nn", "presentation", "second", "stages", "training", "workflows"]


def test_scoring_ensembling_submitting_reporting_and_reading_a_recipe_do_not_import_torch():
    light = ("import sys, kagglecv.stages.score, kagglecv.stages.ensemble, kagglecv.stages.submit, kagglecv.stages.report, "
             "kagglecv.stages.folds, kagglecv.stages.lb, kagglecv.stages.track, kagglecv.nn.recipe; "
             "print(','.join(m for m in ('torch', 'timm', 'albumentations') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", light], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"imported: {result.stdout}"
    train = subprocess.run([sys.executable, "-c", "import sys, kagglecv.stages.train; print('kagglecv.stages.predict' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert train.stdout.strip() == "False", "train.py must not import predict.py"


def test_training_does_not_import_scikit_learn():
    """scikit-learn (and scipy under it) costs about 1.3 s a process; a fold's training never calls it, so the train
    stage, a fusion model's pieces included, imports it only on first use (``kagglecv.core.lazy``)."""
    code = "import sys, kagglecv.stages.train; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", "kagglecv.stages.train imports sklearn"


LAYERS = ["cli", "workflows", "stages", "training", "presentation", "nn", "second", "data", "core"]


def type_checking_imports(path: Path) -> list[str]:
    """Modules imported under ``if TYPE_CHECKING:`` in ``path`` (import-linter does not count them)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    found.append(inner.module)
                elif isinstance(inner, ast.Import):
                    found.extend(alias.name for alias in inner.names)
    return found


def back_edges(package: Path) -> set[tuple[str, str]]:
    """(file, module) of every TYPE_CHECKING import of kagglecv that goes up a layer, across stages, or to a sibling."""
    edges = set()
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package.parent).as_posix()
        parts = relative.removesuffix(".py").split("/")
        for module in type_checking_imports(path):
            target = module.split(".")
            if target[0] != "kagglecv" or len(parts) < 3 or len(target) < 2:
                continue
            here, there = LAYERS.index(parts[1]), LAYERS.index(target[1]) if target[1] in LAYERS else len(LAYERS)
            if there < here or (there == here and target[:3] != parts[:3]):
                edges.add((relative, module))
    return edges


def test_no_back_edge_hides_under_type_checking(tmp_path):
    assert back_edges(PACKAGE) == set()
    planted = tmp_path / "kagglecv" / "core"
    planted.mkdir(parents=True)
    (planted / "runs.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    from kagglecv.data.table import CompetitionData\n")
    assert back_edges(tmp_path / "kagglecv") == {("kagglecv/core/runs.py", "kagglecv.data.table")}
