"""Benchmark: `kagglecv infer` on an ONNX bundle (ONNX Runtime, no torch) against the same run packed as torch.

The run of bench/infer_bundle.py (5-fold resnet10t at 32 px, hflip TTA, weights of the right shape) is packed twice,
`--format torch` and `--format onnx` (the export's parity with PyTorch is checked by pack and printed); each bundle
predicts the 1,000 cifar10-mini test images through `infer_test`, end to end (model loading and bundle check
included); rounds alternate. Both use every core of this machine.

Run: .venv/bin/python bench/onnx_inference.py [--quick]
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from common import alternate, peak_rss_mib, quick_cli, ratio, require_shared
from infer_bundle import make_run

from kagglecv.core.bundle import MANIFEST
from kagglecv.core.console import Console
from kagglecv.stages.infer import infer_test
from kagglecv.stages.pack import pack_run


def run(quick: bool = False, rounds: int = 3) -> dict:
    shared = require_shared("cifar10-mini")
    work = Path(tempfile.mkdtemp(prefix="kagglecv-bench-onnx-"))
    try:
        run_dir, _, _ = make_run(work, shared)
        bundles = {fmt: pack_run(run_dir.path, work / f"bundle-{fmt}", timing_images=0, format=fmt).path
                   for fmt in ("torch", "onnx")}
        parity = json.loads((bundles["onnx"] / MANIFEST).read_text())["onnx_parity"]
        images = len((shared / "test.csv").read_text().splitlines()) - 1

        def side(fmt: str):
            def timed() -> float:
                started = time.perf_counter()
                infer_test(bundles[fmt], shared / "test.csv", shared / "test", work / f"{fmt}.csv",
                           console=Console(quiet=True))
                return images / (time.perf_counter() - started)
            return timed

        side("torch")(), side("onnx")()  # warm-up: file caches, thread pools
        sides = alternate({"onnx runtime": side("onnx"), "pytorch": side("torch")}, 2 if quick else rounds)
        return sides | {"ratio": ratio(sides["onnx runtime"], sides["pytorch"]), "images": images, "folds": 5,
                        "views": 2, "parity": parity, "peak_rss_mib": peak_rss_mib()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    quick_cli(run, __doc__)


if __name__ == "__main__":
    main()
