"""Every command against a catalogue of hostile inputs: each must end in one clear line, exit non-zero, and leave
every file outside the folders the command may write exactly as it was.

The catalogue is built here, class by class (names that become paths, config bombs, images, tables, options, run
folders, the system). A "world" is a small competition folder with two trained runs, made once and copied fresh
for every variant; the command runs in-process through ``kagglecv.cli.main`` from the world's folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from kagglecv.cli import main

CONFIG = {
    "experiment": "base",
    "runs_dir": "runs",
    "data": {"train_csv": "data/train.csv", "image_dir": "data/train", "test_csv": "data/test.csv",
             "test_image_dir": "data/test"},
    "folds": {"method": "stratified", "n_splits": 2, "file": "folds/digits.csv", "near_duplicates": "off",
              "allow_rare_classes": True},
    "model": {"name": "test_resnet", "img_size": 16},
    "augment": {"hflip": False},
    "train": {"epochs": 1, "batch_size": 16, "num_workers": 0},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, digits_root) -> Path:
    """data/ (48 digit images, 16 test images, a sample submission), folds/, and two trained runs in runs/."""
    root = tmp_path_factory.mktemp("world")
    source = digits_root / "digits"
    train = pd.read_csv(source / "train.csv", dtype=str).head(48)
    test = pd.read_csv(source / "test.csv", dtype=str).head(16)
    for frame, folder, name in ((train, "train", "train.csv"), (test, "test", "test.csv")):
        (root / "data" / folder).mkdir(parents=True)
        frame.to_csv(root / "data" / name, index=False)
        for image_id in frame["id"]:
            shutil.copy(source / folder / f"{image_id}.png", root / "data" / folder)
    pd.DataFrame({"id": test["id"], "label": "0"}).to_csv(root / "data" / "sample.csv", index=False)
    (root / "base.yaml").write_text(yaml.safe_dump(CONFIG))
    (root / "other.yaml").write_text(yaml.safe_dump(CONFIG | {"experiment": "other", "train": CONFIG["train"] | {"seed": 7}}))
    for config in ("base.yaml", "other.yaml"):
        code, output = _run(["run", config], root)
        assert code == 0, output
    return root


def _run(args: list[str], cwd: Path) -> tuple[int, str]:
    """``kagglecv ARGS`` in-process from ``cwd``: (exit code, stdout + stderr). Any traceback fails the test."""
    import contextlib
    import io
    import os

    previous, out = Path.cwd(), io.StringIO()
    argv = sys.argv
    try:
        os.chdir(cwd)
        sys.argv = ["kagglecv", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(previous)
        sys.argv = argv
    return code, out.getvalue()


def snapshot(root: Path, outside: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under ``root`` except those under the ``outside`` folders (the command's outputs)."""
    digests = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file() or relative.startswith(tuple(f"{o}/" for o in outside)):
            continue
        digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@dataclass
class Variant:
    name: str
    args: list[str]
    expect: str                                   # a fragment of the one-line message: the file, key or value
    setup: Callable[[Path], None] = lambda world: None
    outputs: tuple[str, ...] = field(default=())  # folders the command may write into
    bounded: bool = False                         # run in a subprocess under a memory and a time limit


def edit_config(name: str = "base.yaml", **changes) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        config = yaml.safe_load((world / name).read_text())
        for dotted, value in changes.items():
            node = config
            *parents, last = dotted.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        (world / name).write_text(yaml.safe_dump(config))
    return apply


def write(relative: str, content: bytes | str) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        path = world / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.rmtree(path)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return apply


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        for step in steps:
            step(world)
    return apply


def first_train_image(world: Path) -> str:
    return f"data/train/{pd.read_csv(world / 'data/train.csv', dtype=str)['id'][0]}.png"


def image_fault(content: bytes) -> Callable[[Path], None]:
    return lambda world: (world / first_train_image(world)).write_bytes(content)


def laughs(depth: int = 9, key: str = "notes") -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth)]
    return "\n".join(lines) + f"\nexperiment: x\ndata: {{train_csv: data/train.csv}}\n{key}: *a{depth - 1}\n"


def drop_train_rows(world: Path) -> None:
    frame = pd.read_csv(world / "data/train.csv", dtype=str)
    frame.iloc[5:].to_csv(world / "data/train.csv", index=False)


def symlink_loop(world: Path) -> None:
    frame = pd.read_csv(world / "data/train.csv", dtype=str)
    target = world / f"data/train/{frame['id'][0]}.png"
    target.unlink()
    target.symlink_to(target.name)


def ensembled(name: str = "pair", method: str = "mean") -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        code, output = _run(["ensemble", "runs/base", "runs/other", "--name", name, "--method", method], world)
        assert code == 0, output
    return apply


def edit_json(relative: str, **changes) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        import json

        path = world / relative
        record = json.loads(path.read_text())
        record.update(changes)
        path.write_text(json.dumps(record))
    return apply


def edit_member(index: int, path: str) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        import json

        info = world / "runs/ens-pair/run.json"
        record = json.loads(info.read_text())
        record["members"][index]["path"] = path
        info.write_text(json.dumps(record))
    return apply


def tampered_weights(change: str) -> Callable[[Path], None]:
    """fold0's best weights with one tensor of the wrong shape, or of an integer dtype."""
    def apply(world: Path) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        path = world / "runs/base/fold0/best.safetensors"
        state = load_file(str(path))
        key = next(name for name, tensor in state.items() if tensor.is_floating_point() and tensor.ndim == 4)
        if change == "nan":
            state = {name: torch.full_like(tensor, float("nan")) if tensor.is_floating_point() else tensor
                     for name, tensor in state.items()}
        else:
            state[key] = torch.zeros(3, 3) if change == "shape" else state[key].to(torch.int64)
        save_file(state, str(path))
    return apply


def stacked_recipe(change: str) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        import json

        ensembled("stk", "stack")(world)
        path = world / "runs/ens-stk/weights.json"
        recipe = json.loads(path.read_text())
        entry = recipe["stack_model"][0]
        if change == "shape":
            entry["coef"] = [row[:-1] for row in entry["coef"]]
        elif change == "strings":
            entry["coef"] = "abc"
        else:
            recipe["stack_model"] = []
        path.write_text(json.dumps(recipe))
    return apply


def image_folder(world: Path) -> None:
    for label in ("a", "b"):
        (world / "imp" / label).mkdir(parents=True)
        shutil.copy(world / first_train_image(world), world / "imp" / label / f"{label}.png")


def linked_run(world: Path) -> None:
    shutil.move(world / "runs/other", world / "elsewhere")
    (world / "runs/other").symlink_to(world / "elsewhere", target_is_directory=True)


SPACE = write("space.yaml", "train.lr: {type: float, low: 0.001, high: 0.01}\n")
ENS_INFER = ["infer", "runs/ens-pair", "--test", "data/test.csv", "--images", "data/test", "--out", "x.csv"]
BOUNDED = ["folds", "base.yaml", "--set", "data.train_csv=data/big.csv", "--set", "data.image_dir=null",
           "--set", "folds.file=folds/big.csv"]


def wide_gzip(columns: int) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        import gzip

        header = "id,label," + ",".join(f"c{i}" for i in range(columns))
        (world / "data/big.csv.gz").write_bytes(gzip.compress((header + "\n1,a" + ",0" * columns + "\n").encode(), 6))
    return apply


