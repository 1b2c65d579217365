"""Benchmark: `kagglecv infer` from a packed bundle against a bare PyTorch loop over the same folds and views.

A 5-fold resnet10t run at 32 px with hflip TTA (weights of the right shape; speed does not depend on their values),
packed with `kagglecv pack`, predicts the 1,000 cifar10-mini test images. The bare loop is what an inference
notebook written by hand does: per fold, build the timm model, load the safetensors, one DataLoader over the images
(same transforms, batch size and workers), both views, softmax, mean over folds. Both are timed end to end (model
loading included, bundle check included for infer); rounds alternate.

Run: .venv/bin/python bench/infer_bundle.py [--quick]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from common import alternate, peak_rss_mib, quick_cli, ratio, require_shared
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from kagglecv.core.config import dump_config, validate_config
from kagglecv.core.console import Console
from kagglecv.core.files import write_json, write_text
from kagglecv.core.runs import RunDir
from kagglecv.data.load import load_test, load_train
from kagglecv.nn.images import ImageDataset, build_augment, worker_init
from kagglecv.nn.runtime import available_cores
from kagglecv.stages.infer import infer_test
from kagglecv.stages.pack import pack_run

FOLDS, BATCH = 5, 128
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_run(root: Path, shared: Path) -> tuple[RunDir, object, list[str]]:
    """A finished 5-fold run folder (config, run.json, predict.json with hflip TTA, fold weights)."""
    config = validate_config({
        "experiment": "bench-infer",
        "data": {"train_csv": str(shared / "train.csv"), "image_dir": str(shared / "train"),
                 "test_csv": str(shared / "test.csv"), "test_image_dir": str(shared / "test")},
        "model": {"name": "resnet10t", "img_size": 32}, "augment": {"mean": MEAN, "std": STD},
        "predict": {"batch_size": BATCH, "tta": ["none", "hflip"]}, "train": {"num_workers": available_cores()}})
    classes = load_train(config.data, with_images=False).classes
    run = RunDir(root / "bench-infer")
    write_text(run.config_path, dump_config(config))
    write_json(run.info_path, {"experiment": "bench-infer", "kind": "run", "task": "multiclass", "classes": classes,
                               "n_folds": FOLDS})
    write_json(run.predict_path, {"tta": ["none", "hflip"], "tta_space": "prob"})
    for fold in range(FOLDS):
        torch.manual_seed(fold)
        run.fold(fold).path.mkdir(parents=True)
        save_file(timm.create_model("resnet10t", num_classes=len(classes)).state_dict(), run.fold(fold).best_weights)
        write_json(run.fold(fold).done_path, {"fold": fold, "best_epoch": 0, "metric": "accuracy", "source": "raw"})
    return run, config, classes


def run(quick: bool = False, rounds: int = 3) -> dict:
    shared = require_shared("cifar10-mini")
    work = Path(tempfile.mkdtemp(prefix="kagglecv-bench-infer-"))
    try:
        run_dir, config, classes = make_run(work, shared)
        bundle = pack_run(run_dir.path, work / "bundle", timing_images=0).path
        test = load_test(config.data, classes, "multiclass")
        dataset = ImageDataset(test.images, None, build_augment("none", 32, MEAN, STD, train=False), seed=None)
        out = work / "infer.csv"

        def kagglecv_infer():
            start = time.perf_counter()
            infer_test(bundle, shared / "test.csv", shared / "test", out, console=Console(quiet=True))
            return len(test) / (time.perf_counter() - start)

        @torch.inference_mode()
        def bare():
            start = time.perf_counter()
            per_fold = []
            for fold in range(FOLDS):
                model = timm.create_model("resnet10t", num_classes=len(classes))
                model.load_state_dict(load_file(bundle / f"fold{fold}" / "best.safetensors"))
                model.eval()
                loader = DataLoader(dataset, batch_size=BATCH, num_workers=available_cores(),
                                    worker_init_fn=worker_init, prefetch_factor=4)
                chunks = [(model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2 for images, _, _ in loader]
                per_fold.append(torch.cat(chunks).numpy())
            np.mean(per_fold, axis=0)
            return len(test) / (time.perf_counter() - start)

        bare()  # warm-up: decoded-file caches and thread pools
        sides = alternate({"kagglecv infer (bundle)": kagglecv_infer, "bare PyTorch": bare}, 2 if quick else rounds)
        return sides | {"ratio": ratio(sides["kagglecv infer (bundle)"], sides["bare PyTorch"]), "images": len(test),
                        "folds": FOLDS, "views": 2, "peak_rss_mib": peak_rss_mib()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    quick_cli(run, __doc__)


if __name__ == "__main__":
    main()
