"""Target models: the networks whose neurons get described, and their layers.

Three kinds of model load through one strict, ``weights_only`` path:

* named models (``catalog.NAMED_MODELS``), such as ``resnet18_places``: torchvision
  ``resnet18(num_classes=365)`` with the CSAIL Places365 checkpoint
  ``resnet18_places365.pth.tar`` (downloaded into ``weights_dir`` on first use),
  preprocessed like the reference (Resize 256, CenterCrop 224, ImageNet normalisation).
* any torchvision classification model (``resnet18``, ``resnet50``, ``vit_b_16``, …)
  with its ``IMAGENET1K_V1`` weights, as the reference uses, read from the same file
  in torch's hub cache that torchvision itself would download and use.
* a user's own checkpoint for a torchvision architecture; the number of classes is
  read from the checkpoint's final layer.

Every model carries ``weights_id``, the SHA-256 of its weight file, so caches keyed
on it can never return activations of a different checkpoint.
"""
from __future__ import annotations

import difflib
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from dissect_core.engine import small_cnn
from dissect_core.choices.catalog import NAMED_MODELS
from dissect_core.engine.downloads import download_file
from dissect_core.common.files import file_sha256, weight_file_problem
from dissect_core.common.errors import InvalidInputError, MissingResourceError
from dissect_core.common.progress import ProgressFn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Old torchvision DenseNet checkpoints name layers 'norm.1' etc.; torchvision renames
# them on load, and so must we, because we load the file ourselves (weights_only).
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
_AUX_MODELS = ("googlenet", "inception_v3")


@dataclass
class TargetModel:
    """A loaded target network, ready for hooks and forward passes."""

    name: str
    module: nn.Module  # eval mode, on the CPU
    preprocess: Callable[[Image.Image], torch.Tensor]
    weights_id: str  # SHA-256 hex of the weight file
    source: str  # human-readable origin of the weights