def gzip_bomb(world: Path) -> None:
    import zlib

    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip container
    with open(world / "data/big.csv.gz", "wb") as handle:
        handle.write(compressor.compress(b"id,label\n"))
        block = b"1,a\n" * (1 << 18)
        for _ in range((1 << 30) // len(block) + 2):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())


RUNS = ("runs",)
TRAIN = ["train", "base.yaml", "--set", "experiment=fresh"]
INFER = ["infer", "runs/base", "--test", "data/test.csv", "--images", "data/test"]
CATALOGUE = {
    "names that become paths": [
        Variant("ensemble name with ..", ["ensemble", "runs/base", "runs/other", "--name", "x/../base"], "x/../base", outputs=RUNS),
        Variant("ensemble name escaping runs", ["ensemble", "runs/base", "runs/other", "--name", "../../../esc"], "../../../esc", outputs=RUNS),
        Variant("ensemble name absolute", ["ensemble", "runs/base", "runs/other", "--name", "/tmp/kagglecv-esc"], "/tmp/kagglecv-esc", outputs=RUNS),
        Variant("ensemble name of a member run", ["ensemble", "runs/ens-a", "runs/base", "--name", "a"], "input",
                setup=lambda w: shutil.copytree(w / "runs/base", w / "runs/ens-a"), outputs=RUNS),
        Variant("submit name over the training table", ["submit", "runs/base", "--sample", "data/sample.csv", "--name", "../data/train"], "../data/train", outputs=("submissions",)),
        Variant("submit name absolute", ["submit", "runs/base", "--sample", "data/sample.csv", "--name", "/tmp/kagglecv-train"], "/tmp/kagglecv-train", outputs=("submissions",)),
        Variant("submit onto its own sample", ["submit", "runs/base", "--sample", "data/sample.csv", "--out-dir", "data", "--name", "sample"], "data/sample.csv", outputs=()),
        Variant("submit through a linked folder", ["submit", "runs/base", "--sample", "data/sample.csv", "--out-dir", "links", "--name", "train"], "outside links",
                setup=lambda w: ((w / "links").mkdir(), (w / "links" / "train.csv").symlink_to(w / "data/train.csv")), outputs=("links",)),
        Variant("import over an image", ["data", "import", "folder", "data", "--out", "data/train/x.png"], "data/train/x.png", outputs=("data",)),
        Variant("experiment name with a slash", ["train", "base.yaml", "--set", "experiment=../../x"], "experiment", outputs=RUNS),
    ],
    "config bombs": [
        Variant("billion laughs under notes", ["config", "show", "bomb.yaml"], "bomb.yaml", setup=write("bomb.yaml", laughs())),
        Variant("billion laughs under augment.train", ["config", "show", "bomb.yaml"], "bomb.yaml",
                setup=write("bomb.yaml", laughs(key="augment") .replace("augment: *a8", "augment: {train: *a8}"))),
        Variant("an alias that refers to itself", ["config", "show", "bomb.yaml"], "refers to itself",
                setup=write("bomb.yaml", "experiment: x\ndata: {train_csv: t.csv}\nnotes: &a [*a]\n")),
        Variant("nested 200 deep", ["config", "show", "bomb.yaml"], "deeper than",
                setup=write("bomb.yaml", "experiment: x\ndata: {train_csv: t.csv}\nnotes: " + "[" * 200 + "]" * 200 + "\n")),
        Variant("a bomb in --set", ["config", "show", "base.yaml", "--set", "notes=" + laughs().split("\nexperiment")[0].replace("\n", ", ").join("{}")], "--set notes"),
        Variant("a python tag", ["config", "show", "bomb.yaml"], "bomb.yaml",
                setup=write("bomb.yaml", "experiment: !!python/object/apply:os.system [echo hi]\n")),
    ],
    "images": [
        Variant("zero-byte training image at folds", ["folds", "base.yaml", "--set", "folds.near_duplicates=warn", "--set", "folds.file=folds/new.csv"], "cannot decode image",
                setup=image_fault(b""), outputs=("folds",)),
        Variant("text as a training image at folds", ["folds", "base.yaml", "--set", "folds.near_duplicates=warn", "--set", "folds.file=folds/new.csv"], "cannot decode image",
                setup=image_fault(b"id,label\n1,2\n"), outputs=("folds",)),
        Variant("truncated training image at folds", ["folds", "base.yaml", "--set", "folds.near_duplicates=warn", "--set", "folds.file=folds/new.csv"], ".png",
                setup=lambda w: (w / first_train_image(w)).write_bytes((w / first_train_image(w)).read_bytes()[:60]), outputs=("folds",)),
        Variant("zero-byte image before training", TRAIN, "cannot decode image", setup=image_fault(b""), outputs=RUNS),
        Variant("text image before training", TRAIN, "cannot decode image", setup=image_fault(b"not an image"), outputs=RUNS),
        Variant("header-only image before training", TRAIN, "cannot decode image", setup=image_fault(b"\x89PNG\r\n\x1a\n"), outputs=RUNS),
    ],
    "tables": [
        Variant("header only", TRAIN, "no rows", setup=write("data/train.csv", "id,label\n"), outputs=RUNS),
        Variant("latin-1", ["folds", "base.yaml", "--force"], "not UTF-8", setup=write("data/train.csv", "id,label\n1,caf\xe9\n".encode("latin-1")), outputs=("folds",)),
        Variant("UTF-16", ["folds", "base.yaml", "--force"], "UTF-16", setup=write("data/train.csv", "id,label\n1,a\n".encode("utf-16")), outputs=("folds",)),
        Variant("binary", ["folds", "base.yaml", "--force"], "data/train.csv", setup=write("data/train.csv", bytes(range(256)) * 4), outputs=("folds",)),
        Variant("a folder as the training table", ["folds", "base.yaml", "--set", "data.train_csv=data"], "is a folder", outputs=("folds",)),
        Variant("a folder as the config", ["config", "show", "data"], "is a folder"),
        Variant("test table with zero rows", TRAIN, "no rows", setup=write("data/test.csv", "id\n"), outputs=RUNS),
        Variant("class named id", ["folds", "base.yaml", "--force"], "collide",
                setup=lambda w: pd.read_csv(w / "data/train.csv", dtype=str).assign(label=lambda f: f["label"].where(f.index % 2 == 0, "id")).to_csv(w / "data/train.csv", index=False), outputs=("folds",)),
        Variant("class named fold", ["folds", "base.yaml", "--force"], "'fold'",
                setup=lambda w: pd.read_csv(w / "data/train.csv", dtype=str).assign(label=lambda f: f["label"].where(f.index % 2 == 0, "fold")).to_csv(w / "data/train.csv", index=False), outputs=("folds",)),
    ],
    "options": [
        Variant("more folds than rows, stratified", ["folds", "base.yaml", "--set", "folds.n_splits=49", "--set", "folds.file=folds/x.csv"], "n_splits=49", outputs=("folds",)),
        Variant("more folds than rows, kfold", ["folds", "base.yaml", "--set", "folds.n_splits=60", "--set", "folds.method=kfold", "--set", "folds.file=folds/x.csv"], "n_splits=60", outputs=("folds",)),
        Variant("more folds than groups", ["folds", "base.yaml", "--set", "folds.n_splits=3", "--set", "folds.method=group", "--set", "data.group_col=g", "--set", "folds.file=folds/x.csv"], "number of groups",
                setup=lambda w: pd.read_csv(w / "data/train.csv", dtype=str).assign(g=lambda f: f.index % 2).to_csv(w / "data/train.csv", index=False), outputs=("folds",)),
        Variant("TTA scale zero", ["predict", "runs/base", "--tta", "none,scale:0"], "scale:0", outputs=RUNS),
        Variant("TTA scale tiny", ["predict", "runs/base", "--tta", "scale:1e-9"], "scale:1e-9", outputs=RUNS),
        Variant("TTA scale huge", ["predict", "runs/base", "--tta", "scale:1e9"], "scale:1e9", outputs=RUNS),
        Variant("TTA scale not finite", ["predict", "runs/base", "--tta", "scale:nan"], "scale:nan", outputs=RUNS),
        Variant("TTA unknown view", ["predict", "runs/base", "--tta", "mirror"], "mirror", outputs=RUNS),
        Variant("weights not numbers", ["ensemble", "runs/base", "runs/other", "--method", "weighted", "--weights", "a,b"], "'a'", outputs=RUNS),
        Variant("weights infinite", ["ensemble", "runs/base", "runs/other", "--method", "weighted", "--weights", "inf,1"], "inf", outputs=RUNS),
        Variant("power zero", ["ensemble", "runs/base", "runs/other", "--method", "power", "--power", "0"], "--power", outputs=RUNS),
        Variant("unknown method", ["ensemble", "runs/base", "runs/other", "--method", "magic"], "magic", outputs=RUNS),
        Variant("unknown metric, score", ["score", "runs/base", "--metric", "nope"], "nope", outputs=RUNS),
        Variant("metric of another task, score", ["score", "runs/base", "--metric", "map"], "'map'", outputs=RUNS),
        Variant("unknown metric, ensemble", ["ensemble", "runs/base", "runs/other", "--metric", "nope"], "nope", outputs=RUNS),
        Variant("unknown metric, score --oof", ["score", "--oof", "runs/base/oof.csv", "--truth", "data/train.csv", "--metric", "nope"], "nope"),
        Variant("unknown metric, score --submission", ["score", "--submission", "data/sample.csv", "--solution", "data/sample.csv", "--metric", "nope"], "nope"),
        Variant("unknown metric in the config", ["config", "show", "base.yaml", "--set", "metric=nope"], "nope"),
        Variant("threshold not a number", ["submit", "runs/base", "--sample", "data/sample.csv", "--threshold", "high"], "high", outputs=("submissions",)),
    ],
    "run folders": [
        Variant("corrupt config.yaml, predict", ["predict", "runs/base"], "runs/base/config.yaml", setup=write("runs/base/config.yaml", "experiment: [unclosed\n"), outputs=RUNS),
        Variant("corrupt config.yaml, score", ["score", "runs/base"], "runs/base/config.yaml", setup=write("runs/base/config.yaml", "- a list\n"), outputs=RUNS),
        Variant("corrupt config.yaml, ensemble", ["ensemble", "runs/base", "runs/other"], "runs/base/config.yaml", setup=write("runs/base/config.yaml", "\x00\x01"), outputs=RUNS),
        Variant("corrupt config.yaml, report", ["report"], "runs/base/config.yaml", setup=write("runs/base/config.yaml", "experiment: x\nmodel: {name: 3"), outputs=RUNS),
        Variant("corrupt run.json, submit", ["submit", "runs/base", "--sample", "data/sample.csv"], "run.json", setup=write("runs/base/run.json", "{"), outputs=("submissions",)),
        Variant("corrupt run.json, ensemble", ["ensemble", "runs/base", "runs/other"], "run.json", setup=write("runs/other/run.json", "[]"), outputs=RUNS),
        Variant("table changed, predict", ["predict", "runs/base"], "folds/digits.csv", setup=drop_train_rows, outputs=RUNS),
        Variant("table changed, score", ["score", "runs/base"], "runs/base/oof.csv", setup=drop_train_rows, outputs=RUNS),
        Variant("table changed, ensemble", ["ensemble", "runs/base", "runs/other"], "runs/base/oof.csv", setup=drop_train_rows, outputs=RUNS),
        Variant("table changed, report", ["report"], "runs/base/oof.csv", setup=drop_train_rows, outputs=RUNS),
        Variant("oof without its fold column", ["ensemble", "runs/base", "runs/other"], "fold",
                setup=lambda w: pd.read_csv(w / "runs/other/oof.csv", dtype=str).drop(columns="fold").to_csv(w / "runs/other/oof.csv", index=False), outputs=RUNS),
    ],
    "code competitions": [
        Variant("infer writing into the run", INFER + ["--out", "runs/base/submission.csv"], "inside the input folder"),
        Variant("infer overwriting its test table", INFER + ["--out", "data/test.csv"], "input of this command"),
        Variant("infer on a folder that is no run", ["infer", "data", "--test", "data/test.csv", "--out", "x.csv"], "not a run or ensemble folder"),
        Variant("infer without --images", ["infer", "runs/base", "--test", "data/test.csv", "--out", "x.csv"], "--images"),
        Variant("infer on a test table without ids", INFER + ["--out", "x.csv"], "'id'",
                setup=write("data/test.csv", "name\nx\n")),
        Variant("infer on a bundle with a corrupt manifest", ["infer", "bundle", "--test", "data/test.csv", "--images", "data/test", "--out", "x.csv"],
                "corrupt bundle manifest", setup=lambda w: (packed(w), (w / "bundle" / "manifest.json").write_text("{"))),
        Variant("pack into the run", ["pack", "runs/base", "--out", "runs/base/bundle", "--timing-images", "0"], "overlaps the run"),
        Variant("pack over a folder of yours", ["pack", "runs/base", "--out", "data", "--timing-images", "0"], "holds the training table"),
        Variant("pack in an unknown format", ["pack", "runs/base", "--out", "p", "--timing-images", "0", "--format", "tflite"],
                "--format 'tflite': expected one of torch, onnx"),
        Variant("infer with no test set at all", ["infer", "runs/base", "--out", "x.csv"], "no test set; give --test TABLE"),
    ],
    "error analysis and tracking": [
        Variant("inspect on a folder that is no run", ["inspect", "data"], "not a kagglecv run"),
        Variant("inspect on an OOF file with rows missing", ["inspect", "runs/base"], "runs/base/oof.csv",
                setup=lambda w: (w / "runs/base/oof.csv").write_text(
                    "\n".join((w / "runs/base/oof.csv").read_text().splitlines()[:-3]) + "\n"),
                outputs=("runs/base",)),
        Variant("label fixes naming an unknown id", TRAIN, "fixes.csv: 1 ids are not in",
                setup=both(write("fixes.csv", "id\nno-such-image\n"),
                           edit_config(data__label_fixes={"file": "fixes.csv"})), outputs=RUNS),
        Variant("label fixes relabelling to an unknown class", TRAIN, "'unicorn'",
                setup=lambda w: (write("fixes.csv", f"id,suggested_label\n{Path(first_train_image(w)).stem},unicorn\n")(w),
                                 edit_config(data__label_fixes={"file": "fixes.csv", "action": "relabel"})(w)),
                outputs=RUNS),
        Variant("lb for a submission never logged", ["lb", "nope", "--public", "0.5"], "no submission named 'nope'",
                setup=write("submissions/log.csv", "time,file,run,metric,cv,sha256,public,private\n"),
                outputs=("submissions",)),
        Variant("lb on a file that is not a log", ["lb", "base", "--public", "0.5"], "not a kagglecv submission log",
                setup=write("submissions/log.csv", "id,label\n1,2\n"), outputs=("submissions",)),
        Variant("submission named like the log", ["submit", "runs/base", "--sample", "data/sample.csv", "--name", "log"],
                "submissions log"),
        Variant("track sync of a corrupt run", ["track", "sync", "runs"], "runs/base/run.json",
                setup=write("runs/base/run.json", "{"), outputs=RUNS),
    ],
    "the system": [
        Variant("symlink loop in the image folder", TRAIN, "line 2", setup=symlink_loop, outputs=RUNS),
        Variant("output file is a folder", ["submit", "runs/base", "--sample", "data/sample.csv"], "submissions/base.csv",
                setup=lambda w: (w / "submissions" / "base.csv").mkdir(parents=True), outputs=("submissions",)),
        Variant("unreadable folds file", ["train", "base.yaml"], "folds/digits.csv", setup=write("folds/digits.csv", "\x00garbage\n"), outputs=RUNS),
    ],
    "kaggle folders, metric files, budgets, the cache": [
        Variant("init writing into the competition folder", ["init", "data", "--metric", "accuracy", "--out",
                                                             "data/my.yaml"], "inside the input folder"),
        Variant("init over a config of yours", ["init", "data", "--metric", "accuracy", "--out", "base.yaml"],
                "exists and is not an earlier output"),
        Variant("run DIR over a ./<folder>.yaml of yours", ["run", "data", "--metric", "accuracy"],
                "exists and is not an earlier output", setup=write("data.yaml", "experiment: mine\n")),
        Variant("a run whose config names a metric file that is not there", ["score", "runs/base"],
                "metric: metric file not found: missing.py",
                setup=edit_config("runs/base/config.yaml", metric="missing.py", metric_direction="maximize",
                                  submit__sample="data/sample.csv"), outputs=RUNS),
        Variant("a metric file that returns NaN", ["score", "--submission", "data/sample.csv", "--solution",
                                                   "data/sample.csv", "--metric", "nan.py"],
                "score(...) returned nan; expected a finite number",
                setup=write("nan.py", "def score(solution, submission, row_id_column_name):\n    return float('nan')\n")),
        Variant("pack --fit without the target's speed", ["pack", "runs/base", "--out", "p", "--fit", "--images", "100",
                                                          "--max-minutes", "5"], "--fit needs --device-speed"),
        Variant("data.cache over images of two sizes", TRAIN, "data.cache needs images of one size",
                setup=both(edit_config(data__cache="memory"),
                           lambda w: Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(w / first_train_image(w))),
                outputs=RUNS),
        Variant("airbench_cifar on images too small for its pools", TRAIN + ["--set", "model.name=airbench_cifar",
                                                                            "--set", "model.img_size=8"],
                "at least 9 px, got 8", outputs=RUNS),
        Variant("a batch rotation past its range", TRAIN + ["--set", "augment.rotate=90"], "augment.rotate",
                outputs=RUNS),
        Variant("a wsd decay longer than the epochs after warmup", TRAIN + ["--set", "train.sched=wsd", "--set",
                                                                            "train.decay_epochs=5"],
                "must fit in the epochs after warmup", outputs=RUNS),
        Variant("a norm learning-rate scale of 0", TRAIN + ["--set", "train.norm_lr_scale=0"], "train.norm_lr_scale",
                outputs=RUNS),
        Variant("norm_lr_scale beside layer_decay", TRAIN + ["--set", "train.norm_lr_scale=64", "--set",
                                                             "model.layer_decay=0.7"], "set one", outputs=RUNS),
        Variant("a wsd decay shape timm does not have", TRAIN + ["--set", "train.lr_decay_fn=exp"],
                "train.lr_decay_fn", outputs=RUNS),
        Variant("a lookahead without an EMA", TRAIN + ["--set", "train.lookahead_every=5"], "set train.ema: true",
                outputs=RUNS),
        Variant("alternating flips without batch flips", TRAIN + ["--set", "augment.alternate_flip=true"],
                "augment.alternate_flip", outputs=RUNS),
        Variant("a joined TTA view with a bad part", TRAIN + ["--set", "predict.tta=[none, hflip+shift:1]"],
                "shift:1", outputs=RUNS),
        Variant("a negative plateau patience", TRAIN + ["--set", "train.sched=plateau", "--set",
                                                        "train.patience_epochs=-1"], "patience_epochs", outputs=RUNS),
    ],
    "outputs over inputs": [
        Variant("pack over a folder holding a stray manifest.json", ["pack", "runs/base", "--out", "p", "--timing-images", "0"],
                "not a kagglecv bundle", setup=both(write("p/manifest.json", "{}"), write("p/notes.txt", "mine"))),
        Variant("pack over a bundle with a file added", ["pack", "runs/base", "--out", "bundle", "--timing-images", "0"],
                "not a kagglecv bundle", setup=lambda w: (packed(w), (w / "bundle" / "notes.txt").write_text("mine"))),
        Variant("pack --notebook over a folder of yours", ["pack", "runs/base", "--out", "p", "--timing-images", "0",
                                                          "--notebook", "--provided", "kagglecv"],
                "not a kagglecv notebook folder", setup=write("p-notebook/notes.md", "mine")),
        Variant("pack --notebook over a notebook folder with a file added",
                ["pack", "runs/base", "--out", "p", "--timing-images", "0", "--notebook", "--provided", "kagglecv"], "not a kagglecv notebook folder",
                setup=both(write("p-notebook/submission.ipynb", '{"metadata": {"kagglecv_notebook": 1}, "cells": []}'),
                           write("p-notebook/kernel-metadata.json", "{}"), write("p-notebook/notes.md", "mine"))),
        Variant("infer over the training table", INFER + ["--out", "data/train.csv"], "the training table"),
        Variant("infer over the sample", INFER + ["--sample", "data/sample.csv", "--out", "data/sample.csv"], "input of this command"),
        Variant("infer over the folds file", INFER + ["--out", "folds/digits.csv"], "folds"),
        Variant("infer over another run's test.csv", INFER + ["--out", "runs/other/test.csv"], "inside the run folder"),
        Variant("infer over a config", INFER + ["--out", "base.yaml"], ".csv"),
        Variant("infer over a csv of yours", INFER + ["--out", "notes.csv"], "not an earlier output",
                setup=write("notes.csv", "mine,yours\n1,2\n")),
        Variant("import over the training table", ["data", "import", "folder", "imp", "--out", "data/train.csv"],
                "not an earlier output", setup=image_folder),
        Variant("submit into a run's fold folder", ["submit", "runs/base", "--sample", "data/sample.csv", "--out-dir", "runs/base/fold0", "--name", "oof"],
                "runs/base/fold0/oof.csv"),
        Variant("submit into another run", ["submit", "runs/base", "--sample", "data/sample.csv", "--out-dir", "runs/other", "--name", "test"],
                "inside the run folder"),
        Variant("submit over the folds file", ["submit", "runs/base", "--sample", "data/sample.csv", "--out-dir", "folds", "--name", "digits"],
                "folds/digits.csv"),
        Variant("tune name escaping the project", ["tune", "base.yaml", "--space", "space.yaml", "--name", "../../../../x"], "--name", setup=SPACE),
        Variant("tune name into another folder of runs", ["tune", "base.yaml", "--space", "space.yaml", "--name", "../../x"], "--name", setup=SPACE),
        Variant("train into an ensemble", ["train", "runs/ens-pair/config.yaml"], "is an ensemble", setup=ensembled()),
        Variant("full refit into a CV run", ["train", "base.yaml", "--full", "--force"], "is a cross-validated run",
                setup=lambda w: shutil.copytree(w / "runs/base", w / "runs/base-full")),
        Variant("runs folder inside another run", TRAIN + ["--set", "runs_dir=runs/base"], "inside the run folder"),
    ],
    "untrusted run folders": [
        Variant("ensemble member stored as an absolute path", ENS_INFER, "expected a path relative",
                setup=both(ensembled(), lambda w: edit_member(0, str(w / "runs/base"))(w))),
        Variant("ensemble member stored outside the project", ENS_INFER, "runs/ens-pair/../../../base",
                setup=both(ensembled(), edit_member(0, "../../../base"))),
        Variant("ensemble member changed since the blend", ENS_INFER, "changed since the ensemble",
                setup=both(ensembled(), write("runs/base/predict.json", '{"tta": ["hflip"]}'))),
        Variant("ensemble members without fingerprints", ENS_INFER, "members.0",
                setup=both(ensembled(), edit_json("runs/ens-pair/run.json", members=["runs/base", "runs/other"]))),
        Variant("a refit's cv_run as a path", ["submit", "runs/base", "--sample", "data/sample.csv"], "cv_run",
                setup=edit_json("runs/base/run.json", cv_run="../../elsewhere"), outputs=("submissions",)),
        Variant("an unknown key in run.json", ["score", "runs/base"], "runs/base/run.json",
                setup=edit_json("runs/base/run.json", upload_to="http://example.invalid"), outputs=RUNS),
        Variant("classes of the wrong type in run.json", ["score", "runs/base"], "classes",
                setup=edit_json("runs/base/run.json", classes=[[1], {"a": 2}]), outputs=RUNS),
        Variant("a bundle with its manifest deleted", ["infer", "bundle", "--test", "data/test.csv", "--images", "data/test", "--out", "x.csv"],
                "without its manifest.json", setup=lambda w: (packed(w), (w / "bundle" / "manifest.json").unlink())),
        Variant("a manifest listing files as strings", ["infer", "bundle", "--test", "data/test.csv", "--images", "data/test", "--out", "x.csv"],
                "corrupt bundle manifest", setup=lambda w: (packed(w), edit_json("bundle/manifest.json", files={"run.json": "x"})(w))),
        Variant("weights of the wrong shape", INFER + ["--out", "x.csv"], "shape", setup=tampered_weights("shape")),
        Variant("weights of an integer dtype", INFER + ["--out", "x.csv"], "int64", setup=tampered_weights("dtype")),
        Variant("a stacking recipe of the wrong shape", ENS_INFER[:1] + ["runs/ens-stk"] + ENS_INFER[2:], "stack_model[0]", setup=stacked_recipe("shape")),
        Variant("a stacking recipe of strings", ENS_INFER[:1] + ["runs/ens-stk"] + ENS_INFER[2:], "stack_model[0]", setup=stacked_recipe("strings")),
        Variant("a stacking recipe of no models", ENS_INFER[:1] + ["runs/ens-stk"] + ENS_INFER[2:], "stack_model", setup=stacked_recipe("empty")),
        Variant("predict into a linked run folder", ["predict", "runs/other"], "is a link", setup=linked_run, outputs=RUNS),
        Variant("inspect into a linked run folder", ["inspect", "runs/other"], "is a link", setup=linked_run, outputs=RUNS),
    ],
    "bounds": [
        Variant("a pixel header naming pixel3000000000", BOUNDED, "pixel3000000000",
                setup=write("data/big.csv", "label,pixel0,pixel3000000000\n1,0,0\n"), bounded=True),
        Variant("the same header for infer --test", INFER[:2] + ["--test", "data/big.csv", "--out", "x.csv"], "pixel3000000000",
                setup=write("data/big.csv", "pixel0,pixel3000000000\n0,0\n"), bounded=True),
        Variant("a gzip table of a million columns", BOUNDED[:3] + ["data.train_csv=data/big.csv.gz"] + BOUNDED[4:],
                "100,000 columns", setup=wide_gzip(1_000_000), bounded=True),
        Variant("a gzip bomb past the cap", BOUNDED[:3] + ["data.train_csv=data/big.csv.gz"] + BOUNDED[4:],
                "decompresses to more than", setup=gzip_bomb, bounded=True),
        Variant("a 2 MB label cell", BOUNDED, "characters", setup=write("data/big.csv", "id,label\n1," + "a" * 2_000_000 + "\n2,b\n"),
                bounded=True),
        Variant("a 300-character class name", BOUNDED, "longer than 256",
                setup=write("data/big.csv", "id,label\n1," + "a" * 300 + "\n2,b\n3,b\n"), bounded=True),
    ],
    "tracebacks": [
        Variant("probabilities scored with accuracy", ["score", "--submission", "data/p.csv", "--solution", "data/sol01.csv", "--metric", "accuracy"],
                "cannot score probabilities", setup=both(write("data/p.csv", "id,y\n1,0.2\n2,0.9\n"), write("data/sol01.csv", "id,y\n1,0\n2,1\n"))),
        Variant("a probability above one", ["score", "--submission", "data/p.csv", "--solution", "data/sol01.csv", "--metric", "roc_auc"],
                "'1.7'", setup=both(write("data/p.csv", "id,y\n1,0.2\n2,1.7\n"), write("data/sol01.csv", "id,y\n1,0\n2,1\n"))),
        Variant("a column repeated after stripping spaces", ["folds", "base.yaml", "--force"], "appear more than once",
                setup=write("data/train.csv", "id,label, label\n1,a,b\n2,b,a\n"), outputs=("folds",)),
        Variant("a sample with a repeated column", ["submit", "runs/base", "--sample", "data/s2.csv"], "appear more than once",
                setup=write("data/s2.csv", "id,label ,label\n1,a,b\n"), outputs=("submissions",)),
        Variant("a class name with a line break", ["folds", "base.yaml", "--force"], "line break",
                setup=write("data/train.csv", 'id,label\n1,"a\nb"\n2,c\n3,c\n'), outputs=("folds",)),
        Variant("an unknown tracking URI scheme", ["track", "sync", "runs", "--uri", "bogus://x"], "bogus", outputs=RUNS),
        Variant("a tracking store that is the training table", ["track", "sync", "runs", "--uri", "sqlite:///data/train.csv"],
                "not a SQLite database", outputs=RUNS),
        Variant("TTA of commas only", ["predict", "runs/base", "--tta", ","], "--tta", outputs=RUNS),
        Variant("a public score of nan", ["lb", "base", "--public", "nan"], "--public nan", outputs=("submissions",)),
        Variant("a private score of inf", ["lb", "base", "--private", "inf"], "--private inf", outputs=("submissions",)),
        Variant("a duplicate id in the solution", ["score", "--submission", "data/sample.csv", "--solution", "data/sol.csv", "--metric", "accuracy"],
                "appear more than once", setup=lambda w: write("data/sol.csv", "\n".join(
                    ["id,label"] + [f"{i},0" for i in pd.read_csv(w / "data/sample.csv", dtype=str)["id"]] + ["x,0", "x,0"]) + "\n")(w)),
        Variant("the same run twice in an ensemble", ["ensemble", "runs/base", "runs/base"], "named more than once", outputs=RUNS),
        Variant("a search range without its type", ["tune", "base.yaml", "--space", "space.yaml"], "type: Field required (one of",
                setup=write("space.yaml", "train.lr: {low: 0.001, high: 0.01}\n")),
    ],
}
def packed(world: Path) -> None:
    from kagglecv.stages.pack import pack_run

    pack_run(world / "runs" / "base", world / "bundle", timing_images=0)


# ----- round four: what a run folder, a folder name, or kagglecv's own files can make kagglecv do ---------------------
PLANTED = "import pathlib\npathlib.Path(__file__).with_name('pwned').open('a').write('ran\\n')\n" + (
    "def score(solution, submission, row_id_column_name):\n    return 0.5\n")


def planted_metric(run: str = "runs/base", absolute: bool = False) -> Callable[[Path], None]:
    """A run folder whose config names a metric file that, run, appends to ``pwned`` beside it."""
    def apply(world: Path) -> None:
        (world / "evil.py").write_text(PLANTED)
        name = str(world / "evil.py") if absolute else "evil.py"
        edit_config(f"{run}/config.yaml", metric=name, metric_direction="maximize",
                    submit__sample="data/sample.csv")(world)
    return apply


def recorded_metric(world: Path) -> None:
    """An ensemble blended by a metric file the user named then: its config records it for every later command."""
    planted_metric("runs/base")(world)
    planted_metric("runs/other")(world)
    code, output = _run(["ensemble", "runs/base", "runs/other", "--name", "m", "--method", "mean", "--metric",
                         "evil.py"], world)
    assert code == 0, output


def competition_copy(folder: str = "comp", rename: dict[str, str] | None = None) -> Callable[[Path], None]:
    """``data/`` copied to ``folder`` as a competition folder (its sample beside), files renamed as given."""
    def apply(world: Path) -> None:
        shutil.copytree(world / "data", world / folder)
        (world / folder / "sample.csv").rename(world / folder / "sample_submission.csv")
        for old, new in (rename or {}).items():
            (world / folder / old).rename(world / folder / new)
    return apply


def initialised(folder: str, out: str) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        code, output = _run(["init", folder, "--metric", "accuracy", "--out", out], world)
        assert code == 0, output
    return apply


def cache_entry(world: Path) -> Path:
    """The disk cache of the training images, made as `train` makes it; its path."""
    import os

    from kagglecv.core.config import load_config
    from kagglecv.data.inputs import load_stage_inputs

    previous = Path.cwd()
    try:
        os.chdir(world)
        load_stage_inputs(load_config("base.yaml", ["data.cache=disk"]))
    finally:
        os.chdir(previous)
    return next((world / "runs/.cache").glob("images-*.npy"))


def planted_cache(kind: str) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        from kagglecv.core.files import sha256_file

        path = cache_entry(world)
        pixels = np.load(path)
        if kind == "zeros":
            np.save(path, np.zeros_like(pixels))
        elif kind == "zeros with its digest":
            np.save(path, np.zeros_like(pixels))
            path.with_name(path.name + ".sha256").write_text(sha256_file(path) + "\n")
        elif kind == "float64":
            np.save(path, np.full(pixels.shape, 1e9))
        elif kind == "another size":
            np.save(path, pixels[:, :4, :4])
            path.with_name(path.name + ".sha256").write_text(sha256_file(path) + "\n")
        elif kind == "objects":
            np.save(path, np.array([{"a": 1}] * len(pixels), dtype=object), allow_pickle=True)
        elif kind == "truncated":
            path.write_bytes(path.read_bytes()[:200])
        else:
            path.write_text("not an array\n")
    return apply


def linked_cache(world: Path) -> None:
    (world / "runs/.cache").mkdir(exist_ok=True)
    shutil.rmtree(world / "runs/.cache")
    (world / "runs/.cache").symlink_to(world / "data/train", target_is_directory=True)


def rehash(bundle: Path) -> None:
    """The bundle's manifest rewritten over its files as they are now: what someone who hands over a bundle can do."""
    import json

    from kagglecv.core.files import sha256_file

    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {p.relative_to(bundle).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(bundle.rglob("*"))
                         if p.is_file() and p.name not in ("manifest.json", "dataset-metadata.json")}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def bundle_thresholds(first: str) -> Callable[[Path], None]:
    """thresholds.json in a bundle: ``first`` (JSON text) for its first class, 0.5 for the others."""
    def apply(world: Path) -> None:
        packed(world)
        classes = (world / "bundle" / "classes.txt").read_text().split()
        (world / "bundle" / "thresholds.json").write_text(
            "{" + ", ".join(f'"{name}": {first if index == 0 else 0.5}' for index, name in enumerate(classes)) + "}")
        rehash(world / "bundle")
    return apply


def qwk_cutoffs(content: str) -> Callable[[Path], None]:
    return both(edit_config("runs/base/config.yaml", metric="qwk_thresholds"), write("runs/base/cutoffs.json", content))


_ONNX_BUNDLE: dict[str, Path] = {}


def onnx_bundle(world: Path) -> Path:
    """``pack runs/base --format onnx`` of the world, made once (every copy of the world holds the same run)."""
    import tempfile

    if "made" not in _ONNX_BUNDLE:
        out = Path(tempfile.mkdtemp(prefix="kagglecv-onnx-")) / "obundle"
        code, output = _run(["pack", "runs/base", "--out", str(out), "--timing-images", "0", "--format", "onnx"], world)
        assert code == 0, output
        _ONNX_BUNDLE["made"] = out
    return _ONNX_BUNDLE["made"]


def foreign_onnx(kind: str) -> Callable[[Path], None]:
    """An ONNX bundle whose fold0 graph is replaced by one written by hand, its manifest rewritten to match."""
    def apply(world: Path) -> None:
        from onnx import TensorProto, helper

        shutil.copytree(onnx_bundle(world), world / "obundle")
        images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, 16, 16])
        probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)
        if kind == "wrong classes":
            nodes, inits = [helper.make_node("ReduceMean", ["images", "axes"], ["probs"], keepdims=0)], [
                helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])]
        elif kind == "allocation":
            nodes, inits = [helper.make_node("ConstantOfShape", ["shape"], ["probs"])], [
                helper.make_tensor("shape", TensorProto.INT64, [2], [100_000, 100_000])]
        else:
            weight = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
            weight.data_location = TensorProto.EXTERNAL
            weight.ClearField("float_data")
            for key, value in (("location", "../../base.yaml"), ("offset", "0"), ("length", "4")):
                weight.external_data.add(key=key, value=value)
            nodes, inits = [helper.make_node("Add", ["images", "w"], ["probs"])], [weight]
        graph = helper.make_graph(nodes, "foreign", [images], [probs], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        (world / "obundle/fold0/model.onnx").write_bytes(model.SerializeToString())
        rehash(world / "obundle")
    return apply


def linked_metadata(world: Path) -> None:
    packed(world)
    (world / "secret.txt").write_text("api-key-123")
    (world / "bundle" / "dataset-metadata.json").unlink(missing_ok=True)
    (world / "bundle" / "dataset-metadata.json").symlink_to(world / "secret.txt")


def nested_metadata(where: str) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        from kagglecv.stages.pack import pack_run

        pack_run(world / "runs" / "base", world / "bundle", timing_images=0, notebook=True, provided=("kagglecv",))
        (world / where).write_text("[" * 100_000 + "]" * 100_000)
    return apply


def bomb_images(world: Path) -> None:
    """Every training image a PNG whose header declares 60,000 x 60,000 pixels (a few bytes on disk)."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    for image in (world / "comp" / "train").iterdir():
        image.write_bytes(png)


def fifo_images(world: Path) -> None:
    import os

    for image in (world / "comp" / "train").iterdir():
        image.unlink()
        os.mkfifo(image)


def isic_shaped(world: Path) -> None:
    """ISIC 2024 as it ships: train-metadata.csv, train images nested in train-image/image/, the test images only in
    test-image.hdf5 (here a stand-in file), a sample of isic_id,target."""
    folder = world / "isic"
    (folder / "train-image").mkdir(parents=True)
    shutil.copytree(world / "data" / "train", folder / "train-image" / "image")
    train = pd.read_csv(world / "data/train.csv", dtype=str)
    pd.DataFrame({"isic_id": train["id"], "target": (train.index % 2).astype(str)}).to_csv(
        folder / "train-metadata.csv", index=False)
    pd.DataFrame({"isic_id": ["ISIC_0015657", "ISIC_0015729", "ISIC_0015740"]}).to_csv(
        folder / "test-metadata.csv", index=False)
    pd.DataFrame({"isic_id": ["ISIC_0015657", "ISIC_0015729", "ISIC_0015740"], "target": 0.3}).to_csv(
        folder / "sample_submission.csv", index=False)
    (folder / "test-image.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))


def metric_file(body: str) -> Callable[[Path], None]:
    return write("m.py", "import sys\n\ndef score(solution, submission, row_id_column_name):\n    " + body + "\n")


SCORE_FILE = ["score", "--submission", "data/sample.csv", "--solution", "data/sample.csv", "--metric", "m.py"]
OINFER = ["infer", "obundle", "--test", "data/test.csv", "--images", "data/test", "--out", "x.csv"]
BINFER = ["infer", "bundle", "--test", "data/test.csv", "--images", "data/test", "--out", "x.csv"]
CACHED = TRAIN + ["--set", "data.cache=disk"]
ROUND_FOUR = {
    "code a run folder names": [
        Variant("score on a run naming a metric file", ["score", "runs/base"], "not by you", setup=planted_metric(), outputs=RUNS),
        Variant("report on a run naming a metric file by absolute path", ["report"], "not by you",
                setup=planted_metric(absolute=True), outputs=RUNS),
        Variant("ensemble of a run naming a metric file", ["ensemble", "runs/base", "runs/other"], "evil.py",
                setup=planted_metric(), outputs=RUNS),
        Variant("predict on a run naming a metric file", ["predict", "runs/base"], "not by you", setup=planted_metric(),
                outputs=RUNS),
        Variant("report on an ensemble that recorded a metric file", ["report"], "not by you", setup=recorded_metric,
                outputs=RUNS),
        Variant("score an ensemble that recorded a metric file", ["score", "runs/ens-m"], "not by you",
                setup=recorded_metric, outputs=RUNS),
        Variant("a metric file named that is not there", ["report", "--metric-file", "nope.py"], "--metric-file nope.py",
                outputs=RUNS),
        Variant("a metric file named that is a config", ["inspect", "runs/base", "--metric-file", "base.yaml"],
                "--metric-file base.yaml", outputs=RUNS),
        Variant("a metric file of other content than the run's", ["score", "runs/base", "--metric", "mine.py"],
                "not by you", setup=both(planted_metric(), write("mine.py", "def score(s, p, r):\n    return 1.0\n")),
                outputs=RUNS),
    ],
    "names that become config": [
        Variant("a training table whose name holds a line break", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"],
                "line break", setup=competition_copy(rename={"train.csv": "train\nruns_dir: kagglecv-esc.csv"})),
        Variant("an image folder whose name holds a line break", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"],
                "line break", setup=competition_copy(rename={"train": "train\ntracking: mlflow"})),
        Variant("a sample whose name holds a carriage return", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"],
                "line break", setup=competition_copy(rename={"sample_submission.csv": "sample_submission\r.csv"})),
        Variant("run DIR over a config init wrote for another folder of that name", ["run", "comp", "--metric", "accuracy"],
                "written by kagglecv init for", setup=both(competition_copy("other/comp"), competition_copy("comp"),
                                                            initialised("other/comp", "comp.yaml"))),
        Variant("run DIR writing its folds into the competition folder", ["run", "comp", "--set", "folds.file=comp/f.csv"],
                "never writes into the competition folder", setup=both(competition_copy(), initialised("comp", "comp.yaml"))),
        Variant("run DIR writing its runs into the competition folder", ["run", "comp", "--set", "runs_dir=comp/runs"],
                "runs_dir", setup=both(competition_copy(), initialised("comp", "comp.yaml"))),
    ],
    "files kagglecv wrote itself": [
        Variant("a cache folder that links into the training images", CACHED, "not a link", setup=linked_cache, outputs=RUNS),
        Variant("a cache of zeros", CACHED, "images-", setup=planted_cache("zeros"), outputs=RUNS),
        Variant("a cache of zeros with a digest to match", CACHED, "first or last image differs",
                setup=planted_cache("zeros with its digest"), outputs=RUNS),
        Variant("a cache of float64 1e9", CACHED, "float64", setup=planted_cache("float64"), outputs=RUNS),
        Variant("a cache of another image size", CACHED, "expected uint8", setup=planted_cache("another size"), outputs=RUNS),
        Variant("a cache of pickled objects", CACHED, "object", setup=planted_cache("objects"), outputs=RUNS),
        Variant("a truncated cache", CACHED, "images-", setup=planted_cache("truncated"), outputs=RUNS),
        Variant("a cache that is text", CACHED, "not a kagglecv image cache", setup=planted_cache("text"), outputs=RUNS),
        Variant("cut-offs with NaN", ["submit", "runs/base", "--sample", "data/sample.csv"], "cutoffs.json",
                setup=qwk_cutoffs("[NaN, 1, 2, 3, 4, 5, 6, 7, 8]"), outputs=("submissions",)),
        Variant("cut-offs descending", ["submit", "runs/base", "--sample", "data/sample.csv"], "descending",
                setup=qwk_cutoffs("[8, 7, 6, 5, 4, 3, 2, 1, 0]"), outputs=("submissions",)),
        Variant("cut-offs of true", ["submit", "runs/base", "--sample", "data/sample.csv"], "cut-off True",
                setup=qwk_cutoffs("[true, 1, 2, 3, 4, 5, 6, 7, 8]"), outputs=("submissions",)),
        Variant("cut-offs of Infinity", ["submit", "runs/base", "--sample", "data/sample.csv"], "cut-off inf",
                setup=qwk_cutoffs("[0, 1, 2, 3, 4, 5, 6, 7, Infinity]"), outputs=("submissions",)),
        Variant("thresholds with NaN in a bundle", BINFER, "thresholds.json",
                setup=bundle_thresholds("NaN")),
        Variant("thresholds of strings in a bundle", BINFER, "'high'",
                setup=bundle_thresholds('"high"')),
        Variant("NaN weights, infer", INFER + ["--out", "x.csv"], "NaN or infinite", setup=tampered_weights("nan")),
        Variant("NaN weights, predict", ["predict", "runs/base"], "fold 0", setup=tampered_weights("nan"), outputs=RUNS),
        Variant("NaN weights in a bundle", BINFER, "NaN or infinite", setup=both(tampered_weights("nan"), packed)),
        Variant("an ONNX graph of the wrong class count", OINFER, "has shape", setup=foreign_onnx("wrong classes")),
        Variant("an ONNX graph allocating 10^10 values", OINFER, "ConstantOfShape", setup=foreign_onnx("allocation")),
        Variant("an ONNX weight read from outside the bundle", OINFER, "../../base.yaml", setup=foreign_onnx("external")),
        Variant("dataset metadata that links to a secret", ["pack", "runs/base", "--out", "bundle", "--timing-images", "0"],
                "is a link", setup=linked_metadata),
        Variant("kernel metadata nested 100,000 deep", ["pack", "runs/base", "--out", "bundle", "--timing-images", "0",
                                                        "--notebook", "--provided", "kagglecv"], "nested too deep",
                setup=nested_metadata("bundle-notebook/kernel-metadata.json")),
        Variant("dataset metadata nested 100,000 deep", ["pack", "runs/base", "--out", "bundle", "--timing-images", "0"],
                "nested too deep", setup=nested_metadata("bundle/dataset-metadata.json")),
        Variant("a notebook with no wheelhouse to install from", ["pack", "runs/base", "--out", "p", "--timing-images",
                                                                  "0", "--notebook"], "--wheels"),
    ],
    "a user's metric that exits or lies": [
        Variant("sys.exit(0) in score", SCORE_FILE, "SystemExit", setup=metric_file("sys.exit(0)")),
        Variant("KeyboardInterrupt in score", SCORE_FILE, "KeyboardInterrupt", setup=metric_file("raise KeyboardInterrupt")),
        Variant("a score of '0.75'", SCORE_FILE, "returned '0.75'", setup=metric_file("return '0.75'")),
        Variant("a score of True", SCORE_FILE, "returned True", setup=metric_file("return True")),
    ],
    "memory and hangs": [
        Variant("init on decompression-bomb headers", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"],
                "could be read", setup=both(competition_copy(), bomb_images), bounded=True),
        Variant("init on FIFOs named like images", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"],
                "could be read", setup=both(competition_copy(), fifo_images), bounded=True),
        Variant("a 20,000-label submission scored by log_loss", ["score", "--submission", "data/big.csv", "--solution",
                                                                 "data/big.csv", "--metric", "log_loss"],
                "holds class names", setup=write("data/big.csv", "id,label\n" + "".join(f"{i},c{i}\n" for i in range(20_000))),
                bounded=True),
    ],
    "a folder the survey cannot match": [
        Variant("ISIC 2024 without train-image.hdf5: training JPEGs, test images only in an HDF5",
                ["init", "isic", "--metric", "roc_auc", "--out", "i.yaml"], "no HDF5 files named train",
                setup=isic_shaped),
        Variant("a test table whose ids name no image", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"],
                "data.test_image_dir", setup=both(competition_copy(), lambda w: shutil.rmtree(w / "comp" / "test"),
                                                  write("comp/test.csv", "id\nnope1\nnope2\n"))),
        Variant("a folder with its images only in an archive", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"],
                "no folder of images", setup=both(competition_copy(), lambda w: shutil.rmtree(w / "comp" / "train"),
                                                  lambda w: shutil.rmtree(w / "comp" / "test"),
                                                  write("comp/train.zip", b"PK\x05\x06" + bytes(18)))),
    ],
    "keys that failed mid-training": [
        Variant("a translation past the image", TRAIN + ["--set", "augment.batch=flip_translate", "--set",
                                                         "augment.translate=16", "--set", "augment.train=none"],
                "augment.translate", outputs=RUNS),
        Variant("a wsd decay under one epoch", TRAIN + ["--set", "train.sched=wsd", "--set", "train.decay_epochs=0.5"],
                "at least one epoch", outputs=RUNS),
        Variant("a plateau factor of 1.5", TRAIN + ["--set", "train.sched=plateau", "--set", "train.decay_rate=1.5"],
                "train.decay_rate", outputs=RUNS),
        Variant("lr inf", TRAIN + ["--set", "train.lr=inf"], "train.lr", outputs=RUNS),
        Variant("norm_lr_scale inf", TRAIN + ["--set", "train.norm_lr_scale=inf"], "norm_lr_scale", outputs=RUNS),
        Variant("1e14 epochs", TRAIN + ["--set", "train.epochs=99999999999999999"], "train.epochs", outputs=RUNS),
        Variant("pack --fit at an infinite speed", ["pack", "runs/base", "--out", "p", "--fit", "--images", "100",
                                                    "--max-minutes", "5", "--device-speed", "inf"], "finite"),
    ],
}
CATALOGUE.update(ROUND_FOUR)


# ----- readers: a COCO label file is someone else's input too -----------------------------------------------------------
def coco_labels(change: Callable[[dict], object] = lambda document: None) -> Callable[[Path], None]:
    """data/coco.json: the world's training table as a COCO label file (file names relative to data/train), changed."""
    def apply(world: Path) -> None:
        table = pd.read_csv(world / "data" / "train.csv", dtype=str)
        number = {name: index for index, name in enumerate(sorted(set(table["label"])))}
        document = {"images": [{"id": image_id, "file_name": f"{image_id}.png"} for image_id in table["id"]],
                    "annotations": [{"image_id": image_id, "category_id": number[label]}
                                    for image_id, label in zip(table["id"], table["label"])],
                    "categories": [{"id": index, "name": name} for name, index in number.items()]}
        change(document)
        (world / "data" / "coco.json").write_text(json.dumps(document))
    return apply


def sparse_file(relative: str, size: int) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        with (world / relative).open("wb") as stream:  # costs no disk; reading it would cost the whole size
            stream.truncate(size)
    return apply


def zipped(relative: str, member: str, mode: int | None = None) -> Callable[[Path], None]:
    def apply(world: Path) -> None:
        with zipfile.ZipFile(world / relative, "w") as archive:
            info = zipfile.ZipInfo(member)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, b"planted")
    return apply


