"""A dissection whose right answer is known by construction.

Every probe image is grey noise with one pure-coloured square. Unit k of the
target model's layer ``detect`` fires exactly on pixels of colour
``UNIT_COLOURS[k]`` (a 1×1 convolution + ReLU), so the correct label of unit k
is that colour's name, and its activation map is the square. The stand-in CLIP
encodes an image by the colours it shows and a concept as a one-hot vector, so
it "knows which concepts each image shows".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import transforms
from torchvision.ops.misc import Permute

from dissect_core.engine.clip import ClipModel
from dissect_core.engine.models import TargetModel

COLOURS = {
    "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1),
    "yellow": (1, 1, 0), "cyan": (0, 1, 1), "magenta": (1, 0, 1),
}
DISTRACTORS = ["dog", "car", "grass", "sky"]
VOCABULARY = list(COLOURS) + DISTRACTORS
# Units in a shuffled order, so a label can't be right by matching indices.
UNIT_COLOURS = ["cyan", "red", "magenta", "green", "yellow", "blue"]
IMAGE_SIZE = 32
PATCH = 12


def colour_detector(colour_names: list[str]) -> nn.Conv2d:
    """A 1×1 convolution whose output channel c is +0.5 on colour c and negative elsewhere."""
    conv = nn.Conv2d(3, len(colour_names), kernel_size=1)
    with torch.no_grad():
        for channel, name in enumerate(colour_names):
            pattern = torch.tensor(COLOURS[name], dtype=torch.float32)
            conv.weight[channel, :, 0, 0] = 2 * pattern - 1
            conv.bias[channel] = -(pattern.sum() - 0.5)
    return conv


class PlantedNet(nn.Module):
    def __init__(self, unit_colours: list[str] = UNIT_COLOURS):
        super().__init__()
        self.detect = nn.Sequential(colour_detector(unit_colours), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(len(unit_colours), 2)

    def forward(self, x):
        return self.fc(self.pool(self.detect(x)).flatten(1))


class PlantedChannelsLastNet(nn.Module):
    """The same detectors, Swin-style: the image goes channels-last and a Linear layer (a 1×1
    convolution over the last dimension) detects the colours, so ``detect`` emits
    (batch, height, width, units)."""

    def __init__(self, unit_colours: list[str] = UNIT_COLOURS):
        super().__init__()
        conv = colour_detector(unit_colours)
        linear = nn.Linear(3, len(unit_colours))
        with torch.no_grad():
            linear.weight.copy_(conv.weight[:, :, 0, 0])
            linear.bias.copy_(conv.bias)
        self.detect = nn.Sequential(Permute([0, 2, 3, 1]), linear, nn.ReLU())
        self.fc = nn.Linear(len(unit_colours), 2)

    def forward(self, x):
        return self.fc(self.detect(x).mean(dim=(1, 2)))


class ColourClip(nn.Module):
    """Image embedding: how much of each colour the image shows; text: one-hot concept."""

    def __init__(self):
        super().__init__()
        self.visual = nn.Sequential(colour_detector(list(COLOURS)), nn.ReLU())

    def encode_image(self, images):
        shown = self.visual(images).amax(dim=(2, 3)) * 2  # 1.0 for the colour present
        padding = torch.zeros(images.shape[0], len(DISTRACTORS))
        return torch.cat([shown, padding], dim=1) + 0.05

    def encode_text(self, tokens):
        return nn.functional.one_hot(tokens[:, 0], len(VOCABULARY)).float()


def tokenize(texts):
    return torch.tensor([[VOCABULARY.index(t)] + [0] * 76 for t in texts])


def planted_target(name: str = "planted-net", channels_last: bool = False) -> TargetModel:
    module = PlantedChannelsLastNet() if channels_last else PlantedNet()
    weights = "planted-channels-last-v1" if channels_last else "planted-weights-v1"
    return TargetModel(name, module.eval(), transforms.ToTensor(), weights, "tests/planted.py")


def planted_clip() -> ClipModel:
    return ClipModel("colour-clip:planted", ColourClip().eval(), transforms.ToTensor(), tokenize,
                     torch.device("cpu"), "planted", 77)


def make_planted_probe(root: Path, per_colour: int = 40, seed: int = 0) -> dict[str, tuple[str, tuple]]:
    """Write PNGs (lossless, so colours stay exact); returns {relative path: (colour, patch box)}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for colour, rgb in COLOURS.items():
        folder = root / colour
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_colour):
            pixels = np.clip(0.5 + rng.normal(0, 0.05, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 1)
            top, left = rng.integers(0, IMAGE_SIZE - PATCH, size=2)
            pixels[top:top + PATCH, left:left + PATCH] = rgb
            relative = f"{colour}/{i:03d}.png"
            Image.fromarray((pixels * 255).round().astype(np.uint8)).save(root / relative)
            truth[relative] = (colour, (int(top), int(left), PATCH, PATCH))
    return truth


def write_concepts(path: Path, concepts=VOCABULARY) -> Path:
    path.write_text("\n".join(concepts) + "\n")
    return path
