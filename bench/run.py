"""Run every benchmark, print a summary, and rewrite BENCHMARKS.md with the figures, the machine and the date.

Each benchmark runs in its own process (so its peak RSS is its own) and prints JSON; comparisons inside a
benchmark alternate their two sides over several rounds and report the median and the spread. Benchmarks never
fail: a timing is a figure, not a test.

Run: .venv/bin/python bench/run.py [--quick] [--only train_overhead,metrics]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["train_overhead", "input_pipeline", "accuracy", "inference", "metrics", "folds", "ensemble", "large_run"]


def run_one(name: str, quick: bool) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import {name} as bench; "
            f"print('@@JSON@@' + json.dumps(bench.run(quick={quick}), default=float))")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE.parent)
    seconds = time.perf_counter() - started
    marker = [line for line in result.stdout.splitlines() if line.startswith("@@JSON@@")]
    if result.returncode != 0 or not marker:
        return {"error": (result.stderr or result.stdout).strip().splitlines()[-1:] or ["failed"], "wall_seconds": seconds}
    return json.loads(marker[-1][len("@@JSON@@"):]) | {"wall_seconds": seconds}


def spread(side: dict, unit: str = "") -> str:
    return f"{side['median']:.1f}{unit} (min {side['min']:.1f}, max {side['max']:.1f})"


def ratio_text(r: dict) -> str:
    return f"**{r['median']:.3f}** (per round {r['min']:.3f}-{r['max']:.3f})"


def render(results: dict, machine: dict, quick: bool) -> str:
    lines = ["# Benchmarks", "",
             f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores), GPU: {machine['gpu'] or 'none'}, "
             f"torch {machine['torch']}, Python {machine['python']}, commit {machine['commit']}"
             f"{', --quick mode' if quick else ''}. Reproduce: `.venv/bin/python bench/run.py{' --quick' if quick else ''}`.",
             "Comparisons alternate their sides round by round; figures are medians with the range over rounds.", ""]
    if (r := results.get("train_overhead")) and "error" not in r:
        lines += ["## 1. Training overhead", "",
                  f"{r['model']} at {r['img_size']} px, batch {r['batch_size']}, {r['workers']} workers, cifar10-mini fold 0.", "",
                  "| loop | images/s |", "| --- | --- |",
                  f"| kagglecv train | {spread(r['kagglecv'])} |", f"| bare PyTorch | {spread(r['bare'])} |", "",
                  f"Ratio kagglecv / bare: {ratio_text(r['ratio'])} (target >= 0.97). Data wait is "
                  f"{100 * r['data_time_share']:.0f} % of the epoch: the loader keeps up.", ""]
    if (r := results.get("input_pipeline")) and "error" not in r:
        lines += ["## 2. Input pipeline (one worker, `medium` preset)", "", "| images | albumentations (kagglecv) img/s | torchvision v2 img/s | ratio |",
                  "| --- | --- | --- | --- |"]
        for name, sides in r["per_worker"].items():
            lines.append(f"| {name} | {spread(sides['albumentations (kagglecv)'])} | {spread(sides['torchvision v2'])} | "
                         f"{ratio_text(sides['ratio'])} |")
        lines.append("")
    if (r := results.get("accuracy")) and "error" not in r:
        lines += ["## 3. Accuracy per budget", "", f"Recipe: {r['recipe']}, {r['epochs']} epochs.", "",
                  "| data | CV (all OOF rows) | folds mean ± std | held-out | wall time |", "| --- | --- | --- | --- | --- |"]
        for name, result in r["results"].items():
            held = f"{result['held_out_accuracy']:.4f}" if "held_out_accuracy" in result else "(no labels)"
            lines.append(f"| {name} | {result['cv']:.4f} | {result['fold_mean']:.4f} ± {result['fold_std']:.4f} | {held} | "
                         f"{result['seconds'] / 60:.1f} min |")
        lines += [""] + [f"![{name}](bench/{result['curves']})" for name, result in r["results"].items()] + [""]
    if (r := results.get("inference")) and "error" not in r:
        lines += ["## 4. Inference (cifar10-mini test set, resnet10t 32 px, batch 128)", "", "| loop | images/s |", "| --- | --- |",
                  f"| kagglecv, no TTA | {spread(r['kagglecv'])} |", f"| kagglecv, hflip TTA (2 views) | {spread(r['kagglecv hflip TTA'])} |",
                  f"| bare PyTorch | {spread(r['bare'])} |", "",
                  f"Ratio without TTA: {ratio_text(r['ratio_no_tta'])}; with hflip TTA: {ratio_text(r['ratio_tta'])} "
                  "(two forward passes per image).", ""]
    if (r := results.get("metrics")) and "error" not in r:
        lines += ["## 5. Metrics: multi-label mAP", "",
                  f"{r['rows']:,} rows x {r['classes']:,} classes (tied scores): kagglecv {r['kagglecv_seconds']:.2f} s, "
                  f"scikit-learn per-class loop {r['sklearn_loop_seconds']:.2f} s, speed-up {ratio_text(r['speedup'])}; "
                  f"largest difference {r['max_abs_difference']:.1e} (equal to 1e-12: {r['equal_to_1e-12']}).", ""]
    if (r := results.get("folds")) and "error" not in r:
        lines += ["## 6. Folds: multi-label stratification", "", f"{r['rows']:,} rows x {r['labels']} long-tailed labels, 5 folds.", "",
                  "| splitter | time | largest per-fold label-rate deviation |", "| --- | --- | --- |"]
        lines += [f"| {name} | {v['seconds']:.2f} s | {v['max_rate_deviation']:.5f} |" for name, v in r["results"].items()] + [""]
    if (r := results.get("ensemble")) and "error" not in r:
        lines += ["## 7. Ensembling: hill climb", "",
                  f"{r['runs']} runs x {r['rows']:,} rows x {r['classes']} classes ({r['gib_float32']:.2f} GiB float32), "
                  f"{r['rounds']} rounds on {r['metric']}: {r['hill_climb_seconds']:.1f} s, {r['runs_selected']} runs selected.", ""]
    if (r := results.get("large_run")) and "error" not in r:
        lines += ["## Large table", "",
                  f"{r['rows']:,} rows (the demo's digits repeated), folds + 2 folds x 1 epoch of test_resnet at 16 px + OOF "
                  f"merge ({r['oof_rows']:,} OOF rows): {r['seconds'] / 60:.1f} min, peak RSS {r['peak_rss_mib']:.0f} MiB.", ""]
    lines += ["## 8. Peak memory (RSS of each benchmark's process)", "", "| benchmark | peak RSS | wall time |", "| --- | --- | --- |"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {' '.join(r['error'])} | |")
        else:
            lines.append(f"| {name} | {r['peak_rss_mib']:.0f} MiB | {r['wall_seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


STANDALONE_MARKER = "<!-- Below: benchmarks run on their own"


def standalone_sections(path: Path) -> str:
    """The sections of the standalone benchmarks (small_input, infer_bundle, label_noise, launcher), from the marker
    line to the end of the current file: figures this script does not measure, so it must not drop them."""
    text = path.read_text() if path.is_file() else ""
    start = text.find(STANDALONE_MARKER)
    return "" if start < 0 else "\n" + text[start:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds: minutes, not an hour")
    parser.add_argument("--only", help="comma-separated names: " + ", ".join(BENCHMARKS))
    parser.add_argument("--output", type=Path, default=HERE.parent / "BENCHMARKS.md")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else BENCHMARKS
    sys.path.insert(0, str(HERE))
    from common import machine

    saved = HERE / "out" / "results.json"
    # --only refreshes some figures and keeps the others from the last run with the same mode.
    previous = json.loads(saved.read_text()) if args.only and saved.is_file() else {}
    results = {name: value for name, value in previous.get("results", {}).items()
               if previous.get("quick") == args.quick and name in BENCHMARKS}
    for name in names:
        print(f"running {name} ...", flush=True)
        results[name] = run_one(name, args.quick)
        status = "failed: " + " ".join(results[name]["error"]) if "error" in results[name] else "done"
        print(f"  {status} in {results[name]['wall_seconds']:.0f} s", flush=True)
    results = {name: results[name] for name in BENCHMARKS if name in results}
    text = render(results, machine(), args.quick) + standalone_sections(args.output)
    args.output.write_text(text)
    saved.parent.mkdir(exist_ok=True)
    saved.write_text(json.dumps({"quick": args.quick, "results": results}, indent=2, default=float))
    print(text)


if __name__ == "__main__":
    main()
