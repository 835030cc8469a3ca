"""Recording layer outputs: the one place that hooks a model's layers.

Every consumer of layer outputs (the probe pass, live unit views) goes through
:func:`record_layers`, which registers forward hooks, runs the model in eval
mode, and removes the hooks and restores the model's device and mode afterwards.
Outputs reach the consumer in a canonical form, whatever the layer emits:

=================  =============================  ==============================
layout             the layer emits                handed on as
=================  =============================  ==============================
``channels_first`` (batch, units, height, width)  as is
``channels_last``  (batch, height, width, units)  (batch, units, height, width)
``tokens``         (batch, tokens, units)         as is
``flat``           (batch, units)                 as is
=================  =============================  ==============================

:func:`spatial_maps` gives the per-unit maps of a canonical output, the maps the
probe pass keeps and unit views draw: a ViT layer's patch tokens on their grid.

A layer that returns a tuple or list (``nn.MultiheadAttention`` returns
``(output, attention weights)``; GoogLeNet and Inception return their auxiliary
logits beside the main output in training mode) is recorded by its first
element, the main output.

The layout of a 4-D or 3-D output is never guessed from its sizes: it is read
from what the model is (see :func:`layer_layout`), and where that does not
decide it the run stops with an :class:`InvalidInputError` that says how to
declare it (``DescribeConfig.layer_layout``, CLI ``--layer_layout``).

Pool modes (``catalog.POOL_MODES``) reduce a layer's positions to one value per image
and unit: ``avg``/``max`` over spatial positions or over all tokens; ``cls``
(the first token, ViT's class token) and ``mean`` (the mean over the other
tokens, the patch tokens, as timm's ViT average pooling does) fit token outputs
only. Outputs with one value per unit already (``flat``) are kept as they are
under every pool mode.
"""
from __future__ import annotations

import contextlib
import math
import re
from typing import Callable, Iterator, Mapping, Optional, Sequence

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import Permute

from dissect_core.choices.catalog import POOL_MODES
from dissect_core.common.errors import InvalidInputError
from dissect_core.choices.layouts import CHANNELS_FIRST, CHANNELS_LAST, FLAT, LAYOUTS, TOKENS, Layout
from dissect_core.engine.models import get_layer


# --------------------------------------------------------------------------- pool modes
# The functions that ``catalog.POOL_MODES`` registers: a canonical output (see
# :func:`canonical`) of a layout the mode fits → (batch, units).

def _positions(layout: Layout) -> tuple[int, ...]:
    return (2, 3) if layout.spatial else (1,)


def average_pool(output: torch.Tensor, layout: Layout) -> torch.Tensor:
    return output.mean(dim=_positions(layout))


def max_pool(output: torch.Tensor, layout: Layout) -> torch.Tensor:
    return output.amax(dim=_positions(layout))


def class_token(output: torch.Tensor, layout: Layout) -> torch.Tensor:
    return output[:, 0]


def patch_token_mean(output: torch.Tensor, layout: Layout) -> torch.Tensor:
    return output[:, 1:].mean(dim=1)


def pool(output: torch.Tensor, layout: Layout, pool_mode: str) -> torch.Tensor:
    """(batch, units) from a canonical output of ``layout``."""
    if layout is FLAT:
        return output
    return POOL_MODES.get(pool_mode).value.pool(output, layout)


def check_pool_mode(pool_mode: str, layouts: Mapping[str, Layout]) -> None:
    """Refuse a pool mode that does not fit one of the layers, naming the ones that do."""
    mode = POOL_MODES.get(pool_mode).value
    for layer, layout in layouts.items():
        if layout is not FLAT and layout.name not in mode.fits:
            valid = [entry.name for entry in POOL_MODES if layout.name in entry.value.fits]
            raise InvalidInputError(
                f"pool_mode {pool_mode!r} does not fit layer {layer!r}, whose output is {layout.name} "
                f"{layout.shape}: use one of {', '.join(valid)} for it."
            )


