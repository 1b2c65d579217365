"""Small MNIST networks under a parameter budget, registered with timm so kagglecv builds them like any timm model.

The design is the usual one for the "99.4 % under 8k parameters" exercise: 3x3 convolutions with BatchNorm and
ReLU, a 1x1 "transition" convolution after the max-pool to cut channels, and global average
pooling into a 1x1 convolution in place of a dense layer. ``width`` scales every layer, giving the 20k and 50k
variants on the same plan.
"""

from timm.models import register_model
from torch import nn


def _block(in_channels: int, out_channels: int, dropout: float, kernel: int = 3, padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=padding, bias=False),
                         nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True), nn.Dropout2d(dropout))


class _GapClassifierNet(nn.Module):
    """Features, global average pooling, then a 1x1 convolution to the classes (timm's classifier methods)."""

    def __init__(self, features: nn.Sequential, num_features: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.num_classes, self.num_features = num_classes, num_features
        self.features = features
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Conv2d(num_features, num_classes, 1) if num_classes else nn.Identity()

    def forward(self, x):
        return self.classifier(self.drop(self.features(x))).flatten(1)

    def get_classifier(self):
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool=None):
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(self.num_features, num_classes, 1) if num_classes else nn.Identity()


class MnistNet(_GapClassifierNet):
    """28x28 -> 28 -> 28 -> pool 14 -> 1x1 -> 12 -> 10 -> 8 -> global average pool -> 1x1 conv to the classes
    (the first two convolutions padded: full resolution costs compute, not parameters)."""

    def __init__(self, widths=(10, 16, 10, 14, 16, 16), num_classes: int = 10, in_chans: int = 1,
                 drop_rate: float = 0.0, dropout: float = 0.0):
        c1, c2, t, c3, c4, c5 = widths
        features = nn.Sequential(
            _block(in_chans, c1, dropout, padding=1), _block(c1, c2, dropout, padding=1), nn.MaxPool2d(2),
            _block(c2, t, 0.0, kernel=1), _block(t, c3, dropout), _block(c3, c4, dropout), _block(c4, c5, 0.0),
            nn.AdaptiveAvgPool2d(1))
        super().__init__(features, c5, num_classes, drop_rate)


def _make(widths, kwargs) -> MnistNet:
    options = {key: kwargs[key] for key in ("num_classes", "in_chans", "drop_rate") if key in kwargs}
    return MnistNet(widths, **options)


@register_model
def mnist_8k(pretrained=False, **kwargs):
    return _make((10, 16, 10, 14, 16, 16), kwargs)


@register_model
def mnist_20k(pretrained=False, **kwargs):
    return _make((12, 24, 12, 20, 28, 28), kwargs)


@register_model
def mnist_50k(pretrained=False, **kwargs):
    return _make((16, 32, 16, 32, 48, 48), kwargs)


@register_model
def mnist_8k_v2(pretrained=False, **kwargs):
    return _make((10, 16, 10, 14, 16, 18), kwargs)

