"""Layer output layouts: the names a user declares (``--layer_layout LAYER=LAYOUT``).

Plain data, without torch, so the CLI's help lists them; ``dissect_core.engine.recording``
reads layouts from models and brings every output to its canonical form.
"""
from __future__ import annotations

from dataclasses import dataclass

from dissect_core.common.errors import InvalidInputError
from dissect_core.common.registry import Registry


@dataclass(frozen=True)
class Layout:
    """How a layer's output tensor is laid out (see ``dissect_core.engine.recording``)."""

    name: str
    dims: int  # number of dimensions of the output, batch included
    spatial: bool  # positions are (height, width) dimensions (token outputs get maps too: recording.spatial_maps)
    tokens: bool  # a sequence of tokens per image
    shape: str  # the dimensions in words, for messages


LAYOUTS: Registry[Layout] = Registry("layer layout")
CHANNELS_FIRST = LAYOUTS.add(
    "channels_first", Layout("channels_first", 4, True, False, "(batch, units, height, width)"),
    "4-D maps with the units first: convolutional layers (ResNet, VGG, ...)")
CHANNELS_LAST = LAYOUTS.add(
    "channels_last", Layout("channels_last", 4, True, False, "(batch, height, width, units)"),
    "4-D maps with the units last: Swin's stages, ConvNeXt's block internals")
TOKENS = LAYOUTS.add(
    "tokens", Layout("tokens", 3, False, True, "(batch, tokens, units)"),
    "a sequence of tokens per image: ViT's encoder layers")
FLAT = LAYOUTS.add(
    "flat", Layout("flat", 2, False, False, "(batch, units)"),
    "one value per unit: fc, logits, pooled features")


def parse_layer_layouts(text: str) -> dict[str, str]:
    """``"features.7=channels_last,head=flat"`` → ``{"features.7": "channels_last", "head": "flat"}``."""
    declared: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        layer, sep, layout = item.rpartition("=")
        if not sep or not layer.strip():
            raise InvalidInputError(
                f"--layer_layout takes LAYER=LAYOUT pairs separated by commas, not {item!r} "
                f"(layouts: {', '.join(LAYOUTS.names())})."
            )
        LAYOUTS.get(layout.strip())
        declared[layer.strip()] = layout.strip()
    return declared