# --------------------------------------------------------------------------- layouts

# torchvision families whose every 4-D output is (batch, channels, height, width):
# checked by running each family's random-weight model and reading every module's output.
_CHANNELS_FIRST_FAMILIES = tuple(
    getattr(torchvision.models, name)
    for name in ("AlexNet", "VGG", "ResNet", "SqueezeNet", "DenseNet", "GoogLeNet", "Inception3",
                 "MNASNet", "MobileNetV2", "MobileNetV3", "EfficientNet", "RegNet", "ShuffleNetV2")
)
# Modules that keep their input's layout: a Sequential ending in one takes the layout of what precedes it.
_ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
                nn.LeakyReLU, nn.ELU, nn.Mish, nn.Dropout, nn.Identity, torchvision.ops.StochasticDepth)
_CHANNELS_FIRST_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm,
                         nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                         torchvision.models.convnext.LayerNorm2d, torchvision.ops.Conv2dNormActivation)
_CONVNEXT_LAST = re.compile(r"features\.\d+\.\d+\.block\.[1-5](\..*)?")  # between CNBlock's two Permutes
_MAXVIT_PARTITIONED = re.compile(r".*\.(window|grid)_attention\.(?!departition_op$).+")


def _by_architecture(model: nn.Module, path: str) -> Optional[Layout]:
    """The layout of a 4-D output at ``path``, for torchvision families that declare it."""
    if isinstance(model, _CHANNELS_FIRST_FAMILIES):
        return CHANNELS_FIRST
    if isinstance(model, torchvision.models.SwinTransformer):  # Swin v1 and v2 (same class)
        in_stages = path == "norm" or path == "features" or path.startswith("features.")
        return CHANNELS_LAST if in_stages else CHANNELS_FIRST
    if isinstance(model, torchvision.models.ConvNeXt):
        return CHANNELS_LAST if _CONVNEXT_LAST.fullmatch(path) else CHANNELS_FIRST
    if isinstance(model, torchvision.models.MaxVit):
        # Inside an attention layer the map is cut into (batch, windows, positions, channels).
        return None if _MAXVIT_PARTITIONED.fullmatch(path) else CHANNELS_FIRST
    if isinstance(model, torchvision.models.VisionTransformer):
        return CHANNELS_FIRST if path.startswith("conv_proj") else None
    return None


def _by_module_type(model: nn.Module, path: str, module: nn.Module) -> Optional[Layout]:
    """The layout of a 4-D output read from the module's type, for any model."""
    if isinstance(module, Permute):
        return {(0, 2, 3, 1): CHANNELS_LAST, (0, 3, 1, 2): CHANNELS_FIRST}.get(tuple(module.dims))
    if type(module) in (nn.Linear, nn.LayerNorm):  # act on the last dimension, so the units are last
        return CHANNELS_LAST
    if isinstance(module, _CHANNELS_FIRST_TYPES):
        return CHANNELS_FIRST
    if isinstance(module, nn.Sequential):  # returns its last child's output
        children = [(name, child) for name, child in module.named_children()]
        while children and isinstance(children[-1][1], _ELEMENTWISE):
            children.pop()
        if children:
            name, child = children[-1]
            return _by_module_type(model, f"{path}.{name}", child)
        return None
    if isinstance(module, _ELEMENTWISE) and "." in path:  # the layout of the sibling before it
        parent_path, name = path.rsplit(".", 1)
        parent = get_layer(model, parent_path)
        if isinstance(parent, nn.Sequential):
            names = [n for n, _ in parent.named_children()]
            for before in reversed(names[:names.index(name)]):
                child = getattr(parent, before)
                if not isinstance(child, _ELEMENTWISE):
                    return _by_module_type(model, f"{parent_path}.{before}", child)
    return None


