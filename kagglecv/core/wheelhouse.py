"""The wheelhouse of a bundle: kagglecv's own wheel and the wheels of its dependencies that a Kaggle notebook image
lacks, so ``pip install --no-index --find-links wheels kagglecv`` works without internet.

Which packages the image has is a list (``KAGGLE_PROVIDES``, overridable with ``--provided``): those and everything
they depend on are taken as present. The rest of kagglecv's dependency tree (read from the installed packages'
metadata, environment markers evaluated) is fetched with ``pip download`` at the installed versions, for Kaggle's
platform (``KAGGLE_PLATFORM``, ``KAGGLE_PYTHON``). kagglecv itself is built from the source checkout it is installed
from (``pip install -e .``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import kagglecv
from kagglecv.core.console import Console
from kagglecv.core.errors import KagglecvError

KAGGLE_PROVIDES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "albumentations", "lightgbm")
KAGGLE_PLATFORM = "manylinux_2_35_x86_64"  # Kaggle's image: Ubuntu 22.04, glibc 2.35; pip also takes older manylinux tags
KAGGLE_PYTHON = "3.11"
MIN_SETUPTOOLS = (77,)  # PEP 639 license strings in pyproject.toml


def requirement_closure(roots: list[str], stop: set[str] = frozenset()) -> dict[str, str]:
    """Installed ``{canonical name: version}`` of ``roots`` and what they require, not descending into ``stop``."""
    found: dict[str, str] = {}
    pending = [canonicalize_name(name) for name in roots]
    while pending:
        name = pending.pop()
        if name in found or name in stop:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise KagglecvError(f"--wheels: {name} is required but not installed here; install it, or name it in "
                                "--provided if the Kaggle image has it") from None
        found[name] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(canonicalize_name(requirement.name))
    return found


def missing_on_kaggle(provided: tuple[str, ...]) -> dict[str, str]:
    """kagglecv's dependencies (with versions) that neither the provided packages nor their dependencies cover."""
    present = set(requirement_closure([name for name in provided if _installed(name)]))
    present |= {canonicalize_name(name) for name in provided}
    needed = requirement_closure(["kagglecv"], stop=present)
    needed.pop("kagglecv", None)
    return needed


def build_wheelhouse(dest: Path, provided: tuple[str, ...], console: Console, platform: str = KAGGLE_PLATFORM,
                     python: str = KAGGLE_PYTHON) -> list[str]:
    """kagglecv's wheel and the missing dependencies' wheels (for ``platform`` and ``python``) in ``dest``;
    returns the wheel file names."""
    dest.mkdir(parents=True, exist_ok=True)
    _pip(["wheel", "--no-deps", "--wheel-dir", str(dest), *_isolation(), str(_source_checkout())], "build kagglecv's wheel")
    needed = missing_on_kaggle(provided)
    if needed:
        console.line(f"wheels for what the Kaggle image lacks: {', '.join(f'{n}=={v}' for n, v in sorted(needed.items()))}")
        _pip(["download", "--no-deps", "--only-binary=:all:", *platform_options(platform), "--implementation", "cp",
              "--python-version", python, "--dest", str(dest), *(f"{name}=={version}" for name, version in sorted(needed.items()))],
             "download the dependencies' wheels")
    return sorted(path.name for path in dest.glob("*.whl"))


def platform_options(platform: str) -> list[str]:
    """``--platform`` options for pip download: a ``manylinux_2_Y_<arch>`` glibc accepts every older manylinux
    tag too, but pip matches each tag exactly, so each is named (manylinux_2_Y down to 2_17, then the legacy
    aliases of PEP 600)."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if match is None:
        return ["--platform", platform]
    newest, arch = int(match.group(1)), match.group(2)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(newest, 16, -1)]
    tags += [f"{alias}_{arch}" for alias in ("manylinux2014", "manylinux2010", "manylinux1")]
    return [option for tag in tags for option in ("--platform", tag)]


def _source_checkout() -> Path:
    """The source checkout kagglecv runs from (``pip install -e``): the folder above the package, with the
    ``pyproject.toml`` that names it."""

    checkout = Path(kagglecv.__file__).resolve().parent.parent
    project = checkout / "pyproject.toml"
    if not project.is_file() or 'name = "kagglecv"' not in project.read_text(encoding="utf-8"):
        raise KagglecvError("--wheels builds kagglecv's wheel from its source checkout; install kagglecv with "
                            "`pip install -e <checkout>` and pack again")
    return checkout


def _isolation() -> list[str]:
    """Build without an isolated environment (offline) when the installed setuptools can build kagglecv."""
    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:1])
    except (metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if version >= MIN_SETUPTOOLS else []


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def _pip(arguments: list[str], what: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *arguments],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise KagglecvError(f"--wheels: pip could not {what}: {detail[-1] if detail else result.returncode}")
