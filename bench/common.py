"""Shared helpers of the benchmarks: alternating timed rounds, medians with spread, peak memory, the machine."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def alternate(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, dict]:
    """Run each side once per round, in turn (a, b, a, b, ...); each call returns a rate (higher is better).

    Returns per side the median, min, max of the rates; alternating spreads a noisy machine over both sides.
    """
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            rates[name].append(side())
    return {name: {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}
            for name, values in rates.items()}


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ratio(a: dict, b: dict) -> dict:
    """Median ratio a/b and the spread of the per-round ratios."""
    per_round = [x / y for x, y in zip(a["values"], b["values"])]
    return {"median": a["median"] / b["median"], "min": min(per_round), "max": max(per_round)}


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def require_shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        raise SystemExit(f"benchmark needs {path} (../shared/data beside the repository)")
    return path


def quick_cli(run: Callable[[bool], dict], description: str | None) -> None:
    """The command line of a benchmark whose only option is ``--quick``: run it, print its figures as JSON."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2, default=float))