def places_preprocess() -> Callable[[Image.Image], torch.Tensor]:
    """The reference's preprocessing for the Places365 ResNet18."""
    return T.Compose(
        [T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def torchvision_model_names() -> list[str]:
    """All torchvision classification model names (detection, video, … excluded)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_target_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    weights_dir: Path | str = "data",
    progress: Optional[ProgressFn] = None,
) -> TargetModel:
    """Load a target model by name, optionally with the user's own ``checkpoint`` file.

    ``name`` is a registered name (``catalog.NAMED_MODELS``, e.g. ``resnet18_places``) or a
    torchvision classification model name. With
    ``checkpoint``, ``name`` gives the architecture and the file the weights: a plain
    state_dict, or a dict holding one under ``state_dict`` or ``model``; a DataParallel
    ``module.`` prefix is removed. Files are read with ``torch.load(weights_only=True)``.
    """
    name = name.strip()
    if name in NAMED_MODELS:
        named = NAMED_MODELS.get(name).value
        if checkpoint is None:
            checkpoint = download_file(
                named.weights_url,
                Path(weights_dir) / named.weights_file,
                what=f"The {name} weights ({named.weights_file})",
                how_to_fix="Or pass a copy stored elsewhere as `target_checkpoint`.",
                progress=progress,
                known_hash=named.weights_hash,
            )
        return _from_checkpoint(name, named.architecture, Path(checkpoint), named.preprocess(),
                                label=f"{name} checkpoint")
    if name == small_cnn.NAME:
        return _small_cnn(checkpoint)
    arch = _check_arch(name)
    if checkpoint is not None:
        return _from_checkpoint(name, arch, Path(checkpoint), _default_preprocess(arch), label=f"{arch} checkpoint")
    return _from_torchvision(arch, progress)


def layer_names(module: nn.Module) -> list[str]:
    """Dotted names of every submodule that can be hooked, in definition order."""
    return [name for name, _ in module.named_modules() if name]


def get_layer(module: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``: ``layer4``, ``layer4.1.conv2``, ``fc``, …

    The reference's indexing form ``layer4[1]`` is accepted as ``layer4.1``.
    """
    dotted = re.sub(r"\[(\d+)\]", r".\1", name.strip())
    found = dict(module.named_modules()).get(dotted) if dotted else None
    if found is None:
        top = [child for child, _ in module.named_children()]
        nested = next((n for n in layer_names(module) if n.count(".") >= 2), None)
        example = f"; nested names such as {nested} also work" if nested else ""
        raise InvalidInputError(
            f"The model has no layer {name!r}. Valid: {', '.join(top)}{example} "
            "(layer_names(model) lists them all)."
        )
    return found


def check_model_name(name: str) -> None:
    """Raise an InvalidInputError, with close matches, unless ``name`` is a target model name."""
    if name.strip() not in NAMED_MODELS and name.strip() != small_cnn.NAME:
        _check_arch(name.strip())


def _check_arch(name: str) -> str:
    names = torchvision_model_names()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names + NAMED_MODELS.names(), n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise InvalidInputError(
        f"Unknown target model {name!r}.{hint} Use {', '.join(NAMED_MODELS.names())} or a torchvision classification "
        f"model such as resnet18, resnet50, vit_b_16 ({len(names)} in all: "
        "torchvision.models.list_models(module=torchvision.models))."
    )


def _imagenet_weights(arch: str):
    """The reference's ``IMAGENET1K_V1`` weights, or the default where no V1 exists (vit_h_14)."""
    enum = torchvision.models.get_model_weights(arch)
    return getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT


def _default_preprocess(arch: str) -> Callable[[Image.Image], torch.Tensor]:
    """For a user's checkpoint: the arch's ImageNet preprocessing (input size, normalisation)."""
    try:
        return _imagenet_weights(arch).transforms()
    except (ValueError, AttributeError):
        return places_preprocess()


def _from_torchvision(arch: str, progress: Optional[ProgressFn]) -> TargetModel:
    weights = _imagenet_weights(arch)
    label = f"{type(weights).__name__}.{weights.name}"
    filename = os.path.basename(urlsplit(weights.url).path)
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    hash_prefix = torch.hub.HASH_REGEX.search(filename)
    download_file(
        weights.url,
        path,
        what=f"The torchvision {label} weights for {arch} ({filename})",
        how_to_fix="This is the file torchvision itself uses, so a copy from another machine's "
        "torch hub cache works too.",
        progress=progress,
        known_hash=f"sha256:{hash_prefix.group(1)}" if hash_prefix else None,
    )
    state = _read_state_dict(path)
    kwargs: dict = {"num_classes": len(weights.meta["categories"])}
    # Mirror the keyword arguments torchvision's builders derive from their weights.
    if arch in _AUX_MODELS:
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    elif arch.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    elif arch.startswith("maxvit"):
        kwargs["input_size"] = weights.meta["min_size"]
    module = torchvision.models.get_model(arch, weights=None, **kwargs)
    _load_strict(module, state, path)
    return TargetModel(
        name=arch,
        module=_finish(module),
        preprocess=weights.transforms(),
        weights_id=file_sha256(path),
        source=f"torchvision {label}",
    )


def _from_checkpoint(
    name: str, arch: str, path: Path, preprocess: Callable[[Image.Image], torch.Tensor], *, label: str
) -> TargetModel:
    if not path.is_file():
        raise MissingResourceError(
            f"The checkpoint {path.name}",
            looked_in=str(path.resolve()),
            how_to_fix=f"Check the checkpoint path (relative paths start at {Path.cwd()}).",
        )
    state = _read_state_dict(path)
    kwargs: dict = {}
    classifier = _classifier_name(arch)
    if classifier and f"{classifier}.weight" in state:
        kwargs["num_classes"] = int(state[f"{classifier}.weight"].shape[0])
    if arch in _AUX_MODELS:
        has_aux = any(k.startswith(("AuxLogits.", "aux1.", "aux2.")) for k in state)
        kwargs.update(aux_logits=has_aux, init_weights=False)
    module = torchvision.models.get_model(arch, weights=None, **kwargs)
    _load_strict(module, state, path)
    classes = kwargs.get("num_classes")
    return TargetModel(
        name=name,
        module=_finish(module),
        preprocess=preprocess,
        weights_id=file_sha256(path),
        source=f"{label} {path.resolve()}" + (f" ({classes} classes)" if classes else ""),
    )


def _small_cnn(checkpoint: str | Path | None) -> TargetModel:
    if checkpoint is None:
        raise InvalidInputError(
            f"{small_cnn.NAME} has no default weights: pass a checkpoint of it (--target_checkpoint). "
            "The built-in demo's are in dissect_core/demo_data/weights/."
        )
    path = Path(checkpoint)
    if not path.is_file():
        raise MissingResourceError(
            f"The checkpoint {path.name}", looked_in=str(path.resolve()),
            how_to_fix=f"Check the checkpoint path (relative paths start at {Path.cwd()}).",
        )
    state = _read_state_dict(path)
    module = small_cnn.from_state_dict(state, str(path))
    _load_strict(module, state, path)
    return TargetModel(
        name=small_cnn.NAME,
        module=_finish(module),
        preprocess=small_cnn.preprocess(),
        weights_id=file_sha256(path),
        source=f"{small_cnn.NAME} checkpoint {path.resolve()} ({module.fc.out_features} classes)",
    )


def _classifier_name(arch: str) -> Optional[str]:
    """Name of the arch's final classification layer: the last one with 1000 outputs."""
    kwargs = {"init_weights": False} if arch in _AUX_MODELS else {}
    try:
        with torch.device("meta"):  # skips weight initialisation; just the structure
            probe = torchvision.models.get_model(arch, **kwargs)
    except (NotImplementedError, RuntimeError):
        probe = torchvision.models.get_model(arch, **kwargs)
    last = None
    for layer_name, layer in probe.named_modules():
        if (isinstance(layer, nn.Linear) and layer.out_features == 1000) or (
            isinstance(layer, nn.Conv2d) and layer.out_channels == 1000
        ):
            last = layer_name
    return last


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely and return its state_dict with any ``module.`` prefix removed."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():
            raise InvalidInputError(
                f"{path} cannot be read with torch.load(weights_only=True): it stores Python "
                "objects besides tensors, and unpickling those can run arbitrary code, so "
                "dissect_core does not do it. Re-save just the weights, e.g. "
                "torch.save(model.state_dict(), 'weights.pth'), and use that file. "
                f"Details: {str(exc).strip().splitlines()[-1]}"
            ) from exc
        raise _not_a_checkpoint(path, exc) from exc
    except Exception as exc:  # the file is untrusted: torch raises many kinds of error on junk
        raise _not_a_checkpoint(path, exc) from exc

    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not (isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise InvalidInputError(
            f"{path} holds no state_dict: expected a dict of tensors, or a dict with one under "
            "'state_dict' or 'model'."
        )
    # Keep keys without the DataParallel prefix too (the reference drops them, quirk Q4).
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    for key in list(state):
        match = _DENSENET_KEY.match(key)
        if match:
            state[match.group(1) + match.group(2)] = state.pop(key)
    return state


def _not_a_checkpoint(path: Path, error: Exception) -> InvalidInputError:
    return InvalidInputError(
        f"The checkpoint cannot be loaded: {weight_file_problem(path, error)}. Give a file saved with "
        "torch.save(model.state_dict(), 'weights.pth') (or a dict holding one under 'state_dict' or 'model')."
    )


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = set(module.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise InvalidInputError(
            f"The checkpoint {path} does not fit the {type(module).__name__} architecture: "
            f"{len(missing)} missing keys (e.g. {', '.join(missing[:5]) or '-'}) and "
            f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:5]) or '-'}). "
            "Check that the model name matches the architecture the checkpoint was trained with."
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        details = "; ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise InvalidInputError(
            f"The checkpoint {path} does not fit the {type(module).__name__} architecture: {details}"
        ) from exc


def _finish(module: nn.Module) -> nn.Module:
    """Eval mode on the CPU; auxiliary heads of GoogLeNet/Inception removed as torchvision does."""
    if hasattr(module, "aux_logits"):
        module.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(module, aux):
                setattr(module, aux, None)
    return module.cpu().eval()


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names in output order, with torchvision's duplicates kept."""
    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
