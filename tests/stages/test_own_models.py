"""Own architectures from a Python file: built through timm's registry or as plain modules, copied into the run,
rebuilt from that copy, and every way the file can be wrong is one clear error."""

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from kagglecv.cli import app
from kagglecv.core.config import ModelConfig, validate_config
from kagglecv.core.console import Console
from kagglecv.core.errors import ConfigError, KagglecvError
from kagglecv.nn import own_models
from kagglecv.nn.models import create_model, load_pretrained_file, parameter_counts
from kagglecv.stages.folds import make_folds
from kagglecv.stages.train import train_run
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
QUIET = Console(quiet=True)
runner = CliRunner()

NETS = '''
from timm.models import register_model
from torch import nn


class OwnTiny(nn.Module):
    def __init__(self, num_classes=10, in_chans=3, drop_rate=0.0):
        super().__init__()
        self.num_classes, self.num_features = num_classes, {width}
        self.features = nn.Sequential(nn.Conv2d(in_chans, {width}, 3, padding=1), nn.BatchNorm2d({width}), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear({width}, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        return self.fc(self.features(x))

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes, global_pool=None):
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


@register_model
def own_tiny_{tag}(pretrained=False, **kwargs):
    return OwnTiny(**{{k: v for k, v in kwargs.items() if k in ("num_classes", "in_chans", "drop_rate")}})


class PlainNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 7))

    def forward(self, x):
        return self.body(x)
'''


def write_nets(folder: Path, tag: str, width: int = 6) -> Path:
    path = folder / "nets.py"
    path.write_text(NETS.format(width=width, tag=tag))
    return path


def build(name: str, outputs: int = 3, **model) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_model(ModelConfig(name=name, img_size=16, **model), outputs)