COCO = ["folds", "base.yaml", "--set", "data.train_csv=data/coco.json", "--set", "data.image_col=image",
        "--set", "data.target=label", "--set", "folds.file=folds/coco.csv"]
READERS = {
    "COCO label files and archives": [
        Variant("an annotation of an image id that does not exist", COCO, "annotations[3].image_id 'nope' is no image",
                setup=coco_labels(lambda d: d["annotations"][3].update(image_id="nope")), outputs=("folds",)),
        Variant("a file name leaving the image folder", COCO, "outside", outputs=("folds",),
                setup=coco_labels(lambda d: d["images"][2].update(file_name="../../base.yaml"))),
        Variant("a category id that is no category, read by name", COCO + ["--set", "data.coco_label=name"],
                "category_id '99' is no category", outputs=("folds",),
                setup=coco_labels(lambda d: d["annotations"][0].update(category_id=99))),
        Variant("an image id of a float", COCO, "images[5].id is 1.5", outputs=("folds",),
                setup=coco_labels(lambda d: d["images"][5].update(id=1.5))),
        Variant("a label file of 1 GiB in one line", COCO, "a label file may have", outputs=("folds",),
                setup=sparse_file("data/coco.json", (1 << 30) + 1), bounded=True),
        Variant("a label file nested 100,000 deep", COCO, "not a JSON label file", outputs=("folds",),
                setup=write("data/coco.json", "[" * 100_000 + "]" * 100_000), bounded=True),
        Variant("init on an archive whose member leaves the folder", ["init", "comp", "--metric", "accuracy", "--out",
                                                                     "c.yaml"], "leaves the folder",
                setup=both(competition_copy(), lambda w: shutil.rmtree(w / "comp" / "train"),
                           zipped("comp/train.zip", "../../escaped.txt"))),
        Variant("init on an archive holding a link", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"],
                "is a link or a device", setup=both(competition_copy(), zipped("comp/train.zip", "train/x", 0o120777))),
        Variant("init on a .7z", ["init", "comp", "--metric", "accuracy", "--out", "c.yaml"], "does not unpack",
                setup=both(competition_copy(), write("comp/train.json.7z", b"7z\xbc\xaf\x27\x1c"))),
        Variant("a Herbarium folder without its test label file", ["init", "herb", "--metric", "f1_macro", "--out",
                                                                    "h.yaml"], "test/metadata.json",
                setup=lambda w: herbarium_shaped(w, with_test=False)),
    ],
}


