"""A bundle ``kagglecv pack`` wrote, as every stage checks it: a manifest naming kagglecv that lists each file with its
sha256. ``pack`` replaces only its own earlier bundle (``is_own_bundle``); ``infer`` runs only a bundle whose files
are exactly those of its manifest (``verify_bundle``). The user's ``dataset-metadata.json`` stays outside it."""

from __future__ import annotations

import json
from pathlib import Path

from kagglecv.core.errors import KagglecvError, summarize
from kagglecv.core.files import sha256_file
from kagglecv.core.notebook import DATASET_METADATA
from kagglecv.core.outputs import BUNDLE_MANIFEST as MANIFEST


def is_own_bundle(folder: Path) -> bool:
    """A bundle ``pack`` wrote: its manifest names kagglecv and lists exactly the folder's files."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
        listed = set(manifest["files"]) if "kagglecv_bundle" in manifest else None
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return listed == bundle_files(Path(folder)) and all(p.is_dir() or p.is_file() for p in Path(folder).rglob("*"))


def bundle_files(folder: Path) -> set[str]:
    """Every file of a bundle folder but its manifest and the user's ``dataset-metadata.json``, as the manifest names
    them."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {MANIFEST, DATASET_METADATA}


def verify_bundle(path: Path) -> None:
    """A folder with a manifest must hold exactly the files it lists, each with its sha256; else an error naming
    them. A plain run folder (no manifest) is left alone."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        if is_bundle_copy(Path(path)):
            raise KagglecvError(f"{path}: a kagglecv bundle without its {MANIFEST}; refused to run it unchecked "
                                "(pack the run again)")
        return
    try:
        listed = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KagglecvError(f"{manifest_path}: corrupt bundle manifest ({exc}); pack the run again") from None
    if not isinstance(listed, dict) or not all(isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                                               for entry in listed.values()):
        raise KagglecvError(f"{manifest_path}: corrupt bundle manifest (files: expected name -> {{sha256, bytes}}); "
                            "pack the run again")
    present = bundle_files(Path(path))
    missing = sorted(set(listed) - present)
    added = sorted(present - set(listed))
    altered = sorted(name for name in set(listed) & present if sha256_file(Path(path) / name) != listed[name]["sha256"])
    problems = [f"{label}: {summarize(names, quote=True)}" for label, names in
                (("altered (sha256 differs)", altered), ("missing", missing), ("not in the manifest", added)) if names]
    if problems:
        raise KagglecvError(f"{path}: the bundle does not match its manifest, refused to run it; " + "; ".join(problems))


def is_bundle_copy(folder: Path) -> bool:
    """A folder ``pack`` wrote (its run.json says so), whatever is left of its manifest."""
    try:
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and ("bundle" in info or "bundle_members" in info)
