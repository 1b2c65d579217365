"""The launcher's overhead: the same tiny jobs (2 experiments x 3 folds) run back to back by hand, through
`kagglecv launch --backend local`, and through `--backend ray` (a local Ray cluster started by the launch).

    .venv/bin/python bench/launcher.py [--rounds 2]      # writes bench/out/launcher/result.json

Back to back is what a user's shell loop does: `kagglecv train CONFIG --fold K` for every job, then `kagglecv run
CONFIG` to merge, predict and score. Each launch does the same work with one job at a time (`--jobs 1`, all cores
per job), so the ratio is the price of the scheduler (Ray's start included), not of parallelism. Rounds alternate
the three ways; each uses fresh run folders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def make_configs(out: Path) -> list[Path]:
    from kagglecv.workflows.demo import build_multiclass

    data = out / "digits"
    if not (data / "train.csv").is_file():
        build_multiclass(data)
    paths = []
    for seed in (1, 2):
        config = {"experiment": f"bench-s{seed}", "data": {"train_csv": str(data / "train.csv"),
                  "image_dir": str(data / "train")},
                  "folds": {"n_splits": 3, "file": str(out / "folds.csv"), "near_duplicates": "off"},
                  "model": {"name": "test_resnet", "img_size": 16}, "augment": {"hflip": False},
                  "train": {"epochs": 2, "batch_size": 64, "num_workers": 0, "seed": seed}}
        path = out / f"s{seed}.yaml"
        path.write_text(yaml.safe_dump(config))
        paths.append(path)
    return paths


def kagglecv(*args: str, cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "kagglecv", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"kagglecv {' '.join(args)}: {result.stdout[-1500:]} {result.stderr[-1500:]}")


def back_to_back(configs: list[Path], runs: Path, out: Path) -> None:
    for config in configs:
        for fold in range(3):
            kagglecv("train", str(config), "--set", f"runs_dir={runs}", "--fold", str(fold), cwd=out)
        kagglecv("run", str(config), "--set", f"runs_dir={runs}", cwd=out)


def launched(configs: list[Path], runs: Path, out: Path, backend: str) -> None:
    kagglecv("launch", *map(str, configs), "--set", f"runs_dir={runs}", "--backend", backend, "--jobs", "1",
             "--cpus-per-job", str(len(os.sched_getaffinity(0))), cwd=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "launcher")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    configs = make_configs(out)
    kagglecv("folds", str(configs[0]), cwd=out)
    ways = {"back to back": lambda runs: back_to_back(configs, runs, out),
            "launch local": lambda runs: launched(configs, runs, out, "local"),
            "launch ray": lambda runs: launched(configs, runs, out, "ray")}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for round_number in range(args.rounds):
        for name, way in ways.items():
            runs = out / f"runs-{name.replace(' ', '-')}-{round_number}"
            shutil.rmtree(runs, ignore_errors=True)
            started = time.perf_counter()
            way(runs)
            seconds[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    result = {"jobs": 6, "seconds": seconds, "median_seconds": medians,
              "ratio_local": medians["launch local"] / medians["back to back"],
              "ratio_ray": medians["launch ray"] / medians["back to back"]}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
