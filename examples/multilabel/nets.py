"""A small CNN for multi-label images, registered with timm (``timm.create_model('small_cnn')`` works once this
file is imported). Four stages of 3x3 convolution, BatchNorm, ReLU and max-pooling, global average pooling, dropout
and one linear layer: about 100k parameters, 50 times fewer than resnet10t."""

from timm.models import register_model
from torch import nn


def _stage(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True), nn.MaxPool2d(2))


class SmallCnn(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128), num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2):
        super().__init__()
        channels = (in_chans, *widths)
        self.num_classes, self.num_features = num_classes, widths[-1]
        self.features = nn.Sequential(*(_stage(a, b) for a, b in zip(channels, channels[1:])),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        return self.fc(self.drop(self.features(x)))

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool=None):
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


@register_model
def small_cnn(pretrained=False, **kwargs):
    options = {key: kwargs[key] for key in ("num_classes", "in_chans", "drop_rate") if key in kwargs}
    return SmallCnn(**options)