def arrays(spoil: Callable[[Path], None]) -> Callable[[Path], None]:
    """data/arrays/<id>.npy (C x H x W float32) for every training row, from the world's images, then one spoiled."""
    def apply(world: Path) -> None:
        folder = world / "data" / "arrays"
        folder.mkdir()
        table = pd.read_csv(world / "data" / "train.csv", dtype=str)
        for image_id in table["id"]:
            pixels = np.asarray(Image.open(world / "data" / "train" / f"{image_id}.png")).astype(np.float32)
            np.save(folder / f"{image_id}.npy", pixels.reshape(*pixels.shape[:2], -1).transpose(2, 0, 1))
        spoil(folder / f"{table['id'][4]}.npy")
    return apply


def pickled_array(path: Path) -> None:
    np.save(path, np.array([{"planted": 1}], dtype=object), allow_pickle=True)


def huge_header(path: Path) -> None:
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (3, 1_000_000, 1_000_000)})


def hdf5_linking_out(world: Path) -> None:
    import h5py

    table = pd.read_csv(world / "data" / "train.csv", dtype=str)
    with h5py.File(world / "secret.h5", "w") as handle:
        handle["secret"] = np.bytes_(b"planted")
    with h5py.File(world / "data" / "train-image.h5", "w") as handle:
        for index, image_id in enumerate(table["id"]):
            if index == 4:
                handle[image_id] = h5py.ExternalLink(str(world / "secret.h5"), "secret")
            else:
                handle[image_id] = np.bytes_((world / "data" / "train" / f"{image_id}.png").read_bytes())


