"""The project's GPU figures in one call: every step kagglecv's GPU path has, timed, as JSON lines.

A GPU is lent to some sessions only, for minutes, so nothing is decided on the device: this script runs, in order,

1. ``gpu_tests``: the ``gpu``-marked tests (pytest -m gpu);
2. ``device``: the GPU's name and capability, the dtype ``train.amp: auto`` chooses, whether ``train.compile`` runs;
3. ``bare_vs_kagglecv``: a bare AMP loop (timm model, SGD, flips on the device) against ``kagglecv train`` on the same
   model, batch, precision and data: training images/s of each after the first epoch, and the ratio (target 0.97);
4. ``data_vs_step``: data time against step time per epoch, from files with per-image albumentations, from the
   ``data.cache`` array with per-image albumentations, and from the cache with batch augmentation on the device;
5. ``cifar10_fast``: ``configs/cifar10-fast.yaml`` for a fixed number of epochs on the subset (time per epoch, the
   fold's accuracy);
6. ``ddp``: ``torchrun --nproc_per_node 1`` of one fold (NCCL on a GPU, gloo on a CPU);
7. ``onnx``: ``pack --format onnx`` and ``infer`` of it beside ``infer`` of the PyTorch run: images/s, the largest
   difference of the probabilities, and the ONNX Runtime execution providers there are.

Each step is one JSON object on its line in ``OUT/gpu.jsonl`` (``step``, ``ok``, ``seconds``, the step's fields, and
``peak_gpu_bytes`` of every kagglecv process it ran), written as soon as the step ends, so a call cut short still
returns what it measured. ``--budget-s`` skips a step whose estimate no longer fits and says so in its line.

The images: ``--subset`` (an ``.npz`` of ``images`` uint8 N x 32 x 32 x 3 and ``labels``, built by
``bench/gpu_carry.py`` from cifar10-full, carried to the device); without it, scikit-learn's digits at 32 px.
``--dry`` runs every step at tiny size on whatever device there is (the suite runs it on CPU).

Run on a lent GPU (device tool): carry ``bench/gpu-carry`` and give one command, see BENCHMARKS.md "GPU".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEAK_MARK = "kagglecv-peak-gpu-bytes"
# Runs kagglecv's command line and prints, at exit, the GPU memory its process held at most (torch's own count).
PEAK_WRAPPER = f"""
import atexit, sys
def _peak():
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        print("{PEAK_MARK}", torch.cuda.max_memory_allocated(), file=sys.stderr, flush=True)
atexit.register(_peak)
from kagglecv.cli import main
main()
"""


@dataclass(frozen=True)
class Size:
    """How much work each step does: the real run's, or ``--dry``'s."""

    images: int
    epochs: int
    batch: int
    fast_epochs: int
    test_images: int
    model: str = "resnet18"  # the timm model of every step but cifar10_fast (the config's own)


# --dry checks that every step runs and writes its fields: timm's 0.4 M-parameter test model, not resnet18's 11 M
REAL, DRY = Size(10_000, 3, 512, 8, 1_000), Size(96, 2, 32, 1, 32, "test_resnet")
ESTIMATES = {"gpu_tests": 60, "device": 5, "bare_vs_kagglecv": 90, "data_vs_step": 120, "cifar10_fast": 120,
             "ddp": 45, "onnx": 60}  # seconds on an H100 with the 10,000-image subset


@dataclass
class Session:
    out: Path
    work: Path
    size: Size
    dry: bool
    budget_s: float
    started: float = field(default_factory=time.perf_counter)
    images: np.ndarray | None = None   # the training then test images, uint8 N x 32 x 32 x 3
    labels: np.ndarray | None = None

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def record(self, entry: dict) -> None:
        with open(self.out / "gpu.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        print(json.dumps(entry), flush=True)


def run_step(session: Session, name: str, step: Callable[[Session], dict]) -> dict:
    """One step, timed; a failure or a budget that cannot fit it is recorded in its line, never fatal."""
    estimate = ESTIMATES[name] if not session.dry else 1
    if session.left() < estimate:
        entry = {"step": name, "ok": False, "seconds": 0.0,
                 "skipped": f"{session.left():.0f} s of the budget left, the step needs about {estimate} s"}
    else:
        started = time.perf_counter()
        try:
            entry = {"step": name, "ok": True} | step(session)
        except Exception as exc:  # a step that fails on this device is a finding, the next step still runs
            entry = {"step": name, "ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[-800:]}"}
        entry["seconds"] = round(time.perf_counter() - started, 2)
    session.record(entry)
    return entry


# ----- the data ------------------------------------------------------------------------------------------------------
def load_subset(path: Path | None, size: Size) -> tuple[np.ndarray, np.ndarray]:
    """``size.images + size.test_images`` uint8 32 x 32 RGB images and labels: the carried subset, else digits."""
    wanted = size.images + size.test_images
    if path is not None:
        with np.load(path, allow_pickle=False) as subset:
            images, labels = subset["images"], subset["labels"]
        if images.dtype != np.uint8 or images.ndim != 4 or len(images) < wanted:
            raise SystemExit(f"{path}: expected at least {wanted} uint8 N x H x W x 3 images, got {images.dtype} "
                             f"{images.shape}")
        return images[:wanted], labels[:wanted]
    from kagglecv.workflows.demo import digit_images

    digits, labels = digit_images()
    picked = np.resize(np.arange(len(digits)), wanted)
    grey = np.stack([np.asarray(Image.fromarray(digits[k]).resize((32, 32), Image.BILINEAR)) for k in picked])
    return np.repeat(grey[..., None], 3, axis=3), labels[picked]


def write_competition(folder: Path, images: np.ndarray, labels: np.ndarray, size: Size) -> Path:
    """A competition folder in Kaggle's image-file shape: train.csv, train/*.png, test.csv, test/*.png."""
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True, exist_ok=True)
    names = [f"img{index:06d}" for index in range(len(images))]
    for name, pixels, split in zip(names, images, ["train"] * size.images + ["test"] * size.test_images):
        Image.fromarray(pixels).save(folder / split / f"{name}.png", compress_level=1)
    pd.DataFrame({"id": names[:size.images], "label": labels[:size.images].astype(str)}).to_csv(
        folder / "train.csv", index=False)
    pd.DataFrame({"id": names[size.images:]}).to_csv(folder / "test.csv", index=False)
    return folder