def test_registered_and_plain_models_build_with_the_task_outputs(tmp_path):
    nets = write_nets(tmp_path, "a")
    registered = build(f"{nets}:own_tiny_a")
    assert type(registered).__name__ == "OwnTiny" and registered(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    plain = build(f"{nets}:PlainNet", outputs=5)  # no num_classes argument: its last Linear is resized
    assert plain.body[-1].out_features == 5 and plain(torch.zeros(1, 3, 16, 16)).shape == (1, 5)
    headed = build(f"{nets}:own_tiny_a", head={"hidden": [8]})
    assert headed(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    assert parameter_counts(registered, ModelConfig(name="x"))["total"] == sum(p.numel() for p in registered.parameters())


def test_the_examples_mnist_nets_are_within_their_budgets():
    for name, budget in (("mnist_8k", 8_000), ("mnist_8k_v2", 8_000), ("mnist_20k", 20_000), ("mnist_50k", 50_000)):
        model = build(f"{ROOT / 'examples/mnist/nets.py'}:{name}", outputs=10, in_chans=1)
        total = sum(p.numel() for p in model.parameters())
        assert budget * 0.6 < total < budget, (name, total)
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("content, name, message", [
    (None, "absent", r"own-model file not found: .*missing\.py"),
    ("def broken(:\n    pass\n", "broken", r"bad\.py:1: syntax error"),
    ("import torch\n\nraise RuntimeError('no GPU here')\n", "x", r"bad\.py:3: running the file failed: RuntimeError: no GPU"),
    ("from torch import nn\n\nclass Net(nn.Module):\n    pass\n\ndef helper():\n    pass\n", "Nett",
     r"bad\.py defines no model 'Nett'; it registers none, and defines Net, helper"),
])
def test_a_bad_own_model_file_is_one_clear_error(tmp_path, content, name, message):
    path = tmp_path / ("missing.py" if content is None else "bad.py")
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        build(f"{path}:{name}")


def test_a_model_over_max_params_is_refused_before_training(tmp_path, digits_root):
    nets = write_nets(tmp_path, "b", width=12)
    raw = tiny_config(tmp_path, digits_root, model={"name": f"{nets}:own_tiny_b", "max_params": 100})
    config = validate_config(raw)
    make_folds(config)
    with pytest.raises(KagglecvError, match=r"model.max_params: .*own_tiny_b has 490 parameters, over the budget of 100"):
        train_run(config, console=QUIET)
    assert not (tmp_path / "runs" / "tiny-multiclass" / "run.json").exists()


def test_an_own_model_trains_predicts_ensembles_and_submits_without_its_file(tmp_path, digits_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    nets = write_nets(tmp_path / "src", "c")
    configs = []
    for seed in (1, 2):
        raw = tiny_config(tmp_path, digits_root, rows=48, model={"name": "src/nets.py:own_tiny_c", "img_size": 16},
                          train={"seed": seed})
        raw["experiment"] = f"own-{seed}"
        (tmp_path / f"c{seed}.yaml").write_text(yaml.safe_dump(raw))
        configs.append(tmp_path / f"c{seed}.yaml")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore: the notice is printed all the same
            result = runner.invoke(app, ["run", str(configs[-1])])
        assert result.exit_code == 0, result.output
        notice = re.search(r"notice: running model code src/nets\.py \(sha256 [0-9a-f]{16}\)", result.output)
        assert (notice is not None) == (seed == 1), result.output
    run = tmp_path / "runs" / "own-1"
    info = json.loads((run / "run.json").read_text())
    assert info["model_file"]["sha256"] == __import__("hashlib").sha256(nets.read_bytes()).hexdigest()
    assert (run / "model_code.py").read_bytes() == nets.read_bytes()
    assert info["params"]["total"] == info["params"]["trainable"] > 0
    before = pd.read_csv(run / "oof.csv")

    nets.unlink()  # a colleague without the file: the run's copy rebuilds the model
    own_models._LOADED.clear()  # as in a new process
    result = runner.invoke(app, ["predict", str(run)])
    assert result.exit_code == 0, result.output
    assert re.search(r"notice: running model code .*runs/own-1/model_code\.py", result.output), result.output
    np.testing.assert_allclose(pd.read_csv(run / "oof.csv").iloc[:, 2:], before.iloc[:, 2:], atol=1e-6)
    result = runner.invoke(app, ["ensemble", str(run), str(tmp_path / "runs" / "own-2"), "--method", "mean"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["pack", "runs/ens-mean-2", "--out", "bundle", "--timing-images", "0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bundle" / "members" / "own-1" / "model_code.py").read_bytes() == (run / "model_code.py").read_bytes()
    result = runner.invoke(app, ["infer", "bundle", "--test", "test.csv", "--images", str(digits_root / "digits" / "test"),
                                 "--out", "inferred.csv"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(pd.read_csv(tmp_path / "inferred.csv").iloc[:, 1:],
                               pd.read_csv(tmp_path / "runs" / "ens-mean-2" / "test.csv").iloc[:, 1:], atol=1e-6)
    sample = pd.DataFrame({"id": pd.read_csv(tmp_path / "test.csv", dtype=str)["id"], "label": "0"})
    sample.to_csv(tmp_path / "sample.csv", index=False)
    result = runner.invoke(app, ["submit", str(run), "--sample", "sample.csv"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", "runs", "--no-pictures"])
    assert result.exit_code == 0, result.output
    row = next(line for line in (tmp_path / "runs" / "report.md").read_text().splitlines() if "| own-1 | run |" in line)
    assert f"| src/nets.py:own_tiny_c | {info['params']['total']} |" in row, "the parameter count is on the leaderboard"


def test_a_changed_model_file_on_resume_is_shown_like_a_changed_config(tmp_path, digits_root):
    nets = write_nets(tmp_path, "d")
    raw = tiny_config(tmp_path, digits_root, rows=48, model={"name": f"{nets}:own_tiny_d", "img_size": 16})
    config = validate_config(raw)
    make_folds(config)
    train_run(config, [0], console=QUIET)
    nets.write_text(nets.read_text().replace("nn.ReLU()", "nn.GELU()"))
    with pytest.raises(KagglecvError, match=r"another config: model file .*nets\.py: sha256 [0-9a-f]{12} -> [0-9a-f]{12}"):
        train_run(config, [1], console=QUIET)


def test_small_input_keeps_a_4x4_map_at_32_px_and_pretrained_weights_load(tmp_path):
    plain = build("resnet10t", outputs=10).eval()
    small = build("resnet10t", outputs=10, small_input=True).eval()
    assert plain.forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] == 1
    assert small.forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] == 4
    from safetensors.torch import save_file
    save_file(plain.state_dict(), tmp_path / "plain.safetensors")
    load_pretrained_file(small, tmp_path / "plain.safetensors")
    assert torch.equal(small.conv1[0].weight, plain.conv1[0].weight)
    with pytest.raises(ConfigError, match="model.small_input: defined for timm's ResNet family"):
        build("test_vit", small_input=True)
