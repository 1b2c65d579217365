"""airbench94's training written out on its own, on the same fold as kagglecv's CIFAR-10 runs: what the reference
recipe reaches on this data, to tell kagglecv's translation of the recipe from the data's own ceiling.

The recipe is Keller Jordan's "94 % on CIFAR-10 in 3.29 seconds on a single GPU" (arXiv:2404.00498, the airbench94
script of KellerJordan/cifar10-airbench): batch 1,024, 9.9 epochs, Nesterov SGD with lr 11.5 and weight decay
0.0153 per 1,024 examples (momentum 0.85, the BatchNorm biases at 64x the rate), the loss summed over the batch with
label smoothing 0.2, the 23 % warmup from 0.2 to 1 then down to 0.07, Lookahead towards an EMA every 5 steps, the
whitening first layer (its bias trained for 3 epochs), alternating flips and 2 px reflect-padded crops, and the
six-view TTA at the end. Nothing of kagglecv's training code is used: only its arrays of the fold (the disk cache's
decoded images, the folds file), so both sides see the same 45,000 training and 5,000 validation images. On the
CPU the net runs in bf16 autocast with channels-last (the GPU script keeps fp16 weights); ``--float32`` runs it in
float32, to tell bf16's 8-bit mantissa from the data.

From the folder a fold trained in (``bench/accuracy_per_minute.py --out DIR``), alone or beside untimed work:
  cd DIR && /path/to/repo/.venv/bin/python /path/to/repo/bench/airbench_reference.py cifar10-fast.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from common import machine
from torch import nn

from kagglecv.core.config import load_config
from kagglecv.data.inputs import load_stage_inputs

MEAN, STD = torch.tensor((0.4914, 0.4822, 0.4465)), torch.tensor((0.2470, 0.2435, 0.2616))
MOMENTUM, BIAS_SCALER, LABEL_SMOOTHING, WHITEN_BIAS_EPOCHS = 0.85, 64.0, 0.2, 3
AUTOCAST = {"on": True}  # bf16 autocast; --float32 turns it off


def conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    layer = nn.Conv2d(channels_in, channels_out, 3, padding="same", bias=False)
    nn.init.dirac_(layer.weight.data[:channels_in])
    return layer


def norm(channels: int) -> nn.BatchNorm2d:
    layer = nn.BatchNorm2d(channels, momentum=0.4, eps=1e-12)
    layer.weight.requires_grad = False
    return layer


def group(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(conv(channels_in, channels_out), nn.MaxPool2d(2), norm(channels_out), nn.GELU(),
                         conv(channels_out, channels_out), norm(channels_out), nn.GELU())


def make_net() -> nn.Sequential:
    whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
    whiten.weight.requires_grad = False
    net = nn.Sequential(whiten, nn.GELU(), group(24, 64), group(64, 256), group(256, 256), nn.MaxPool2d(3),
                        nn.Flatten(), nn.Linear(256, 10, bias=False))
    return net.to(memory_format=torch.channels_last)


def whiten_from(layer: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0).reshape(12, 3, 2, 2).float()
    layer.weight.data[:] = torch.cat([filters, -filters])


def crops(padded: torch.Tensor, size: int, pad: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``size`` crop of each reflect-padded image (a shift of up to ``pad`` px each way)."""
    shifts = torch.randint(0, 2 * pad + 1, (len(padded), 2), generator=generator)
    out = torch.empty(len(padded), padded.shape[1], size, size, dtype=padded.dtype)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            out[chosen] = padded[chosen, :, dy:dy + size, dx:dx + size]
    return out


def logits_of(net: nn.Module, images: torch.Tensor, tta: bool) -> torch.Tensor:
    def mirrored(x):
        return 0.5 * net(x).float() + 0.5 * net(x.flip(-1)).float()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=AUTOCAST["on"]):
        out = []
        for chunk in images.split(1000):
            chunk = chunk.contiguous(memory_format=torch.channels_last)
            if not tta:
                out.append(net(chunk).float())
                continue
            padded = F.pad(chunk, (1, 1, 1, 1), mode="reflect")
            moved = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
            out.append(0.5 * mirrored(chunk) + 0.25 * (mirrored(moved[0]) + mirrored(moved[1])))
    return torch.cat(out)