def base_config(session: Session, experiment: str, **sections) -> dict:
    data = session.work / "data"
    config = {
        "experiment": experiment, "runs_dir": str(session.work / "runs"),
        "data": {"train_csv": str(data / "train.csv"), "image_dir": str(data / "train"),
                 "test_csv": str(data / "test.csv"), "test_image_dir": str(data / "test"), "cache": "memory"},
        "folds": {"method": "stratified", "n_splits": 10 if not session.dry else 3, "near_duplicates": "off",
                  "file": str(session.work / "folds.csv"), "allow_rare_classes": True},
        "model": {"name": session.size.model, "img_size": 32, "pretrained": False, "small_input": True},
        "augment": {"train": "none", "batch": "flip", "hflip": True},
        "train": {"epochs": session.size.epochs, "batch_size": session.size.batch, "opt": "sgd", "lr": 0.05,
                  "sched": "none", "amp": "auto", "channels_last": True, "num_workers": 4 if not session.dry else 0},
    }
    for section, values in sections.items():
        config[section] = config.get(section, {}) | values if isinstance(values, dict) else values
    return config


def write_config(session: Session, config: dict) -> Path:
    path = session.work / f"{config['experiment']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# ----- kagglecv in its own process --------------------------------------------------------------------------------------
def kagglecv(session: Session, args: list[str], launcher: list[str] | None = None) -> dict:
    """``kagglecv ARGS`` in a fresh process (through torchrun when ``launcher`` says); its peak GPU memory."""
    wrapper = session.work / "kagglecv_peak.py"
    wrapper.write_text(PEAK_WRAPPER)
    command = [*(launcher or [sys.executable]), str(wrapper), *args]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=session.work, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        said = [line for line in done.stderr.splitlines() if "error:" in line or "Error" in line]
        raise RuntimeError(f"kagglecv {' '.join(args[:2])} exited {done.returncode}: "
                           f"{' | '.join(said[-3:]) or done.stderr[-1500:]}")
    peaks = [int(value) for value in re.findall(rf"{PEAK_MARK} (\d+)", done.stderr)]
    return {"peak_gpu_bytes": max(peaks) if peaks else None, "stdout": done.stdout}


def fold_history(session: Session, experiment: str) -> pd.DataFrame:
    return pd.read_csv(session.work / "runs" / experiment / "fold0" / "history.csv")


def train_fold(session: Session, experiment: str, **sections) -> tuple[pd.DataFrame, dict]:
    config = write_config(session, base_config(session, experiment, **sections))
    ran = kagglecv(session, ["train", str(config), "--fold", "0", "--force"])
    return fold_history(session, experiment), ran


def steady(history: pd.DataFrame, column: str) -> float:
    """The mean of ``column`` over the epochs after the first (compilation, allocator and cache warm-up)."""
    rows = history.iloc[1:] if len(history) > 1 else history
    return float(rows[column].mean())


