"""LeNet-5 (LeCun et al. 1998) for 32x32 colour images, as a plain ``nn.Module``: no timm registration.

kagglecv builds it by calling the class with the arguments it accepts (``num_classes``, ``in_chans``); a model
that took no ``num_classes`` would have its last ``nn.Linear`` replaced instead (README, "Your own networks").
ReLU and max-pooling stand in for the paper's scaled tanh and trainable subsampling, as in most course versions.
"""

from torch import nn


class LeNet5(nn.Module):
    """32 -> conv5 28 -> pool 14 -> conv5 10 -> pool 5 -> 400 -> 120 -> 84 -> classes."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))
