"""Layer rules: target layers chosen by what they are in the network rather than by name,
so that one sweep spec picks comparable layers in models of different families
(``layer_rule`` in a sweep spec, ``dissect_core.engine.sweep``).

A *stage* is a run of blocks of one kind, one after the other: a ``Sequential``,
``ModuleList`` or ``ModuleDict`` whose children are all of one class and each a *block*
(a module that is not itself a container, with at least three weighted submodules). Where stages nest
(MaxViT's blocks hold stages of layers), the innermost count. So:

=========================  ==========================================  =====================
family                     stages                                      ``stage_ends``
=========================  ==========================================  =====================
ResNet, ResNeXt, Wide      ``layer1`` … ``layer4`` (BasicBlock / Bottleneck)  ``layer4.1`` (resnet18) …
ConvNeXt                   ``features.1/3/5/7`` (CNBlock)              ``features.7.2`` …
Swin (v1, v2)              ``features.1/3/5/7`` (SwinTransformerBlock)  ``features.7.1`` …
ViT                        ``encoder.layers`` (its 12, 24 or 32 blocks) ``encoder.layers.encoder_layer_11``
EfficientNet, RegNet,      ``features.1`` …, ``trunk_output.block1`` …,
DenseNet, MaxViT           ``features.denseblock1`` …, ``blocks.0.layers`` …
=========================  ==========================================  =====================

A plain stack of layers (VGG, AlexNet, SqueezeNet, the demo's small CNN), or blocks that
sit directly beside other modules (MobileNet, Inception/GoogLeNet) has no stages: the
rule then matches nothing, and the sweep says so before any work (name the layers instead).
The output of a stage's last block is the stage's output.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from dissect_core.common.errors import InvalidInputError
from dissect_core.common.registry import Registry

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


# Modules holding weights that a block has at least: a residual block has two convolutions and
# their norms, a transformer block its attention and MLP; a conv + norm pair (Inception's
# BasicConv2d) is a layer, not a block.
_BLOCK_WEIGHTED_MODULES = 3


def _is_block(module: nn.Module) -> bool:
    if isinstance(module, _CONTAINERS):
        return False
    weighted = sum(1 for sub in module.modules() if next(sub.parameters(recurse=False), None) is not None)
    return weighted >= _BLOCK_WEIGHTED_MODULES


def stages(model: nn.Module) -> list[list[str]]:
    """The model's stages in definition order, each as its blocks' module paths."""
    found: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        if not isinstance(module, _CONTAINERS):
            continue
        children = list(module.named_children())
        if children and len({type(child) for _, child in children}) == 1 and _is_block(children[0][1]):
            found[path] = [f"{path}.{name}" if path else name for name, _ in children]
    # Innermost only: a stage holding another stage is a sequence of stages.
    return [blocks for path, blocks in found.items()
            if not any(other.startswith(f"{path}.") for other in found if other != path)]


def stage_ends(model: nn.Module) -> list[str]:
    return [blocks[-1] for blocks in stages(model)]


def all_blocks(model: nn.Module) -> list[str]:
    return [block for blocks in stages(model) for block in blocks]


LAYER_RULES: Registry[Callable[[nn.Module], list[str]]] = Registry("layer rule")
LAYER_RULES.add("stage_ends", stage_ends, "the last block of each stage (ResNet layer1–4, ConvNeXt and Swin "
                "features.1/3/5/7, ViT's last encoder layer)")
LAYER_RULES.add("blocks", all_blocks, "every block of every stage (e.g. each of ViT's encoder layers)")


def resolve_rule(rule: str, model: nn.Module, model_name: str) -> list[str]:
    """The layers ``rule`` picks in ``model``; InvalidInputError when it picks none."""
    layers = LAYER_RULES.get(rule).value(model)
    if not layers:
        raise InvalidInputError(
            f"layer_rule {rule!r} matches no layer of {model_name}: it has no stages (runs of blocks of one "
            "kind, as in ResNet, ConvNeXt, Swin or ViT). Name its layers with target_layers instead.")
    return layers
