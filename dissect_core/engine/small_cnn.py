"""``small_cnn``: a small convolutional network for 28×28 grayscale images.

The architecture of the built-in demo (``dissect_core.runs.demo_runs``), which the project
trains on Fashion-MNIST; any checkpoint of it loads as
``--target_model small_cnn --target_checkpoint FILE`` (the number of classes and the
width are read from the checkpoint). Three 3×3 conv blocks (conv → batch norm →
ReLU, named ``conv1``–``conv3``; 2×2 max-pooling between them, so their maps are
28×28, 14×14 and 7×7), global average pooling and a linear classifier ``fc``.
"""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from dissect_core.common.errors import InvalidInputError

NAME = "small_cnn"
IMAGE_SIZE = 28
# Pixel mean and standard deviation of the Fashion-MNIST training images (on [0, 1]).
MEAN, STD = 0.2860, 0.3530


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=False),  # a hooked block's output must not be overwritten later
    )


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.conv1 = _block(1, width)
        self.conv2 = _block(width, 2 * width)
        self.conv3 = _block(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv1(x))
        x = self.pool(self.conv2(x))
        x = self.conv3(x)
        return self.fc(x.mean(dim=(2, 3)))


def preprocess() -> Callable[[Image.Image], torch.Tensor]:
    """Grayscale, 28×28, normalised as in training."""
    return T.Compose([T.Grayscale(), T.Resize((IMAGE_SIZE, IMAGE_SIZE)), T.ToTensor(), T.Normalize((MEAN,), (STD,))])


def from_state_dict(state: dict[str, torch.Tensor], what: str) -> SmallCNN:
    """An untrained network shaped like ``state`` (width and classes read from it)."""
    if not {"conv1.0.weight", "fc.weight"} <= set(state):
        raise InvalidInputError(f"{what} is not a {NAME} checkpoint: it has no conv1.0.weight and fc.weight.")
    return SmallCNN(num_classes=int(state["fc.weight"].shape[0]), width=int(state["conv1.0.weight"].shape[0]))