# ----- the steps -------------------------------------------------------------------------------------------------------
def gpu_tests(session: Session) -> dict:
    files = sorted({str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py")
                    if "mark.gpu" in path.read_text(encoding="utf-8")})
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files],
                          cwd=ROOT, capture_output=True, text=True)
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|error|deselected)",
                                                               done.stdout.splitlines()[-1] if done.stdout else "")}
    return {"files": files, "exit_code": done.returncode, "passed": counts.get("passed", 0),
            "failed": counts.get("failed", 0) + counts.get("error", 0), "skipped": counts.get("skipped", 0),
            "tail": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]}


def device_check(session: Session) -> dict:
    import torch

    from kagglecv.core.errors import KagglecvError
    from kagglecv.nn.runtime import CudaDevice, amp_name, autocast_dtype, check_compile

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    gpu = CudaDevice.of(device) if cuda else None
    try:
        check_compile(True, device, gpu)
        compile_allowed = True
    except KagglecvError:
        compile_allowed = False
    return {"device": gpu.name if gpu else "cpu", "capability": gpu.sm if gpu else None,
            "amp_auto": amp_name(autocast_dtype("auto", device, gpu)), "compile_allowed": compile_allowed,
            "memory_bytes": torch.cuda.get_device_properties(0).total_memory if cuda else None,
            "torch": torch.__version__, "cuda": torch.version.cuda}


def bare_loop(session: Session, epochs: int) -> list[float]:
    """Training images/s per epoch of a plain AMP loop over fold 0's training rows, everything on the device."""
    import torch
    import torch.nn.functional as F

    from kagglecv.core.config import ModelConfig
    from kagglecv.nn.models import create_model
    from kagglecv.nn.runtime import CudaDevice, autocast_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folds = pd.read_csv(session.work / "folds.csv", dtype={"id": str})
    rows = (folds["fold"] != 0).to_numpy()
    images = torch.from_numpy(np.ascontiguousarray(session.images[: session.size.images][rows]))
    labels = torch.from_numpy(session.labels[: session.size.images][rows].astype(np.int64)).to(device)
    images = images.to(device).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    model = create_model(ModelConfig(name=session.size.model, img_size=32, pretrained=False, small_input=True), 10)
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.05)
    dtype = autocast_dtype("auto", device, CudaDevice.of(device) if device.type == "cuda" else None)
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255
    rates = []
    for _ in range(epochs):
        _synchronize(device)
        started = time.perf_counter()
        for batch in torch.randperm(len(labels), device=device).split(session.size.batch):
            x = (images[batch].float() - mean) / std
            x = torch.where(torch.rand(len(batch), 1, 1, 1, device=device) < 0.5, x.flip(3), x)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _synchronize(device)
        rates.append(len(labels) / (time.perf_counter() - started))
    return rates


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_vs_kagglecv(session: Session) -> dict:
    history, ran = train_fold(session, "overhead")
    kagglecv_rate = steady(history, "images_per_sec")
    bare_rates = bare_loop(session, session.size.epochs)
    bare_rate = float(np.mean(bare_rates[1:] or bare_rates))
    return {"model": f"{session.size.model} (small_input) 32 px", "batch": session.size.batch, "epochs": session.size.epochs,
            "kagglecv_images_per_s": round(kagglecv_rate, 1), "bare_images_per_s": round(bare_rate, 1),
            "ratio": round(kagglecv_rate / bare_rate, 4), "target": 0.97, "peak_gpu_bytes": ran["peak_gpu_bytes"]}


def data_vs_step(session: Session) -> dict:
    settings = {"files_per_image": {"data": {"cache": "off"}, "augment": {"train": "light", "batch": "none"}},
                "cache_per_image": {"augment": {"train": "light", "batch": "none"}},
                "cache_batch_augment": {}}
    results, peaks = {}, []
    for name, sections in settings.items():
        history, ran = train_fold(session, f"data-{name.replace('_', '-')}", **sections)
        results[name] = {"data_s_per_epoch": round(steady(history, "data_time"), 3),
                         "step_s_per_epoch": round(steady(history, "step_time"), 3),
                         "images_per_s": round(steady(history, "images_per_sec"), 1)}
        peaks.append(ran["peak_gpu_bytes"] or 0)
    return {"settings": results, "peak_gpu_bytes": max(peaks) or None}