def json_of_one_long_line(world: Path) -> None:
    """data/big.json: a record that opens and never closes, 1 GiB long (sparse: costs no disk)."""
    path = world / "data" / "big.json"
    path.write_bytes(b'[{"id": "a", "band_1": [1.5, ')
    with path.open("r+b") as stream:
        stream.truncate((1 << 30) + 1)


NPY = ["folds", "base.yaml", "--set", "data.image_dir=data/arrays", "--set", "data.reader={kind: npy}",
       "--set", "folds.file=folds/npy.csv"]
HDF5 = ["folds", "base.yaml", "--set", "data.image_dir=data", "--set", "data.reader={kind: hdf5, path: train-image.h5}",
        "--set", "folds.file=folds/h5.csv"]
BANDS = ["folds", "base.yaml", "--set", "data.train_csv=data/big.json", "--set", "data.image_dir=null",
         "--set", "data.reader={kind: json_bands, bands: [band_1]}", "--set", "folds.file=folds/bands.csv"]
READERS["array, medical and column readers"] = [
    Variant("an .npy holding a pickled object", NPY, "holds object values", outputs=("folds",),
            setup=arrays(pickled_array)),
    Variant("an .npy declaring 3 x 10^12 values", NPY, "declares shape (3, 1000000, 1000000)", outputs=("folds",),
            setup=arrays(huge_header), bounded=True),
    Variant("an HDF5 whose dataset is an external link out of the file", HDF5, "is an external link, not a dataset",
            outputs=("folds",), setup=hdf5_linking_out),
    Variant("a parquet path leaving the image folder", ["folds", "base.yaml", "--set", "data.image_dir=data",
                                                        "--set", "data.reader={kind: parquet, path: '../*.parquet'}",
                                                        "--set", "folds.file=folds/p.csv"],
            "leads outside the image folder", outputs=("folds",)),
    Variant("a JSON bands file of 1 GiB in one record", BANDS, "is over 67,108,864 characters", outputs=("folds",),
            setup=json_of_one_long_line, bounded=True),
    Variant("a reader path naming an attribute of the id",
            NPY[:4] + ["--set", "data.reader={kind: npy, path: '{id.__class__}'}"],
            "may name only {id} and {id[N]}", setup=arrays(lambda path: None)),
]