def layer_layout(model: nn.Module, path: str, shape: Sequence[int], declared: Optional[str] = None) -> Layout:
    """The layout of the output of layer ``path`` of ``model``, of the given ``shape``.

    ``declared`` (a name in ``LAYOUTS``) wins when it fits the number of dimensions.
    Raises ``InvalidInputError`` where the layout cannot be read from the model.
    """
    shape = tuple(shape)
    if declared is not None:
        layout = LAYOUTS.get(declared).value
        if layout.dims != len(shape):
            raise InvalidInputError(
                f"layer_layout declares layer {path!r} as {declared} {layout.shape}, but its output has "
                f"shape {shape}: declare a layout with {len(shape)} dimensions, or none."
            )
        return layout
    module = get_layer(model, path)
    layout = None
    if len(shape) == 2:
        layout = FLAT
    elif len(shape) == 3:
        layout = TOKENS if isinstance(model, torchvision.models.VisionTransformer) else None
    elif len(shape) == 4:
        layout = _by_architecture(model, path) or (
            None if _is_declared_family(model) else _by_module_type(model, path, module))
    if layout is None:
        fitting = [entry.name for entry in LAYOUTS if entry.value.dims == len(shape)]
        how = (f"If you know it, declare it with layer_layout (CLI: --layer_layout {path}="
               f"{fitting[0]}); {' or '.join(f'{n} {LAYOUTS.get(n).value.shape}' for n in fitting)}."
               if fitting else "Choose a layer with 2, 3 or 4 dimensions.")
        raise InvalidInputError(
            f"Cannot tell how the output of layer {path!r} ({type(module).__name__}, shape {shape}) is laid "
            f"out. {how}"
        )
    return layout


def _is_declared_family(model: nn.Module) -> bool:
    """True for torchvision families listed in ``_by_architecture`` (a None there is final)."""
    return isinstance(model, (torchvision.models.MaxVit, torchvision.models.VisionTransformer))


def canonical(output: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The output as listed in the module docstring (channels-last becomes a permuted view)."""
    return output.permute(0, 3, 1, 2) if layout is CHANNELS_LAST else output


def spatial_maps(output: torch.Tensor, layout: Layout) -> Optional[torch.Tensor]:
    """The (batch, units, height, width) maps of a canonical output, or None where it has none.

    Spatial layouts are already in that form (:func:`canonical` permutes channels-last).
    Token outputs give their patch tokens, the class token (the first, as the pool modes
    assume) left out, on a square grid in row-major order, the order in which ViT's patch
    embedding flattens its grid; the result is a view, not a copy. None for flat outputs
    and for patch counts that are not square (e.g. a second leading token such as DeiT's
    distillation token): where the patches lie cannot be told from the count.
    """
    if layout.spatial:
        return output
    if layout is not TOKENS:
        return None
    patches = output[:, 1:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        return None
    return patches.transpose(1, 2).unflatten(2, (side, side))


def main_output(path: str, output) -> torch.Tensor:
    """The tensor a layer's forward returned: itself, or the first element of a tuple or list."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise InvalidInputError(
            f"Layer {path!r} returns {type(output).__name__}, not a tensor (or a tuple starting with one): "
            "choose a layer that outputs a tensor."
        )
    return output


# --------------------------------------------------------------------------- hooks

@contextlib.contextmanager
def _hooked(model: nn.Module, layers: Sequence[str], on_output: Callable[[str, torch.Tensor], None],
            device: Optional[torch.device]) -> Iterator[nn.Module]:
    """Hooks on ``layers`` calling ``on_output(layer, tensor)``; the model in eval mode on
    ``device`` inside, its hooks removed and its device and mode restored on the way out."""
    modules = {layer: get_layer(model, layer) for layer in layers}
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    handles = []
    try:
        for layer, module in modules.items():
            handles.append(module.register_forward_hook(
                lambda m, i, o, layer=layer: on_output(layer, main_output(layer, o).detach())))
        if device is not None:
            model.to(device)
        model.eval()
        yield model
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        if device is not None:
            model.to(home)


