"""``bench/gpu.py``, the one call a lent GPU gets, proven here on the CPU at tiny size (``--dry``): every step runs and
writes its fields, and a step the budget cannot fit is skipped with the reason, not run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {
    "prepared": {"images", "test_images", "dry"},
    "gpu_tests": {"files", "exit_code", "passed", "failed", "skipped"},
    "device": {"device", "capability", "amp_auto", "compile_allowed", "torch"},
    "bare_vs_kagglecv": {"kagglecv_images_per_s", "bare_images_per_s", "ratio", "target", "peak_gpu_bytes"},
    "data_vs_step": {"settings", "peak_gpu_bytes"},
    "cifar10_fast": {"epochs", "seconds_per_epoch", "accuracy", "peak_gpu_bytes"},
    "ddp": {"launcher", "backend", "best_score", "peak_gpu_bytes"},
    "onnx": {"pytorch_images_per_s", "onnx_images_per_s", "max_abs_difference", "providers", "cuda_provider"},
}


def gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_dry_run_runs_every_step_on_the_cpu_and_writes_every_field(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), str(tmp_path / "out"), "--dry"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "out" / "gpu.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(FIELDS)
    for line in lines:
        assert line["ok"], line
        assert FIELDS[line["step"]] | {"seconds"} <= set(line), line
    by_step = {line["step"]: line for line in lines}
    assert by_step["device"]["device"] == "cpu" and by_step["device"]["amp_auto"] == "off"
    assert by_step["gpu_tests"]["failed"] == 0 and by_step["gpu_tests"]["skipped"] >= 1  # no CUDA here: skipped
    assert by_step["bare_vs_kagglecv"]["ratio"] > 0
    assert set(by_step["data_vs_step"]["settings"]) == {"files_per_image", "cache_per_image", "cache_batch_augment"}
    for setting in by_step["data_vs_step"]["settings"].values():
        assert setting["step_s_per_epoch"] > 0 and setting["data_s_per_epoch"] >= 0
    assert 0 <= by_step["cifar10_fast"]["accuracy"] <= 1
    assert by_step["onnx"]["max_abs_difference"] < 1e-4, "the ONNX bundle predicts what the PyTorch run predicts"


def test_a_step_the_budget_cannot_fit_is_skipped_with_the_reason(tmp_path):
    bench = gpu_bench()
    session = bench.Session(tmp_path, tmp_path, bench.REAL, dry=False, budget_s=10)
    ran = []
    entry = bench.run_step(session, "cifar10_fast", lambda s: ran.append(1) or {})
    assert not ran and entry["ok"] is False and "the step needs about 120 s" in entry["skipped"]
    failing = bench.run_step(bench.Session(tmp_path, tmp_path, bench.DRY, True, 600), "device",
                             lambda s: 1 / 0)
    assert failing["ok"] is False and failing["error"].startswith("ZeroDivisionError")
    lines = (tmp_path / "gpu.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == ["cifar10_fast", "device"]
