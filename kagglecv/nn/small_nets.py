"""Networks for 28-64 px images, registered with timm under plain names (``model.name: airbench_cifar``).

``airbench_cifar`` is the net of the CIFAR-10 speed runs (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single
GPU", arXiv:2404.00498, and KellerJordan/cifar10-airbench ``airbench94.py``): a 2x2 convolution whose filters whiten
the training images' patches (fixed, not trained), then three groups of conv-pool-BatchNorm-GELU-conv-BatchNorm-GELU
(widths 64, 256, 256), a global max-pool and a bias-free linear classifier scaled by 1/9. As there, BatchNorm scales
are fixed at 1 (only the shifts train), its running statistics track fast (momentum 0.4), and each convolution
starts as a partial identity (Dirac). The whitening filters are computed from training images before the first
step (:meth:`AirbenchNet.init_whitening`, called by the fold's set-up for any model that has it); they are a
buffer, so they are saved with the weights and no optimizer, freezing rule or weight decay touches them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from kagglecv.core.errors import ConfigError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
WHITENING_EPS = 5e-4  # airbench94's eps added to the patch covariance's eigenvalues


class ShiftNorm(nn.Module):
    """BatchNorm with its scale fixed at 1 and a trained shift (airbench's BatchNorm with ``weight.requires_grad``
    off, written so that no per-epoch freezing rule can turn the scale back on)."""

    def __init__(self, channels: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, momentum=momentum, eps=eps, affine=False)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.bias[None, :, None, None]


def _dirac_conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels_in, channels_out, kernel_size=3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:channels_in])
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(_dirac_conv(channels_in, channels_out), nn.MaxPool2d(2), ShiftNorm(channels_out), nn.GELU(),
                         _dirac_conv(channels_out, channels_out), ShiftNorm(channels_out), nn.GELU())


class AirbenchNet(nn.Module):
    min_input_size = 9  # 2x2 whitening, then three 2x2 max-pools: 8 px would leave nothing to pool

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                 widths: tuple[int, int, int] = (64, 256, 256), whiten_kernel: int = 2):
        super().__init__()
        self.num_classes, self.num_features, self.drop_rate = num_classes, widths[-1], drop_rate
        whiten_width = 2 * in_chans * whiten_kernel ** 2
        weight = torch.empty(whiten_width, in_chans, whiten_kernel, whiten_kernel)
        nn.init.kaiming_normal_(weight)  # replaced by the whitening filters before training
        self.register_buffer("whiten_weight", weight)
        self.whiten_bias = nn.Parameter(torch.zeros(whiten_width))
        self.layers = nn.Sequential(ConvGroup(whiten_width, widths[0]), ConvGroup(widths[0], widths[1]),
                                    ConvGroup(widths[1], widths[2]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[-1], num_classes, bias=False) if num_classes else nn.Identity()
        self.pretrained_cfg = {"input_size": (in_chans, 32, 32), "interpolation": "bilinear", "crop_pct": 1.0,
                               "crop_mode": "center", "num_classes": num_classes,
                               "mean": CIFAR_MEAN if in_chans == 3 else (0.5,), "std": CIFAR_STD if in_chans == 3 else (0.5,)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(F.conv2d(x, self.whiten_weight, self.whiten_bias))
        return self.pool(self.layers(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x)
        if self.drop_rate:
            features = F.dropout(features, self.drop_rate, self.training)
        return self.head(features) / 9 if self.num_classes else features

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes, bias=False) if num_classes else nn.Identity()

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor) -> None:
        """Set the first layer's filters to whiten the ``kernel x kernel`` patches of ``images`` (N, C, H, W, as the
        network sees them): each eigenvector of the patch covariance divided by the square root of its eigenvalue,
        and its negative (airbench94's ``init_whitening_conv``)."""
        channels, kernel = self.whiten_weight.shape[1], self.whiten_weight.shape[2]
        width = channels * kernel * kernel
        covariance, count = torch.zeros(width, width, dtype=torch.float64), 0
        for chunk in images.split(256):  # float64 patches of 5,000 images at once would take half a gigabyte
            patches = chunk.float().unfold(2, kernel, 1).unfold(3, kernel, 1)     # N, C, H', W', k, k
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, width).double().cpu()
            covariance += patches.T @ patches
            count += len(patches)
        covariance /= count
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp(min=0) + WHITENING_EPS)[:, None]).flip(0)
        filters = filters.reshape(-1, channels, kernel, kernel)
        self.whiten_weight.copy_(torch.cat([filters, -filters]).to(self.whiten_weight))


@register_model
def airbench_cifar(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                   drop_path_rate: float | None = None, **timm_options) -> AirbenchNet:
    """The airbench94 network (about 1.97 M parameters at 3 channels and 10 classes)."""
    if pretrained:
        raise ConfigError("model.pretrained: airbench_cifar has no published weights; set it to false or to a "
                          "weights file")
    if drop_path_rate:
        raise ConfigError("model.drop_path_rate: airbench_cifar has no residual paths to drop")
    return AirbenchNet(num_classes, in_chans, drop_rate)