NORMALIZATION = "runs/base/fold0/normalization.json"
READERS["untrusted run folders: a fold's normalisation"] = [
    Variant("a negative std", INFER + ["--out", "x.csv"], "fold0/normalization.json",
            setup=edit_json(NORMALIZATION, std=[-1.0, 1.0, 1.0])),
    Variant("a million channel means", INFER + ["--out", "x.csv"], "fold0/normalization.json",
            setup=edit_json(NORMALIZATION, mean=[0.0] * 1_000_000)),
    Variant("an unknown key", INFER + ["--out", "x.csv"], "fold0/normalization.json",
            setup=edit_json(NORMALIZATION, fetch="http://example.invalid")),
    Variant("an output scale on a class model", INFER + ["--out", "x.csv"],
            "its output scale does not fit a multiclass model",
            setup=edit_json(NORMALIZATION, output={"kind": "standard", "center": [0.0], "scale": [1.0]})),
    Variant("an output scale of zero", INFER + ["--out", "x.csv"], "fold0/normalization.json",
            setup=edit_json(NORMALIZATION, output={"kind": "range", "center": [0.0], "scale": [0.0]})),
]


def herbarium_shaped(world: Path, with_test: bool = True) -> None:
    """herb/: train/metadata.json over train/images/, a sample Id,Predicted of category ids (Herbarium 2021)."""
    coco_labels()(world)
    shutil.copytree(world / "data" / "train", world / "herb" / "train" / "images")
    document = json.loads((world / "data" / "coco.json").read_text())
    for image in document["images"]:
        image["file_name"] = f"images/{image['file_name']}"
    (world / "herb" / "train" / "metadata.json").write_text(json.dumps(document))
    (world / "herb" / "sample_submission.csv").write_text("Id,Predicted\n0,0\n1,0\n")
    if with_test:
        (world / "herb" / "test").mkdir()
        (world / "herb" / "test" / "metadata.json").write_text(json.dumps({"images": document["images"][:2]}))