@contextlib.contextmanager
def record_layers(
    model: nn.Module,
    layouts: Mapping[str, Layout],
    consume: Callable[[str, torch.Tensor, Layout], None],
    device: Optional[torch.device] = None,
) -> Iterator[nn.Module]:
    """Inside, each forward pass of the yielded model calls ``consume(layer, output, layout)``
    for every layer of ``layouts`` (from :func:`resolve_layouts`), with the output in
    canonical form, during the pass: nothing is kept unless ``consume`` keeps it.

    Run the forward passes under ``torch.inference_mode()``.
    """
    def on_output(layer: str, output: torch.Tensor) -> None:
        layout = layouts[layer]
        if output.dim() != layout.dims:
            raise InvalidInputError(
                f"Layer {layer!r} gave an output of shape {tuple(output.shape)}, not {layout.name} {layout.shape}."
            )
        consume(layer, canonical(output, layout), layout)

    with _hooked(model, list(layouts), on_output, device) as hooked:
        yield hooked


def layer_outputs(model: nn.Module, layouts: Mapping[str, Layout], batch: torch.Tensor,
                  device: Optional[torch.device] = None) -> dict[str, torch.Tensor]:
    """The canonical outputs of ``layouts``' layers for one (small) batch, as float32 on the CPU."""
    outputs: dict[str, torch.Tensor] = {}

    def keep(layer: str, output: torch.Tensor, layout: Layout) -> None:
        outputs[layer] = output.float().cpu()

    with record_layers(model, layouts, keep, device) as hooked, torch.inference_mode():
        hooked(batch.to(device) if device is not None else batch)
    return outputs


def resolve_layouts(
    model: nn.Module,
    layers: Sequence[str],
    sample: torch.Tensor,
    pool_mode: Optional[str],
    declared: Optional[Mapping[str, str]] = None,
) -> dict[str, Layout]:
    """Each layer's layout, read from one forward pass of ``sample`` (a small batch of
    preprocessed images, e.g. one probe image) and the model; checks that ``pool_mode``
    fits every layer (None: no check).

    Raises ``InvalidInputError`` (before any heavy work) for a layout that cannot be
    told, a declaration that does not fit, a pool mode that does not fit, or a layer
    whose output is not one row per image.
    """
    declared = dict(declared or {})
    unknown = sorted(set(declared) - set(layers))
    if unknown:
        raise InvalidInputError(
            f"layer_layout names {', '.join(map(repr, unknown))}, which are not among the target layers "
            f"({', '.join(layers)})."
        )
    if pool_mode is not None:
        POOL_MODES.get(pool_mode)  # an unknown name fails here, listing the valid ones
    if sample.shape[0] < 2:  # two rows tell a per-image output from a batch-independent one
        sample = torch.cat([sample, sample])
    shapes: dict[str, tuple[int, ...]] = {}

    def keep_shape(layer: str, output: torch.Tensor) -> None:
        shapes.setdefault(layer, tuple(output.shape))

    with _hooked(model, layers, keep_shape, None) as hooked, torch.inference_mode():
        hooked(sample)
    layouts = {}
    for layer in layers:
        if layer not in shapes:
            raise InvalidInputError(f"Layer {layer!r} is not used in the model's forward pass: choose another.")
        shape = shapes[layer]
        if not shape or shape[0] != sample.shape[0]:
            raise InvalidInputError(
                f"The output of layer {layer!r} has shape {shape}, which is not one row per image "
                f"(a batch of {sample.shape[0]} gave {shape[0] if shape else 'a scalar'}): choose another layer."
            )
        layouts[layer] = layer_layout(model, layer, shape, declared.get(layer))
    if pool_mode is not None:
        check_pool_mode(pool_mode, layouts)
    return layouts
