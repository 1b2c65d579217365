"""What ``bench/gpu.py`` needs on a lent GPU, built here before the call: ``bench/gpu-carry/`` (git-ignored), carried
by the device tool (``carry: ["bench/gpu-carry"]``), under its 64 MiB.

- ``cifar10-10k.npz``: 11,000 images of ``../shared/data/cifar10-full`` (its JPEGs) (10,000 to train and validate, 1,000 as the
  test set), decoded once to uint8 32 x 32 x 3, with their labels (about 34 MB uncompressed, stored compressed).
- ``wheels/``: the packages kagglecv imports that the device's image lacks (its list: the device tool's KINDS.md,
  "Python packages already there"), for the device's Python (3.12, manylinux x86_64), each without its
  dependencies, at the versions this project's environment runs. kagglecv itself is not installed there: the
  script runs it from the carried working tree (``PYTHONPATH``).

Run from the repository root: .venv/bin/python bench/gpu_carry.py [--python 3.12]
Then, on the device (one call; BENCHMARKS.md "GPU"):
  python3 -m pip install -q --no-index --no-deps bench/gpu-carry/wheels/*.whl && \
  python3 bench/gpu.py $OUT --subset bench/gpu-carry/cifar10-10k.npz --budget-s 500
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
CARRY = HERE / "gpu-carry"
SHARED = HERE.parents[1] / "shared" / "data" / "cifar10-full"
# kagglecv's imports (and theirs) that the device image does not hold, as read from its package list.
MISSING_ON_DEVICE = ["albumentations", "albucore", "stringzilla", "simsimd", "pydantic", "pydantic_core",
                     "annotated-types", "typing-inspection", "ImageHash", "PyWavelets", "defusedxml", "cleanlab",
                     "termcolor", "nbformat", "fastjsonschema", "jsonschema", "jsonschema-specifications",
                     "referencing", "rpds-py", "jupyter_core", "traitlets", "platformdirs"]
CARRY_LIMIT = 64 << 20


def build_subset(count: int = 11_000, seed: int = 0) -> Path:
    from kagglecv.data.decoding import decode_image

    table = pd.read_csv(SHARED / "train.csv", dtype=str)
    picked = table.sample(n=count, random_state=seed)
    classes = sorted(table["label"].unique())
    images = np.stack([decode_image(SHARED / "train" / f"{image_id}.jpg") for image_id in picked["id"]])
    labels = picked["label"].map({name: index for index, name in enumerate(classes)}).to_numpy(np.int64)
    path = CARRY / "cifar10-10k.npz"
    np.savez_compressed(path, images=images, labels=labels, classes=np.array(classes))
    return path


def download_wheels(python: str) -> list[Path]:
    folder = CARRY / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    pinned = [f"{name}=={metadata.version(name)}" for name in MISSING_ON_DEVICE]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--platform", "manylinux_2_28_x86_64", "--platform",
                    "manylinux2014_x86_64", "--platform", "any", "-d", str(folder), *pinned], check=True)
    return sorted(folder.glob("*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default="3.12", help="the device's Python version")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED}: not found; the subset is cut from ../shared/data/cifar10-full")
    CARRY.mkdir(exist_ok=True)
    subset = build_subset()
    wheels = download_wheels(args.python)
    total = sum(path.stat().st_size for path in CARRY.rglob("*") if path.is_file())
    print(f"{subset} ({subset.stat().st_size / 1e6:.1f} MB), {len(wheels)} wheels; {total / 2**20:.1f} MiB to carry")
    if total > CARRY_LIMIT:
        raise SystemExit(f"{CARRY}: {total / 2**20:.1f} MiB, over the device tool's 64 MiB")


if __name__ == "__main__":
    main()