CATALOGUE.update(READERS)


def numeric_labels(*cells: str) -> Callable[[Path], None]:
    """The training table's label column as numbers (``cells`` repeated down the rows): a regression target."""
    def apply(world: Path) -> None:
        table = pd.read_csv(world / "data/train.csv", dtype=str)
        table["label"] = [cells[row % len(cells)] for row in range(len(table))]
        table.to_csv(world / "data/train.csv", index=False)
    return apply


def paired_rows(world: Path) -> None:
    """A ``pair`` column joining rows two by two into answers, over labels that differ within a pair."""
    table = pd.read_csv(world / "data/train.csv", dtype=str)
    table["pair"] = [f"p{row // 2}" for row in range(len(table))]
    table["label"] = [str(row % 2) for row in range(len(table))]
    table.to_csv(world / "data/train.csv", index=False)


LONG = ["folds", "base.yaml", "--set", "data.train_csv=data/long.csv", "--set", "data.long_id='{id}_{class}'", "--set",
        "data.id_col=ID", "--set", "data.target=Label", "--set", "data.image_dir=null", "--set", "folds.file=folds/x.csv"]
REGRESSION = ["folds", "base.yaml", "--set", "data.task=regression", "--set", "folds.file=folds/x.csv"]
CATALOGUE["targets beyond one label"] = [
    Variant("text in a regression target", REGRESSION, "line 3 column 'label' = 'many'",
            setup=numeric_labels("1.5", "many", "2.5"), outputs=("folds",)),
    Variant("infinity in a regression target", REGRESSION, "'inf'", setup=numeric_labels("1.5", "2", "inf"),
            outputs=("folds",)),
    Variant("empty cells in a regression target", REGRESSION, "rows with an empty or NaN target: line 4",
            setup=numeric_labels("1.5", "2", ""), outputs=("folds",)),
    Variant("a regression target of one value", REGRESSION, "holds one value (3.5)", setup=numeric_labels("3.5"),
            outputs=("folds",)),
    Variant("a regression loss on classes", [*TRAIN, "--set", "train.loss=mse"], "mse is a regression loss",
            outputs=RUNS),
    Variant("mixup on a regression target", [*TRAIN, "--set", "data.task=regression", "--set", "train.mixup=0.2"],
            "train.mixup", setup=numeric_labels("1.5", "2", "7"), outputs=RUNS),
    Variant("a y_range that is no range", [*TRAIN, "--set", "data.task=regression", "--set", "data.y_range=[5,1]"],
            "data.y_range", setup=numeric_labels("1.5", "2", "7"), outputs=RUNS),
    Variant("an answer whose images disagree on the target",
            ["folds", "base.yaml", "--set", "data.answer_id='{pair}'", "--set", "folds.file=folds/x.csv"],
            "answers ({pair}) whose images have different targets: 'p0'", setup=paired_rows, outputs=("folds",)),
    Variant("an answer_id naming a column the table lacks",
            ["folds", "base.yaml", "--set", "data.answer_id='{patient}_{side}'", "--set", "folds.file=folds/x.csv"],
            "column(s) 'patient', 'side' not found", outputs=("folds",)),
    Variant("an answer_id without a column", ["folds", "base.yaml", "--set", "data.answer_id=patient"],
            "data.answer_id: expected table columns in braces", outputs=("folds",)),
    Variant("a long id that does not parse", LONG, "ids do not fit data.long_id '{id}_{class}': line 4 'IDc'",
            setup=write("data/long.csv", "ID,Label\nIDa_any,1\nIDa_sub,0\nIDc,1\n"), outputs=("folds",)),
    Variant("a long table without a pair", LONG, "pairs have no row: 'IDb sub'",
            setup=write("data/long.csv", "ID,Label\nIDa_any,1\nIDa_sub,0\nIDb_any,1\n"), outputs=("folds",)),
    Variant("a long table giving a pair twice", LONG, "given more than once: 'IDa any'",
            setup=write("data/long.csv", "ID,Label\nIDa_any,1\nIDa_sub,0\nIDa_any,0\n"), outputs=("folds",)),
    Variant("a head of one class", ["folds", "base.yaml", "--set", "data.task=heads", "--set",
                                    "data.target=[label,other]", "--set", "folds.file=folds/x.csv"],
            "head 'other' holds one class ('x')",
            setup=lambda w: pd.read_csv(w / "data/train.csv", dtype=str).assign(other="x").to_csv(
                w / "data/train.csv", index=False), outputs=("folds",)),
    Variant("a finer label's map that misses a fine class",
            ["folds", "base.yaml", "--set", "data.target=coarse", "--set",
             "data.finer={column: label, to_target: {nothing: x}}", "--set", "folds.file=folds/x.csv"],
            "data.finer.to_target has no class for the fine classes",
            setup=lambda w: pd.read_csv(w / "data/train.csv", dtype=str).assign(coarse="x").to_csv(
                w / "data/train.csv", index=False), outputs=("folds",)),
    Variant("a run.json whose target range runs backwards", ["submit", "runs/base", "--sample", "data/sample.csv"],
            "target_range", setup=edit_json("runs/base/run.json", target_range={"label": [5.0, 1.0]}),
            outputs=("submissions",)),
]