def cifar10_fast(session: Session) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "cifar10-fast.yaml").read_text())
    epochs = session.size.fast_epochs
    warmup = round(0.23 * epochs) if epochs > 1 else 0
    mine = base_config(session, "cifar10-fast")
    config |= {"experiment": "cifar10-fast", "runs_dir": mine["runs_dir"], "folds": mine["folds"],
               "data": mine["data"] | {"target": "label"}}
    config["train"] |= {"epochs": epochs, "warmup_epochs": warmup, "decay_epochs": epochs - warmup, "amp": "auto",
                        "num_workers": mine["train"]["num_workers"]}
    if session.dry:
        config["train"] |= {"batch_size": session.size.batch, "lookahead_every": 0}
    config["predict"] = {"tta": ["none"]}
    path = write_config(session, config)
    ran = kagglecv(session, ["train", str(path), "--fold", "0", "--force"])
    history = fold_history(session, "cifar10-fast")
    done = json.loads((session.work / "runs" / "cifar10-fast" / "fold0" / "done.json").read_text())
    return {"epochs": epochs, "train_images": int(done.get("train_rows") or 0),
            "seconds_per_epoch": round(float((history["data_time"] + history["step_time"]).iloc[1:].mean()
                                             if len(history) > 1 else (history["data_time"] + history["step_time"]).mean()), 3),
            "accuracy": done.get("best_score"), "best_epoch": done.get("best_epoch"),
            "peak_gpu_bytes": ran["peak_gpu_bytes"]}


def ddp(session: Session) -> dict:
    import torch

    config = write_config(session, base_config(session, "ddp", train={"epochs": 1}))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    ran = kagglecv(session, ["train", str(config), "--fold", "0", "--force"], launcher=launcher)
    done = json.loads((session.work / "runs" / "ddp" / "fold0" / "done.json").read_text())
    return {"launcher": "torchrun --nproc_per_node 1", "backend": "nccl" if torch.cuda.is_available() else "gloo",
            "note": "WORLD_SIZE 1: kagglecv joins no process group (DDP wraps the model from 2 processes)",
            "best_score": done.get("best_score"), "peak_gpu_bytes": ran["peak_gpu_bytes"]}


def onnx(session: Session) -> dict:
    import onnxruntime

    folds = {"n_splits": 2, "file": str(session.work / "folds2.csv")}
    config = write_config(session, base_config(session, "export", folds=folds, train={"epochs": 1}))
    kagglecv(session, ["folds", str(config)])
    kagglecv(session, ["train", str(config), "--force"])
    data, timings = session.work / "data", {}
    kagglecv(session, ["pack", "runs/export", "--out", "bundle-onnx", "--format", "onnx", "--timing-images", "0"])
    for name, source in (("pytorch", "runs/export"), ("onnx", "bundle-onnx")):
        started = time.perf_counter()
        kagglecv(session, ["infer", source, "--test", str(data / "test.csv"), "--images", str(data / "test"),
                           "--out", f"infer-{name}.csv"])
        timings[name] = time.perf_counter() - started
    torch_probs, onnx_probs = (pd.read_csv(session.work / f"infer-{name}.csv").drop(columns="id").to_numpy()
                               for name in ("pytorch", "onnx"))
    images = session.size.test_images
    return {"test_images": images, "pytorch_images_per_s": round(images / timings["pytorch"], 1),
            "onnx_images_per_s": round(images / timings["onnx"], 1),
            "max_abs_difference": float(np.abs(torch_probs - onnx_probs).max()),
            "providers": onnxruntime.get_available_providers(),
            "cuda_provider": "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
            "note": "kagglecv infer runs ONNX bundles on ONNX Runtime's CPU provider; both times include the start"}


STEPS: dict[str, Callable[[Session], dict]] = {
    "gpu_tests": gpu_tests, "device": device_check, "bare_vs_kagglecv": bare_vs_kagglecv, "data_vs_step": data_vs_step,
    "cifar10_fast": cifar10_fast, "ddp": ddp, "onnx": onnx}


def prepare(session: Session, subset: Path | None) -> None:
    session.images, session.labels = load_subset(subset, session.size)
    write_competition(session.work / "data", session.images, session.labels, session.size)
    kagglecv(session, ["folds", str(write_config(session, base_config(session, "folds")))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder the JSON lines go to ($OUT on the device)")
    parser.add_argument("--dry", action="store_true", help="every step at tiny size, on whatever device there is")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip a step whose estimate no longer fits")
    parser.add_argument("--subset", type=Path, help="bench/gpu-carry/cifar10-10k.npz (bench/gpu_carry.py)")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, of: " + ", ".join(STEPS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    session = Session(args.out, args.out / "work", DRY if args.dry else REAL, args.dry, args.budget_s)
    session.work.mkdir(exist_ok=True)
    (args.out / "gpu.jsonl").unlink(missing_ok=True)
    prepare(session, args.subset)
    session.record({"step": "prepared", "ok": True, "seconds": round(time.perf_counter() - session.started, 2),
                    "images": session.size.images, "test_images": session.size.test_images, "dry": args.dry})
    for name in args.steps.split(","):
        run_step(session, name.strip(), STEPS[name.strip()])


if __name__ == "__main__":
    main()