def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, tta: bool = False) -> float:
    net.eval()
    result = (logits_of(net, images, tta).argmax(1) == labels).float().mean().item()
    net.train()
    return result


def fold_arrays(config_path: Path, fold: int):
    config = load_config(config_path)
    inputs = load_stage_inputs(config)
    pixels = torch.from_numpy(np.array(inputs.data.images.pixels)).permute(0, 3, 1, 2).float() / 255
    images = (pixels - MEAN[:, None, None]) / STD[:, None, None]
    labels = torch.from_numpy(np.asarray(inputs.data.targets, dtype=np.int64))
    train, valid = np.flatnonzero(inputs.fold_of != fold), np.flatnonzero(inputs.fold_of == fold)
    return images[train], labels[train], images[valid], labels[valid]


def train(args, train_images, train_labels, valid_images, valid_labels) -> dict:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = len(train_images) // args.batch
    total = math.ceil(steps_per_epoch * args.epochs)
    kilostep = 1024 * (1 + 1 / (1 - MOMENTUM))
    lr, wd = args.lr / kilostep, args.wd * args.batch / kilostep
    net = make_net()
    whiten_from(net[0], train_images[:5000])
    norm_biases = [p for name, p in net.named_parameters() if p.requires_grad and isinstance(
        net.get_submodule(name.rsplit(".", 1)[0]), nn.BatchNorm2d)]
    others = [p for p in net.parameters() if p.requires_grad and all(p is not q for q in norm_biases)]
    optimizer = torch.optim.SGD([dict(params=norm_biases, lr=lr * BIAS_SCALER, weight_decay=wd / (lr * BIAS_SCALER)),
                                 dict(params=others, lr=lr, weight_decay=wd / lr)], momentum=MOMENTUM, nesterov=True)
    warmup = int(total * 0.23)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: np.interp(step, [0, warmup, total],
                                                                                     [0.2, 1.0, 0.07]))
    slow = {key: value.clone() for key, value in net.state_dict().items()}
    flipped_half = torch.rand(len(train_images), generator=generator) < 0.5
    base = torch.where(flipped_half[:, None, None, None], train_images.flip(-1), train_images)
    padded = F.pad(base, (2, 2, 2, 2), mode="reflect")
    step, epochs, started, history = 0, math.ceil(args.epochs), time.perf_counter(), []
    for epoch in range(epochs):
        net[0].bias.requires_grad = epoch < WHITEN_BIAS_EPOCHS
        images = crops(padded, 32, 2, generator)
        images = images.flip(-1) if epoch % 2 else images
        order = torch.randperm(len(images), generator=generator)
        for index in range(steps_per_epoch):
            rows = order[index * args.batch:(index + 1) * args.batch]
            batch = images[rows].contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=AUTOCAST["on"]):
                loss = F.cross_entropy(net(batch).float() / 9, train_labels[rows], label_smoothing=LABEL_SMOOTHING,
                                       reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 5 == 0 or step >= total:
                decay = 1.0 if step >= total and step % 5 else 0.95 ** 5 * (step / total) ** 3
                with torch.no_grad():
                    for slow_value, value in zip(slow.values(), net.state_dict().values()):
                        if value.is_floating_point():
                            slow_value.lerp_(value, 1 - decay)
                            value.copy_(slow_value)
            if step >= total:
                break
        history.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - started, 1),
                        "val_accuracy": accuracy(net, valid_images, valid_labels)})
        print(json.dumps(history[-1]), flush=True)
    return {"history": history, "val_accuracy": history[-1]["val_accuracy"],
            "tta_val_accuracy": accuracy(net, valid_images, valid_labels, tta=True), "steps": total}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=float, default=9.9)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=11.5, help="per 1,024 examples, as airbench94's hyp")
    parser.add_argument("--wd", type=float, default=0.0153, help="per 1,024 examples, as airbench94's hyp")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float32", action="store_true", help="no bf16 autocast: float32 throughout (about 2x the time)")
    args = parser.parse_args()
    AUTOCAST["on"] = not args.float32
    arrays = fold_arrays(args.config, args.fold)
    print(json.dumps({"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                      "train_images": len(arrays[0]), "valid_images": len(arrays[2]), **train(args, *arrays)}))


if __name__ == "__main__":
    main()