def featured(train: dict | None = None, test: dict | None = None, drop: str | None = None) -> Callable[[Path], None]:
    """Feature columns beside the images (age, site, patient) in both tables, named in both runs' data.features;
    ``train``/``test``: {row: {column: value}} planted after, ``drop``: a column the test table then lacks."""
    def apply(world: Path) -> None:
        for name, planted in (("train", train), ("test", test)):
            frame = pd.read_csv(world / f"data/{name}.csv", dtype=str)
            frame["age"] = [str(20 + index % 50) for index in range(len(frame))]
            frame["site"] = ["arm" if index % 2 else "leg" for index in range(len(frame))]
            frame["patient"] = [f"p{index // 4}" for index in range(len(frame))]
            for row, cells in (planted or {}).items():
                for column, value in cells.items():
                    frame.loc[row, column] = value
            dropped = frame.drop(columns=[drop] if drop and name == "test" else [])
            dropped.to_csv(world / f"data/{name}.csv", index=False)
        for run in ("base", "other"):
            path = world / f"runs/{run}/config.yaml"
            config = yaml.safe_load(path.read_text())
            config["data"]["features"] = {"numeric": ["age"], "categorical": ["site"]}
            path.write_text(yaml.safe_dump(config))
    return apply


def stacked(change: str = "") -> Callable[[Path], None]:
    """``kagglecv stack runs/base`` on the featured world, then its fold-0 model or recipe altered."""
    def apply(world: Path) -> None:
        featured()(world)
        code, output = _run(["stack", "runs/base", "--name", "m", "--rounds", "5"], world)
        assert code == 0, output
        model = world / "runs/stack-m/fold0/stack-0.txt"
        if change == "garbage":
            model.write_text("tree\nversion=v4\nnum_class=10\n{ not a model")
        elif change == "other features":
            code, output = _run(["stack", "runs/base", "runs/other", "--name", "two", "--rounds", "5"], world)
            assert code == 0, output
            shutil.copy(world / "runs/stack-two/fold0/stack-0.txt", model)
        elif change == "members":
            edit_json("runs/stack-m/stack.json", members=["someone-else"])(world)
    return apply


STACK = ["stack", "runs/base", "--name", "x", "--rounds", "5"]
STACK_INFER = ["infer", "runs/stack-m", "--test", "data/test.csv", "--images", "data/test", "--out", "x.csv"]
CATALOGUE["the table beside the image"] = [
    Variant("text in a feature column of numbers", STACK, "column 'age' line 4: 'forty'",
            setup=featured(train={2: {"age": "forty"}})),
    Variant("a test category the training rows never have", STACK, "categories the training table never has: 'tail'",
            setup=featured(test={0: {"site": "tail"}})),
    Variant("a feature column the test table lacks", STACK, "test.csv: no column 'age'", setup=featured(drop="age")),
    Variant("a group column with an empty cell", [*STACK, "--group", "patient"], "group column 'patient' is empty on "
            "line 3", setup=featured(train={1: {"patient": ""}})),
    Variant("a stack over runs made with other folds", ["stack", "runs/base", "runs/other"], "other folds",
            setup=both(featured(), edit_json("runs/other/run.json", folds_sha256="0" * 64))),
    Variant("an unknown second-stage model", [*STACK, "--model", "randomforest"], "--model 'randomforest'",
            setup=featured()),
    Variant("a support vector regression on classes", [*STACK, "--model", "svr"], "support vector", setup=featured()),
    Variant("a stack name that leaves the runs folder", [*STACK[:2], "--name", "../../escape"], "plain name",
            setup=featured()),
    Variant("embeddings whose rows do not match their ids file", [*STACK, "--embeddings"], "oof.npy",
            setup=both(featured(), write("runs/base/embeddings/oof_ids.csv", "id,fold\na,0\n"),
                       lambda w: np.save(w / "runs/base/embeddings/oof.npy", np.zeros((3, 4), dtype=np.float32)))),
    Variant("a stack setting out of its range", [*STACK, "--model", "ridge", "--alpha", "0"], "--alpha 0.0: input "
            "should be greater than 0", setup=featured()),
    Variant("a stack's model file that is no model", STACK_INFER, "stack-0.txt: not a lightgbm model",
            setup=stacked("garbage")),
    Variant("a stack's model file of another stack's features", STACK_INFER, "stack-0.txt", setup=stacked(
        "other features")),
    Variant("a stack.json naming other members", STACK_INFER, "fitted on members 'someone-else'",
            setup=stacked("members")),
]


IDENTITY = ["run", "base.yaml", "-s", "experiment=ident", "-s", "model.identity.width=8", "-s",
            "predict.identities.top_k=3", "-s", "metric=map@3"]
IDENTITY_INFER = ["infer", "runs/ident", "--test", "data/test.csv", "--images", "data/test", "--out", "x.csv"]


def identified(gallery: Callable[[np.ndarray], np.ndarray] | None = None) -> Callable[[Path], None]:
    """An identity run (ArcFace head, neighbours) trained in the world; ``gallery``: its fold-0 gallery replaced by
    what this makes of it."""
    def apply(world: Path) -> None:
        code, output = _run(IDENTITY, world)
        assert code == 0, output
        path = world / "runs/ident/fold0/gallery.npy"
        np.save(path, gallery(np.load(path)), allow_pickle=True)
    return apply


def _with_nan(values: np.ndarray) -> np.ndarray:
    values[1, 0] = np.nan
    return values


CATALOGUE["identities"] = [
    Variant("an identity column of one row per identity", IDENTITY, "each of the 48 identities has one row",
            setup=lambda w: pd.read_csv(w / "data/train.csv", dtype=str).assign(label=lambda f: "w" + f["id"]).to_csv(
                w / "data/train.csv", index=False)),
    Variant("a reserved label that is also a training identity", [*IDENTITY, "-s", "predict.identities.new_label=three"],
            "'three' is a training identity"),
    Variant("k larger than the gallery", [*IDENTITY, "-s", "predict.identities.top_k=50"],
            "top_k: 50 identities asked of a table of 10"),
    Variant("a gallery with NaN embeddings", IDENTITY_INFER, "gallery.npy: holds NaN", setup=identified(_with_nan)),
    Variant("a pickled neighbour index in place of the gallery", IDENTITY_INFER, "gallery.npy",
            setup=identified(lambda values: np.array([{"index": "pickled"}] * len(values), dtype=object))),
]


VARIANTS = [pytest.param(variant, id=f"{kind}: {variant.name}") for kind, variants in CATALOGUE.items()
            for variant in variants]


def test_every_class_has_at_least_three_variants():
    assert all(len(variants) >= 3 for variants in CATALOGUE.values()), {k: len(v) for k, v in CATALOGUE.items()}
    for kind in ("outputs over inputs", "untrusted run folders", "bounds", "tracebacks"):  # round three: four each
        assert len(CATALOGUE[kind]) >= 4, kind


MEMORY_MARGIN = 3 << 29  # 1.5 GiB above the address space of kagglecv's imports, torch included
TIME_LIMIT = 120


@functools.cache
def import_baseline() -> int:
    """The peak address space (bytes) of a process that imports kagglecv's command line and torch, as every
    command may: a CUDA build of torch maps gigabytes it never touches, so the limit is set above this."""
    code = ("import torch, kagglecv.cli, kagglecv.data.table, pandas; "
            "print(next(line for line in open('/proc/self/status') if line.startswith('VmPeak')).split()[1])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIME_LIMIT, check=True)
    return int(result.stdout.strip()) * 1024


def _run_bounded(args: list[str], cwd: Path) -> tuple[int, str]:
    """``kagglecv ARGS`` in a subprocess whose address space is capped just above the imports' own, with a time
    limit: a bound that acts only after the work (a MemoryError, a machine out of memory) fails here."""
    limit = import_baseline() + MEMORY_MARGIN
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            f"sys.argv = ['kagglecv', *{args!r}]; from kagglecv.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=TIME_LIMIT)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_hostile_input_is_one_clear_error_and_changes_nothing_outside_the_outputs(world, tmp_path, variant):
    here = tmp_path / "w"
    shutil.copytree(world, here, symlinks=True)
    variant.setup(here)
    before = snapshot(here, variant.outputs)
    outside_before = sorted(p.name for p in tmp_path.parent.iterdir())
    code, output = (_run_bounded if variant.bounded else _run)(variant.args, here)
    assert code != 0, output
    assert "Traceback" not in output, output
    assert variant.expect in output, output
    assert output.count("error:") == 1, output
    assert snapshot(here, variant.outputs) == before, "a file outside the command's output folders changed"
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == outside_before, "something was written beside the world"
    for escaped in ("/tmp/kagglecv-esc", "/tmp/kagglecv-train.csv", "/tmp/ens-kagglecv-esc"):
        assert not Path(escaped).exists()


def test_an_ensemble_name_with_dots_never_touches_the_member_run(world, tmp_path):
    here = tmp_path / "w"
    shutil.copytree(world, here)
    before = snapshot(here / "runs" / "base", ())
    code, output = _run(["ensemble", "runs/base", "runs/other", "--name", "x/../base"], here)
    assert code == 2 and "expected a plain name" in output, output
    assert snapshot(here / "runs" / "base", ()) == before
    assert sorted(p.name for p in (here / "runs").iterdir() if not p.name.startswith(".")) == ["base", "other"]


def test_a_submission_name_never_overwrites_the_training_table(world, tmp_path):
    here = tmp_path / "w"
    shutil.copytree(world, here)
    table = (here / "data" / "train.csv").read_bytes()
    for name in ("../data/train", str(here / "data" / "train")):
        code, output = _run(["submit", "runs/base", "--sample", "data/sample.csv", "--name", name], here)
        assert code == 2 and "not a path" in output, output
    code, output = _run(["submit", "runs/base", "--sample", "data/sample.csv", "--out-dir", "data", "--name", "train"], here)
    assert code == 2 and "input of this command" in output, output
    assert (here / "data" / "train.csv").read_bytes() == table


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    import time

    (tmp_path / "bomb.yaml").write_text(laughs(depth=12))
    started = time.perf_counter()
    code, output = _run(["config", "show", "bomb.yaml"], tmp_path)
    assert code == 2 and "expands to more than" in output, output
    assert time.perf_counter() - started < 5, "the bound acts before anything is expanded"
