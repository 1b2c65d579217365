"""The Kaggle notebook a bundle is submitted with, and the Kaggle CLI's metadata files (``kernel-metadata.json`` beside
the notebook, ``dataset-metadata.json`` in the bundle).

The notebook runs offline over ``/kaggle/input`` (read-only: the bundle as a dataset, the competition's data) and
writes ``/kaggle/working/submission.csv``: it finds the bundle (its manifest) and the competition folder (the one
holding the sample submission), installs kagglecv from the bundle's wheelhouse with ``pip --no-index`` when the
image lacks it, and runs ``kagglecv infer`` on whatever test set the folder has (a test table, the sample's rows,
or the test images). ``KAGGLE_INPUT`` and ``KAGGLE_WORKING`` override the two roots (tests use a temporary tree).
The metadata files are the user's once written: a re-pack keeps them as edited (their ids need a Kaggle user name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kagglecv.core.errors import KagglecvError

NOTEBOOK = "submission.ipynb"
KERNEL_METADATA = "kernel-metadata.json"
DATASET_METADATA = "dataset-metadata.json"
NOTEBOOK_MARK = "kagglecv_notebook"  # in the notebook's metadata: a folder pack may replace
USER_PLACEHOLDER = "YOUR-KAGGLE-USERNAME"


@dataclass(frozen=True)
class NotebookPlan:
    """What the notebook looks for: the bundle's folder name, the competition's, and the test files' names there."""

    bundle: str
    competition: str | None
    sample: str
    test_table: str | None
    test_images: str | None
    gpu: bool = False


SETTINGS = '''\
import json, os, subprocess, sys, time
from pathlib import Path

BUNDLE = {bundle!r}            # the bundle's dataset folder under /kaggle/input
COMPETITION = {competition!r}  # the competition's folder (None: the one holding the sample)
SAMPLE, TEST_TABLE, TEST_IMAGES = {sample!r}, {test_table!r}, {test_images!r}
INPUT = Path(os.environ.get("KAGGLE_INPUT", "/kaggle/input"))
WORKING = Path(os.environ.get("KAGGLE_WORKING", "/kaggle/working"))
started = time.time()'''

FIND = '''\
def bundles():
    """Folders up to two levels under INPUT whose manifest says kagglecv packed them."""
    for manifest in [*INPUT.glob("*/manifest.json"), *INPUT.glob("*/*/manifest.json")]:
        try:
            if "kagglecv_bundle" in json.loads(manifest.read_text()):
                yield manifest.parent
        except (OSError, ValueError):
            continue

found = sorted(bundles(), key=lambda folder: folder.name != BUNDLE)
if not found:
    raise SystemExit(f"no kagglecv bundle under {INPUT}: add the bundle dataset to the notebook")
bundle = found[0]
places = [INPUT / COMPETITION] if COMPETITION and (INPUT / COMPETITION).is_dir() else \\
    [folder for folder in sorted(INPUT.iterdir()) if (folder / SAMPLE).is_file()]
if not places:
    raise SystemExit(f"no folder under {INPUT} holds {SAMPLE}: add the competition's data to the notebook")
competition = places[0]
print(f"bundle {bundle}, competition data {competition}")'''

INSTALL = '''\
try:
    import kagglecv  # noqa: F401  (the image has it already)
except ImportError:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--disable-pip-version-check",
                    "--find-links", str(bundle / "wheels"), "kagglecv"], check=True)
from importlib.metadata import version
print("kagglecv", version("kagglecv"))'''

INFER = '''\
out = WORKING / "submission.csv"
command = [sys.executable, "-m", "kagglecv", "infer", str(bundle), "--sample", str(competition / SAMPLE),
           "--out", str(out)]
if TEST_TABLE and (competition / TEST_TABLE).is_file():
    command += ["--test", str(competition / TEST_TABLE)]
if TEST_IMAGES and (competition / TEST_IMAGES).is_dir():
    command += ["--images", str(competition / TEST_IMAGES)]
device = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name(0) "
                         "if torch.cuda.is_available() else 'cpu')"], capture_output=True, text=True)
print("device", device.stdout.strip() or device.stderr.strip()[-200:])
subprocess.run(command, check=True)
print(f"wrote {out} in {time.time() - started:.0f} s")'''


def build_notebook(plan: NotebookPlan) -> nbformat.NotebookNode:
    """The submission notebook for ``plan``, its cells in the order they run."""
    notebook = new_notebook(cells=[
        new_markdown_cell(f"# kagglecv submission: `{plan.bundle}`\n\nOffline: installs kagglecv from the bundle's "
                          "wheelhouse when the image lacks it, then `kagglecv infer` on the competition's test set, "
                          "writing `/kaggle/working/submission.csv`."),
        new_code_cell(SETTINGS.format(bundle=plan.bundle, competition=plan.competition, sample=plan.sample,
                                      test_table=plan.test_table, test_images=plan.test_images)),
        new_code_cell(FIND), new_code_cell(INSTALL), new_code_cell(INFER),
    ])
    notebook.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                              "language_info": {"name": "python"}, NOTEBOOK_MARK: 1})
    return notebook


def kernel_metadata(plan: NotebookPlan, slug: str) -> dict:
    """``kernel-metadata.json`` as ``kaggle kernels push`` reads it (no internet; the bundle and competition)."""
    return {"id": f"{USER_PLACEHOLDER}/{slug}", "title": slug, "code_file": NOTEBOOK, "language": "python",
            "kernel_type": "notebook", "is_private": True, "enable_gpu": plan.gpu, "enable_internet": False,
            "dataset_sources": [f"{USER_PLACEHOLDER}/{plan.bundle}"],
            "competition_sources": [plan.competition] if plan.competition else [], "kernel_sources": []}


def dataset_metadata(name: str) -> dict:
    """``dataset-metadata.json`` as ``kaggle datasets create`` reads it."""
    return {"title": name, "id": f"{USER_PLACEHOLDER}/{name}", "licenses": [{"name": "CC0-1.0"}]}


def is_own_notebook_folder(folder: Path) -> bool:
    """A folder ``pack --notebook`` wrote: exactly its notebook (marked) and the kernel metadata."""
    names = {path.name for path in Path(folder).iterdir()}
    if names != {NOTEBOOK, KERNEL_METADATA} or not all(path.is_file() for path in Path(folder).iterdir()):
        return False
    try:
        return NOTEBOOK_MARK in json.loads((Path(folder) / NOTEBOOK).read_text(encoding="utf-8"))["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def refuse_link(path: Path) -> None:
    """A metadata file that is a link: its target (an API key, say) is never read into a bundle to upload."""
    if path.is_symlink():
        raise KagglecvError(f"{path}: is a link; pack keeps only a plain metadata file of its own folder (replace the "
                            "link with a copy, or remove it)")


def kept_or_default(path: Path, default: dict) -> str:
    """The user's metadata file as they left it (a JSON object), else ``default``; as the text to write. Read before
    anything is replaced.

    Raises:
        KagglecvError: the file is a link (its target, outside the bundle, is never copied in) or nests deeper than
            JSON's reader can follow.
    """
    refuse_link(path)
    try:
        if path.stat().st_size > 1 << 20:  # not a metadata file of the user's
            return json.dumps(default, indent=2) + "\n"
        kept = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(kept, dict):
            return json.dumps(kept, indent=2) + "\n"
    except RecursionError:
        raise KagglecvError(f"{path}: JSON nested too deep to keep; a metadata file is a flat object") from None
    except (OSError, ValueError):
        pass
    return json.dumps(default, indent=2) + "\n"
